//! What the clients did and were told: one event per operation, kept in memory for the checks
//! and appended to `history.jsonl` in the run directory as it happens, so that a run that
//! dies still leaves its history behind.
//!
//! Times are microseconds on the campaign's monotonic clock since the run started: the
//! invoke time is taken before the request is sent, the completion time after the whole
//! answer arrived, so an operation's real effect lies inside its interval.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::linearizability::Micros;

/// What a client asked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Read,
    /// A change set reading `cell@expect` and writing `electrical_tilt = value`, with `token`
    /// as its reason.
    Write {
        expect: u64,
        value: i64,
        token: String,
    },
}

/// What it was told.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Read {
        version: u64,
        value: i64,
    },
    Applied {
        index: u64,
        version: u64,
    },
    Conflict {
        current: Option<u64>,
    },
    Rejected {
        reason: String,
    },
    Invalid {
        reason: String,
    },
    /// Certainly not executed: the connection was refused, or the node refused the request
    /// before proposing it (a 4xx that is not an outcome).
    Failed {
        detail: String,
    },
    /// The answer was lost (timeout, reset, 5xx): it may or may not have taken effect.
    Unknown {
        detail: String,
    },
}

impl Outcome {
    /// A short label for counting.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Read { .. } => "read",
            Outcome::Applied { .. } => "applied",
            Outcome::Conflict { .. } => "conflict",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Failed { .. } => "failed",
            Outcome::Unknown { .. } => "unknown",
        }
    }
}

/// One operation of one client on one cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub client: usize,
    pub cell: String,
    /// The site slot whose node was asked, and that node's API address.
    pub slot: usize,
    pub addr: String,
    pub invoke: Micros,
    pub complete: Micros,
    pub request: Request,
    pub outcome: Outcome,
}

struct Inner {
    events: Vec<Event>,
    file: Option<std::fs::File>,
    next_id: u64,
}

/// The shared, append-only history of a run.
#[derive(Clone)]
pub struct History {
    epoch: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl History {
    /// A history whose clock starts now, written to `file` as JSON lines.
    pub fn new(file: &Path) -> std::io::Result<History> {
        Ok(History {
            epoch: Instant::now(),
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                file: Some(std::fs::File::create(file)?),
                next_id: 1,
            })),
        })
    }

    /// Microseconds since the run started.
    pub fn now(&self) -> Micros {
        self.epoch.elapsed().as_micros() as Micros
    }

    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = inner.next_id;
        inner.next_id += 1;
        id
    }

    /// Appends a completed event.
    pub fn record(&self, event: Event) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(f), Ok(line)) = (inner.file.as_mut(), serde_json::to_string(&event)) {
            let _ = writeln!(f, "{line}");
        }
        inner.events.push(event);
    }

    /// Every event so far, in completion order.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .clone()
    }
}

/// Reads a `history.jsonl` back (for `sonraft-campaign check`).
pub fn load(file: &Path) -> std::io::Result<Vec<Event>> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}
