//! Work that takes seconds of CPU and that no write waits for — building a snapshot, encoding a
//! backup — runs on a thread of its own at a lower CPU priority.
//!
//! A national image's snapshot takes ~10 s of a core to encode. When the count of entries falls
//! due on all three nodes at the same index, each builds one at once; beside them the runtimes
//! that answer appends and heartbeats waited for the CPU, and on two cores a change set's p99
//! grew 5–10x while they ran. At nice 19 (as RocksDB runs its compactions) the scheduler gives
//! such a thread the core only when no thread of the node's own priority wants it, and still
//! some of it when they all do, so the snapshot finishes under any load.

use std::io;

/// Nice value of a background thread: the lowest priority of the normal policy.
pub const BACKGROUND_NICE: i32 = 19;

/// Runs `f` on a new thread named `name` at nice [`BACKGROUND_NICE`] and returns its result
/// when it ends. A thread of its own, not one of the blocking pool's: an unprivileged thread
/// cannot raise its priority again, and the pool's next task would inherit it.
///
/// A thread whose priority cannot be lowered (a system that refuses it) runs `f` all the same,
/// at the priority it has, with a warning: the work must get done.
pub async fn run<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(name, move || {
        let _ = tx.send(f());
    })?;
    // A panic in `f` drops the sender unanswered.
    rx.await
        .map_err(|_| io::Error::other("the background thread ended without an answer"))
}

/// Starts `f` on a new thread named `name` at nice [`BACKGROUND_NICE`], not waiting for it.
pub fn spawn<F>(name: &str, f: F) -> io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_this_thread();
            f()
        })
        .map(drop)
}

/// Lowers the calling thread (not the process: on Linux a thread id names one thread) to nice
/// [`BACKGROUND_NICE`].
fn lower_this_thread() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
        tracing::warn!(error = %e, "a background thread runs at the node's own priority");
    }
}

/// The calling thread's nice value.
#[cfg(test)]
fn nice_of_this_thread() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_work_runs_at_the_lowest_priority_and_leaves_the_caller_as_it_was() {
        let before = nice_of_this_thread();
        let (nice, name) = run("sonraft-test-bg", || {
            (
                nice_of_this_thread(),
                std::thread::current().name().map(str::to_string),
            )
        })
        .await
        .unwrap();
        assert_eq!(nice, BACKGROUND_NICE);
        assert_eq!(name.as_deref(), Some("sonraft-test-bg"));
        assert_eq!(nice_of_this_thread(), before);
    }

    #[tokio::test]
    async fn a_panic_in_background_work_is_an_error_not_a_hang() {
        let r = run("sonraft-test-bg", || -> u32 { panic!("damaged") }).await;
        assert!(r.is_err());
    }
}
