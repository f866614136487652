//! # sonraft-model: what a sonraft cluster agrees on
//!
//! A sonraft cluster replicates one **network image** (sites, cells, neighbour relations and
//! their configuration) with Raft. This crate is that image and the rules that change it:
//!
//! - [`model`]: the image's data types, the legal range of every parameter, and
//!   [`model::image::NetworkImage`], which applies commands deterministically;
//! - [`changeset`]: the optimistic transaction ([`changeset::ChangeSet`]) and its
//!   [`changeset::Outcome`];
//! - [`rules`]: the pure validation rules a change set must pass when it is applied (read-set
//!   versions, legal values, per-step limits, coordination between SON functions);
//! - [`command`]: the log entry's data, a versioned [`command::Envelope`] around a
//!   [`command::Command`], and the [`command::Response`] applying it answers;
//! - [`son`]: the operator's controls of the SON functions (mode, exclusions, change windows)
//!   and the open-loop proposals waiting for an operator;
//! - [`codec`]: the bounded bincode encoding used on disk and on the wire.
//!
//! Every node applies the same committed entries and must reach the same image and the same
//! responses, so applying is a pure function of the image and the entry: it reads the log time
//! carried in the entry, never a clock. That is why this crate depends on no async runtime, no
//! network and no Raft library (`sonraft-raft` carries the entries; `sonraft-storage` keeps the
//! image on disk): the compiler keeps I/O out of what every node must compute identically.
//! `std`'s clock and files stay within reach; the model uses neither (the codec reads and
//! writes through a reader or writer its caller opens).
#![forbid(unsafe_code)]

pub mod changeset;
pub mod codec;
pub mod command;
pub mod model;
pub mod rules;
pub mod son;
pub mod trials;
