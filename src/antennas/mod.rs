//! Antennas: the southbound side of a node.
//!
//! - [`protocol`]: the framed TCP protocol spoken with antennas (documented there);
//! - [`session`]: one async session per antenna: connect, hello, reports, pushes, back-off;
//! - [`fleet`]: the sessions of this node's cells, kept in line with the image;
//! - [`counters`]: raw counters in a local (unreplicated) store, gathered per period.

pub mod counters;
pub mod fleet;
pub mod protocol;
pub mod session;
