//! Antennas: the southbound side of a node.
//!
//! - [`protocol`]: the framed TCP protocol spoken with antennas.

pub mod protocol;
