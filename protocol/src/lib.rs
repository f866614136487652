//! # sonraft-protocol: the wire between a controller node and its antennas
//!
//! - [`frame`] (its items are re-exported here): the length-prefixed binary frames, their
//!   encoding and decoding, the counter names and the error codes;
//! - [`net`]: sockets for many sessions: a listen backlog sized for reconnect storms and the
//!   open-files limit;
//! - [`pm_xml`]: the same counters as TS 32.435 XML measurement files, the other way operators'
//!   systems deliver them.
//!
//! Both ends speak it: the node's antenna sessions (`sonraft_node::antennas`) and the simulated
//! antennas (`sonraft-sim`). It is a crate of its own so that the simulator is built against the
//! protocol alone and never against the node: the compiler then keeps the two ends from
//! sharing anything but the wire.
#![forbid(unsafe_code)]

pub mod frame;
pub mod net;
pub mod pm_xml;

pub use frame::*;
