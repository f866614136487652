//! # sonraft: a self-optimizing network controller on a replicated network image
//!
//! One identical `sonraft node` runs at each site of an operator. The nodes keep the network
//! image (sites, cells, neighbour relations) in sled, replicated with Raft
//! ([`sonraft_raft`], [`sonraft_storage`]); this crate is the node around them:
//!
//! - [`config`]: flags, TOML file and environment, in that order of precedence;
//! - [`node`]: the wiring (store, Raft, listeners) read top to bottom in [`node::run`], how
//!   proposals reach the leader ([`node::propose`]), membership and leader hand-over
//!   ([`node::membership`]), and graceful shutdown ([`node::shutdown`]);
//! - [`api`]: the admin HTTP API (axum), one file per group of routes;
//! - [`ctl`]: `sonraft ctl`, the same operations from a terminal;
//! - [`upgrade`]: the health, hand-over and catch-up checks `scripts/rolling-upgrade.sh` runs;
//! - [`antennas`]: sessions with this site's antennas and their raw counters;
//! - [`son`]: the SON functions and their per-period cycle.
//!
//! Its neighbours are crates of their own, each with one job (the graph is in the README's
//! Layout):
//!
//! - [`sonraft_protocol`]: the antenna protocol the sessions speak, and the sockets for many
//!   sessions (listen backlog, open-files limit);
//! - [`sonraft_client`]: the keep-alive JSON client of the admin API, used by forwarding, `ctl`
//!   and the upgrade checks;
//! - `sonraft-sim` and `sonraft-bench`: `sonraft sim` and `sonraft bench`, which the binary runs
//!   and this library never calls;
//! - `sonraft-testkit`: local clusters of real processes for the black-box tests, a
//!   dev-dependency only.
//!
//! A change set flows: `POST /image/changesets` on any node → parsed into a
//! [`sonraft_raft::changeset::ChangeSet`] → forwarded to the leader if needed → wrapped in a
//! log envelope stamped with the leader's clock → committed by Raft (durable on a quorum) →
//! applied by every node's state machine → the outcome returned to the caller.
#![forbid(unsafe_code)]

pub mod antennas;
pub mod api;
pub mod config;
pub mod ctl;
pub mod node;
pub mod son;
pub mod upgrade;

/// This build's release, as advertised to the cluster and shown in `/status`.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");
