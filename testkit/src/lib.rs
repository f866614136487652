//! # sonraft-testkit: what the black-box tests and the benchmarks run against
//!
//! - [`local_cluster`]: real `sonraft node` and `sonraft sim` processes on loopback, started,
//!   stopped, killed and restarted, with the fixed [`local_cluster::TOKEN`] and
//!   [`local_cluster::SECRET`] they share;
//! - [`fixtures`]: small images and change sets as the admin API takes them;
//! - [`netns`]: one network namespace per site on a bridge, and cuts between them, for the
//!   tests that need a real partition;
//! - [`wan`]: a user-space WAN link (a delaying TCP proxy: delay, jitter, loss as TCP resends
//!   it), since `tc netem` is not available where this runs;
//! - [`wan_cluster`]: a local cluster whose nodes talk Raft only across such links.
//!
//! It is `publish = false` and never a dependency of the node: its secrets are public, and a
//! node must not be able to start a cluster of itself. It knows the node only as a binary and
//! an admin API ([`sonraft_client`]), as an operator does.
#![forbid(unsafe_code)]

pub mod fixtures;
pub mod local_cluster;
pub mod netns;
pub mod wan;
pub mod wan_cluster;
