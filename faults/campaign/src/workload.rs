//! The clients: read-modify-write on a handful of cells, each a register.
//!
//! Each client repeatedly picks a cell and a node at random, reads the cell (linearizable, the
//! default), and proposes through another random node a change set that read that version
//! and moves `electrical_tilt` by one degree inside the cell's operator box, as the operator
//! (which no coordination rule refuses). Every change set carries a unique token as its
//! reason, so the final history tells which writes landed, including those whose answer was
//! lost. A few cells and several clients make writes collide, so conflicts are exercised as
//! much as applies. The pace is bounded (`rate` cycles a second in total), so that faults,
//! not load, decide what happens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::api::CellState;
use crate::history::{Event, History, Outcome, Request};
use crate::http::{Answer, Http, HttpError};

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct Workload {
    pub cells: Vec<String>,
    /// API address of each slot (slot `i + 1` at index `i`), kept current by the cluster.
    pub addrs: Arc<RwLock<Vec<String>>>,
    pub clients: usize,
    /// Read-modify-write cycles per second, all clients together.
    pub rate: f64,
    /// Reads of random cells after each read-modify-write cycle.
    pub extra_reads: usize,
    pub timeout: Duration,
    pub run: String,
    pub seed: u64,
}

/// One tilt step (0.1 degree units): the most an operator change set may move it.
const STEP: i64 = 10;

/// The tilt after one step from `cell`'s, inside its box.
pub fn next_tilt(cell: &CellState, up: bool) -> i64 {
    let t = cell.electrical_tilt;
    let (lo, hi) = (cell.tilt_box.min, cell.tilt_box.max);
    if (up && t + STEP <= hi) || t - STEP < lo {
        (t + STEP).min(hi)
    } else {
        (t - STEP).max(lo)
    }
}

fn classify_write(cell: &str, answer: Result<Answer, HttpError>) -> Outcome {
    let a = match answer {
        Ok(a) => a,
        Err(HttpError::Connect(e)) => return Outcome::Failed { detail: e },
        Err(e) => {
            return Outcome::Unknown {
                detail: e.to_string(),
            };
        }
    };
    let body = a.json();
    let entity = format!("cell/{cell}");
    match (a.status.as_u16(), body["outcome"].as_str()) {
        (200, Some("applied")) => {
            match (body["index"].as_u64(), body["versions"][&entity].as_u64()) {
                (Some(index), Some(version)) => Outcome::Applied { index, version },
                _ => Outcome::Unknown {
                    detail: format!("applied without index or version: {body}"),
                },
            }
        }
        (409, Some("conflict")) => Outcome::Conflict {
            current: body["current"][&entity].as_u64(),
        },
        (409, Some("rejected")) => Outcome::Rejected {
            reason: body["reason"].as_str().unwrap_or_default().to_string(),
        },
        (422, Some("invalid")) => Outcome::Invalid {
            reason: body["reason"].as_str().unwrap_or_default().to_string(),
        },
        (s, _) if (400..500).contains(&s) && s != 408 => Outcome::Failed {
            detail: format!("{s} {}", a.text()),
        },
        (s, _) => Outcome::Unknown {
            detail: format!("{s} {}", a.text()),
        },
    }
}

fn classify_read(answer: Result<Answer, HttpError>) -> Result<CellState, Outcome> {
    match answer {
        Ok(a) if a.status.is_success() => {
            serde_json::from_slice::<CellState>(&a.body).map_err(|e| Outcome::Failed {
                detail: format!("unreadable cell: {e}"),
            })
        }
        Ok(a) => Err(Outcome::Failed {
            detail: format!("{} {}", a.status.as_u16(), a.text()),
        }),
        Err(HttpError::Connect(e)) => Err(Outcome::Failed { detail: e }),
        Err(e) => Err(Outcome::Unknown {
            detail: e.to_string(),
        }),
    }
}

/// Runs the clients until `stop` is set.
pub async fn run(w: Workload, history: History, http: Http, stop: Arc<AtomicBool>) {
    let tasks: Vec<_> = (0..w.clients)
        .map(|c| {
            let client = Client {
                c,
                rng: StdRng::seed_from_u64(
                    w.seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
                w: w.clone(),
                history: history.clone(),
                http: http.clone(),
                seq: 0,
            };
            let stop = stop.clone();
            tokio::spawn(async move { client.run(stop).await })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// One client: its own seeded choices and write counter.
struct Client {
    c: usize,
    rng: StdRng,
    w: Workload,
    history: History,
    http: Http,
    seq: u64,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        let interval = Duration::from_secs_f64(self.w.clients as f64 / self.w.rate.max(0.01));
        let mut next = tokio::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // Jittered pace, so that clients do not march in step.
            next += interval.mul_f64(self.rng.random_range(0.5..1.5));
            tokio::time::sleep_until(next).await;
            next = next.max(tokio::time::Instant::now());
            let cell = self.cell();
            if let Some(state) = self.read(&cell).await {
                self.write(&cell, state).await;
            }
            // Reads alone, which do not fill the node's history, to catch stale reads.
            for _ in 0..self.w.extra_reads {
                let cell = self.cell();
                self.read(&cell).await;
            }
        }
    }

    fn cell(&mut self) -> String {
        self.w.cells[self.rng.random_range(0..self.w.cells.len())].clone()
    }

    /// A slot position and its API address, at random.
    fn node(&mut self) -> (usize, String) {
        let addrs = self.w.addrs.read().map(|a| a.clone()).unwrap_or_default();
        let slot = self.rng.random_range(0..addrs.len().max(1));
        (slot, addrs.get(slot).cloned().unwrap_or_default())
    }

    /// Reads `cell` (linearizable) from a random node; records the event.
    async fn read(&mut self, cell: &str) -> Option<CellState> {
        let (slot, addr) = self.node();
        let id = self.history.next_id();
        let invoke = self.history.now();
        let path = format!("/image/cells/{cell}");
        let read = classify_read(self.http.get(&addr, &path, self.w.timeout).await);
        let complete = self.history.now();
        let outcome = match &read {
            Ok(s) => Outcome::Read {
                version: s.version,
                value: s.electrical_tilt,
            },
            Err(o) => o.clone(),
        };
        self.history.record(Event {
            id,
            client: self.c,
            cell: cell.to_string(),
            slot: slot + 1,
            addr,
            invoke,
            complete,
            request: Request::Read,
            outcome,
        });
        read.ok()
    }

    /// Proposes, through a random node, one tilt step on `cell` conditional on `state`'s
    /// version; records the event.
    async fn write(&mut self, cell: &str, state: CellState) {
        let value = next_tilt(&state, self.rng.random_bool(0.5));
        self.seq += 1;
        let token = format!(
            "campaign {} client {} write {}",
            self.w.run, self.c, self.seq
        );
        let body = json!({
            "origin": {"function": "operator"},
            "reason": token,
            "read_set": [{"entity": format!("cell/{cell}"), "version": state.version}],
            "writes": [{"entity": format!("cell/{cell}"), "param": "electrical_tilt", "value": value}],
        });
        let (slot, addr) = self.node();
        let id = self.history.next_id();
        let invoke = self.history.now();
        let answer = self
            .http
            .post(&addr, "/image/changesets", &body, self.w.timeout)
            .await;
        let complete = self.history.now();
        self.history.record(Event {
            id,
            client: self.c,
            cell: cell.to_string(),
            slot: slot + 1,
            addr,
            invoke,
            complete,
            request: Request::Write {
                expect: state.version,
                value,
                token,
            },
            outcome: classify_write(cell, answer),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TiltBox;

    fn cell(tilt: i64) -> CellState {
        CellState {
            version: 1,
            electrical_tilt: tilt,
            tilt_box: TiltBox { min: 0, max: 150 },
        }
    }

    #[test]
    fn tilt_steps_stay_inside_the_box() {
        assert_eq!(next_tilt(&cell(40), true), 50);
        assert_eq!(next_tilt(&cell(40), false), 30);
        assert_eq!(next_tilt(&cell(150), true), 140);
        assert_eq!(next_tilt(&cell(0), false), 10);
        assert_eq!(next_tilt(&cell(145), true), 135);
    }
}
