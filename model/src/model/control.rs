//! Which node controls each cell site's antennas, and the epoch that fences it (issue 14).
//!
//! A cell site (a base station: the cells on one mast) is controlled by the node of one
//! sonraft site: that node holds the antenna sessions, reads the counters, runs the SON
//! functions for the cells and pushes their configuration. By default it is the node of the
//! cell site's `region` (its home) at epoch 0. Control moves only through a log entry
//! ([`crate::command::Command::Control`], command format 8), judged when it applies like a
//! change set: a move names the controller and epoch it saw, and is refused when either
//! changed since (optimistic concurrency: two leaders' moves, or a move computed from a stale
//! view, cannot both win). The new epoch is the log index of the entry that moved control, so
//! epochs only grow, never repeat, and every node computes the same one. Antennas refuse a
//! controller whose epoch is older than the newest they have seen (the fence).

use serde::{Deserialize, Serialize};

use super::SiteId;
use super::valid_id;

/// Most moves one `Control` command may carry.
pub const MAX_MOVES: usize = 100_000;
/// Longest reason of a `Control` command, in bytes.
pub const MAX_REASON: usize = 200;

/// Who controls a cell site's antennas, when control left its home.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Control {
    /// The sonraft site (a node's `--site`) whose node holds the sessions.
    pub site: String,
    /// The log index of the move that gave it control: antennas refuse older epochs.
    pub epoch: u64,
    /// The log time of that move.
    pub since_ms: u64,
}

/// Moves control of cell sites from one sonraft site to another (command format 8).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ControlMoves {
    pub moves: Vec<ControlMove>,
    /// Why, for the logs and the operator (e.g. "site-2 unheard for 30 s").
    pub reason: String,
}

/// One cell site's move, judged on its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ControlMove {
    pub cell_site: SiteId,
    /// The controller the proposer saw.
    pub from: String,
    /// The epoch the proposer saw.
    pub epoch: u64,
    /// The sonraft site that takes control.
    pub to: String,
}

/// Why a `Control` command as a whole is malformed (each move is judged apart).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("a control command moves at most {MAX_MOVES} cell sites, this one {0}")]
    TooMany(usize),
    #[error("a control command's reason is at most {MAX_REASON} bytes")]
    ReasonTooLong,
    #[error("{0:?} is not a valid sonraft site name")]
    BadSite(String),
}

impl ControlMoves {
    /// Checks the command's shape before it is proposed (and again when it applies).
    pub fn validate(&self) -> Result<(), ControlError> {
        if self.moves.len() > MAX_MOVES {
            return Err(ControlError::TooMany(self.moves.len()));
        }
        if self.reason.len() > MAX_REASON {
            return Err(ControlError::ReasonTooLong);
        }
        if let Some(m) = self.moves.iter().find(|m| !valid_id(&m.to)) {
            return Err(ControlError::BadSite(m.to.clone()));
        }
        Ok(())
    }
}
