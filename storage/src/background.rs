//! Work that takes seconds of CPU and that no write or operator waits for — building a
//! snapshot — runs on a thread of its own at the lowest CPU priority. (A backup, which an
//! operator waits for, ran here too until a backup right after a national import took 80-88 s
//! beside the checkpoint writers; it runs at the node's priority now.)
//!
//! A national image's snapshot takes ~10 s of a core to encode. When the count of entries falls
//! due on all three nodes at the same index, each builds one at once; beside them the runtimes
//! that answer appends and heartbeats waited for the CPU, and on two cores a change set's p99
//! grew 7x while they ran (`sonraft bench scale`: 52.3 ms against 7.3 ms). At nice 19 (as
//! RocksDB runs its compactions) it was still 4x (18 ms against 4.1 ms): the scheduler lets
//! a running thread finish its slice before a woken one of higher priority takes the core, and
//! a change set wakes a thread on every node several times. Under `SCHED_IDLE` any runnable
//! thread of the normal policy takes the core at once; the idle one still gets a small share
//! when they all want it, so a snapshot finishes under any load.

use std::io;

use thread_priority::unix::{
    NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
    thread_native_id,
};

/// The scheduling of a background thread.
const BACKGROUND: ThreadSchedulePolicy =
    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);

/// Runs `f` on a new thread named `name` under [`BACKGROUND`] and returns its result
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
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_this_thread();
            let _ = tx.send(f());
        })?;
    // A panic in `f` drops the sender unanswered.
    rx.await
        .map_err(|_| io::Error::other("the background thread ended without an answer"))
}

/// Puts the calling thread (not the process) under [`BACKGROUND`].
fn lower_this_thread() {
    let lowered = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        BACKGROUND,
    );
    if let Err(e) = lowered {
        tracing::warn!(error = ?e, "a background thread runs at the node's own priority");
    }
}

/// The calling thread's scheduling policy.
#[cfg(test)]
fn policy_of_this_thread() -> ThreadSchedulePolicy {
    thread_priority::unix::thread_schedule_policy().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_work_runs_at_the_lowest_priority_and_leaves_the_caller_as_it_was() {
        let before = policy_of_this_thread();
        let (policy, name) = run("sonraft-test-bg", || {
            (
                policy_of_this_thread(),
                std::thread::current().name().map(str::to_string),
            )
        })
        .await
        .unwrap();
        assert_eq!(policy, BACKGROUND);
        assert_eq!(name.as_deref(), Some("sonraft-test-bg"));
        assert_eq!(policy_of_this_thread(), before);
        assert_ne!(before, BACKGROUND);
    }

    #[tokio::test]
    async fn a_panic_in_background_work_is_an_error_not_a_hang() {
        let r = run("sonraft-test-bg", || -> u32 { panic!("damaged") }).await;
        assert!(r.is_err());
    }
}
