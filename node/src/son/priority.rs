//! The SON analysis runs ahead of bulk work on a busy machine.
//!
//! At 100,000 cells one analysis needs about 0.7 s of CPU, and on two cores shared with the
//! counter ingest of 16,667 base-station sessions (and, in the fleet benchmark, the simulator)
//! it waited as long again on the run queue, so a period's changes reached the antennas
//! seconds late while the counters, which only fill socket buffers meanwhile, went first. The
//! analysing thread (and the helper threads it starts, which inherit it) therefore runs at a
//! lower nice value than the rest of the node for the analysis only, and goes back to the
//! node's own before its thread returns to the shared pool.
//!
//! Lowering a nice value needs `CAP_SYS_NICE` or a nice limit (`RLIMIT_NICE`; systemd
//! `LimitNICE=`, which the installed unit sets). Without either the analysis runs at the
//! node's priority, as before, and the node says so once.

use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{Pid, getpriority_process, setpriority_process};
use rustix::thread::gettid;

/// Nice value of the analysing thread, relative to the node's (CFS gives it about nine times
/// the CPU share of a thread at the node's own while both are runnable).
pub const RAISE_BY: i32 = 10;

/// Raised priority for the calling thread until dropped.
pub struct Raised {
    /// The thread and the nice value to go back to; none when nothing changed.
    restore: Option<(Pid, i32)>,
}

static REFUSED: AtomicBool = AtomicBool::new(false);

impl Raised {
    /// Lowers the calling thread's nice value by [`RAISE_BY`], if the node may. (On Linux
    /// `setpriority(PRIO_PROCESS, tid)` sets one thread's nice value.)
    pub fn now() -> Raised {
        let tid = gettid();
        let Ok(was) = getpriority_process(Some(tid)) else {
            return Raised { restore: None };
        };
        let wanted = (was - RAISE_BY).max(-20);
        if let Err(e) = setpriority_process(Some(tid), wanted) {
            if !REFUSED.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    error = %e,
                    "the SON analysis runs at the node's own priority: allow a lower nice value (systemd LimitNICE=-{RAISE_BY}, or CAP_SYS_NICE) to run it ahead of counter ingest"
                );
            }
            return Raised { restore: None };
        }
        Raised {
            restore: Some((tid, was)),
        }
    }

    /// Whether the priority was raised.
    pub fn raised(&self) -> bool {
        self.restore.is_some()
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Some((tid, was)) = self.restore {
            // Raising a nice value back is always allowed.
            let _ = setpriority_process(Some(tid), was);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        getpriority_process(Some(gettid())).expect("getpriority")
    }

    #[test]
    fn the_priority_is_raised_for_the_analysis_and_restored_after() {
        std::thread::spawn(|| {
            let before = nice();
            {
                let r = Raised::now();
                if r.raised() {
                    assert_eq!(nice(), (before - RAISE_BY).max(-20));
                    // A helper thread started now inherits it.
                    let inner = std::thread::spawn(nice).join().unwrap();
                    assert_eq!(inner, (before - RAISE_BY).max(-20));
                } else {
                    assert_eq!(nice(), before, "unchanged when refused");
                }
            }
            assert_eq!(nice(), before);
        })
        .join()
        .unwrap();
    }
}
