//! Antennas: the southbound side of a node.
//!
//! - the framed TCP protocol spoken with antennas is its own crate, [`sonraft_protocol`], so
//!   that the simulator can speak it without the node;
//! - [`session`]: one async session per antenna: connect, hello, reports, pushes, back-off;
//! - [`fleet`]: the sessions of this node's cells, kept in line with the image;
//! - [`awaiting`]: the SON change sets whose pushes are not all acknowledged yet;
//! - [`counters`]: raw counters gathered per period and kept in a local (unreplicated) store;
//! - [`pm_dir`]: the same counters read from TS 32.435 PM files instead (`--pm-dir`);
//! - [`period_files`]: that store on disk, one file per period, bounded by retention and a cap.

pub mod awaiting;
pub mod counters;
pub mod fleet;
pub mod period_files;
pub mod pm_dir;
pub mod session;
