//! How far this node's Raft log is on disk, for those who must not act on less.
//!
//! openraft 0.9 waits for a log append to be reported durable before its core does anything
//! else, so a leader that reported its own appends only after `fsync` would replicate each
//! entry only after its own disk write: two disk writes in a row (leader, then follower) on
//! every commit. A leader therefore reports its own appends at once and syncs them while the
//! entries travel to the followers (as the Raft thesis, §10.2.1, allows). openraft then counts
//! the leader toward commit before its copy is durable, so the *effects* of a commit are held
//! back until it is:
//!
//! - the state machine applies an entry only once it is synced locally
//!   ([`DurableLog::wait_synced`]), so no client is answered and no read sees a change set
//!   before every member of the quorum that committed it has it on disk (followers report
//!   appends only after their own sync);
//! - AppendEntries never tell a follower a commit index beyond the leader's synced log, nor one
//!   whose entry is of an earlier term than the leader's while the leader's own entry is not
//!   synced yet ([`DurableLog::cap_commit`]; the Raft paper's Figure 8), so no follower applies
//!   an entry that is not yet committed on a majority of disks; the leader persists its commit
//!   index under the same cap, so that a restart never applies one either.
//!
//! If the leader crashes before its sync, the entry was applied nowhere and answered to no one.
//! Two more rules keep such an entry from being mistaken for a committed one (the log store
//! applies them):
//!
//! - openraft 0.9 resumes a restarted leader in its old term at once, and new entries of that
//!   term would reuse the log ids of the entries it lost but its followers hold. A node that
//!   reports its appends early therefore never resumes: it reads its own committed vote back as
//!   uncommitted and rejoins as a follower, so leadership passes on in a higher term, whose
//!   entries truncate the lost ones wherever they remain;
//! - a membership entry is reported only once synced, because openraft acts on a membership
//!   commit itself (the next configuration change may follow at once), not only through the
//!   state machine.

use std::sync::Arc;

use tokio::sync::watch;

use crate::LogId;

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Index of the last entry written to the store (synced or not); 0 for none.
    appended: u64,
    /// The last entry known to be on disk.
    synced: Option<LogId>,
    /// Bumped by every truncation: a sync that began before it says nothing about the log
    /// after it (the entries it covered may be gone).
    epoch: u64,
    /// Set when a sync failed: nothing more will be synced.
    failed: Option<Arc<str>>,
}

/// The appended and synced ends of one node's log. Shared by the log store (which advances
/// them), the state machine (which waits on them) and the transport (which caps commits).
#[derive(Debug)]
pub struct DurableLog {
    progress: watch::Sender<Progress>,
}

/// A sync failed; the node must stop (nothing after it will become durable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the Raft log could not be synced to disk: {0}")]
pub struct SyncFailed(pub Arc<str>);

impl DurableLog {
    /// A log whose entries up to `last` are on disk (what a store found when it opened).
    pub fn new(last: Option<LogId>) -> Self {
        let progress = Progress {
            appended: last.map_or(0, |l| l.index),
            synced: last,
            epoch: 0,
            failed: None,
        };
        DurableLog {
            progress: watch::channel(progress).0,
        }
    }

    /// Entries up to `last` were written to the store (not yet synced). Returns the epoch to
    /// hand to [`DurableLog::synced`] once a sync that began after this call completes.
    pub fn appended(&self, last: LogId) -> u64 {
        let mut epoch = 0;
        self.progress.send_modify(|p| {
            p.appended = last.index;
            epoch = p.epoch;
        });
        epoch
    }

    /// Everything appended up to `last` (in `epoch`) is on disk. Ignored if the log was
    /// truncated since.
    pub fn synced(&self, last: LogId, epoch: u64) {
        self.progress.send_if_modified(|p| {
            if p.epoch == epoch && p.synced.is_none_or(|s| s.index < last.index) {
                p.synced = Some(last);
                true
            } else {
                false
            }
        });
    }

    /// Entries from index `from` on were removed; `before` is the entry now last (if any).
    pub fn truncated(&self, from: u64, before: Option<LogId>) {
        self.progress.send_modify(|p| {
            p.epoch += 1;
            p.appended = p.appended.min(from.saturating_sub(1));
            if p.synced.is_some_and(|s| s.index >= from) {
                p.synced = before;
            }
        });
    }

    /// A sync failed: waiters get the error from now on.
    pub fn failed(&self, reason: &str) {
        self.progress
            .send_modify(|p| p.failed = Some(Arc::from(reason)));
    }

    /// The last entry known to be on disk.
    pub fn synced_log_id(&self) -> Option<LogId> {
        self.progress.borrow().synced
    }

    /// What a leader whose openraft commit index is `commit` may tell followers is committed
    /// (and may persist as committed): `None` means "nothing new" (openraft never lowers a
    /// commit index it was told).
    ///
    /// openraft commits an entry of the leader's term once a majority *including the leader's
    /// early report* has it. Followers report only after their sync, so every member of that
    /// majority has the leader's synced prefix on disk, and `commit` itself once the leader
    /// has synced it. Below `commit`, the synced end `s` is on a majority's disks, but Raft
    /// commits an entry through a majority only if it is of the leader's term (the Raft
    /// paper's Figure 8): an earlier term's entry may still be overwritten by a leader that
    /// never saw it. So `s` counts only if it is of `commit`'s term; otherwise nothing does
    /// until the leader's own entry is synced.
    pub fn cap_commit(&self, commit: Option<LogId>) -> Option<LogId> {
        let synced = self.synced_log_id();
        match (commit, synced) {
            (Some(c), Some(s)) if s.index < c.index => (s.leader_id == c.leader_id).then_some(s),
            (Some(_), None) => None,
            (c, _) => c,
        }
    }

    /// Returns once every entry up to `index` that was appended to this store is on disk
    /// (entries never appended here, e.g. applied directly by a test, are not waited for).
    pub async fn wait_synced(&self, index: u64) -> Result<(), SyncFailed> {
        let mut rx = self.progress.subscribe();
        let ready = rx
            .wait_for(|p| {
                p.failed.is_some() || p.synced.map_or(0, |s| s.index) >= index.min(p.appended)
            })
            .await;
        match ready {
            Ok(p) => match &p.failed {
                Some(reason) => Err(SyncFailed(reason.clone())),
                None => Ok(()),
            },
            Err(_) => Err(SyncFailed(Arc::from("the log store was closed"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn commits_told_to_followers_never_pass_the_synced_end() {
        let d = DurableLog::new(Some(id(1, 3)));
        let epoch = d.appended(id(1, 5));
        assert_eq!(d.cap_commit(Some(id(1, 5))), Some(id(1, 3)));
        assert_eq!(d.cap_commit(Some(id(1, 2))), Some(id(1, 2)));
        assert_eq!(d.cap_commit(None), None);
        d.synced(id(1, 5), epoch);
        assert_eq!(d.cap_commit(Some(id(1, 5))), Some(id(1, 5)));
        assert_eq!(DurableLog::new(None).cap_commit(Some(id(1, 1))), None);
    }

    /// Raft's Figure 8: B synced E = (1,7) as a follower, won term 2 and appended its blank
    /// (2,8); openraft committed (2,8) counting B's own append before it is on B's disk. (1,7)
    /// is committed only through (2,8), and (2,8) is on a majority's disks only once B synced
    /// it: until then no follower may hear that (1,7) is committed (a power cut of B would let
    /// another node win with a different entry at 7).
    #[test]
    fn an_entry_of_an_earlier_term_is_not_told_committed_before_the_leaders_term_is_synced() {
        let d = DurableLog::new(Some(id(1, 7)));
        let epoch = d.appended(id(2, 8));
        assert_eq!(d.cap_commit(Some(id(2, 8))), None);
        d.synced(id(2, 8), epoch);
        assert_eq!(d.cap_commit(Some(id(2, 8))), Some(id(2, 8)));
    }

    #[test]
    fn truncation_moves_the_synced_end_back_to_a_surviving_entry() {
        let d = DurableLog::new(Some(id(1, 10)));
        let before = d.appended(id(1, 12));
        d.truncated(8, Some(id(1, 7)));
        assert_eq!(d.synced_log_id(), Some(id(1, 7)));
        d.synced(id(1, 12), before);
        assert_eq!(
            d.synced_log_id(),
            Some(id(1, 7)),
            "a sync of entries since truncated does not count"
        );
        let after = d.appended(id(2, 8));
        assert_eq!(
            d.cap_commit(Some(id(2, 8))),
            None,
            "(1,7) is of an earlier term: committed only through (2,8) once synced"
        );
        d.synced(id(2, 8), after);
        assert_eq!(d.cap_commit(Some(id(2, 8))), Some(id(2, 8)));
        d.truncated(20, Some(id(2, 19)));
        assert_eq!(
            d.synced_log_id(),
            Some(id(2, 8)),
            "nothing synced was removed"
        );
    }

    #[tokio::test]
    async fn applying_waits_for_appended_entries_to_be_synced() {
        let d = Arc::new(DurableLog::new(None));
        assert!(
            d.wait_synced(7).await.is_ok(),
            "entries never appended here are not waited for"
        );
        let epoch = d.appended(id(1, 7));
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait_synced(7).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "entry 7 is not on disk yet");
        d.synced(id(1, 7), epoch);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_failed_sync_fails_the_waiters() {
        let d = DurableLog::new(None);
        d.appended(id(1, 2));
        d.failed("disk gone");
        assert!(
            d.wait_synced(2)
                .await
                .unwrap_err()
                .to_string()
                .contains("disk gone")
        );
    }
}
