//! openraft's log storage on sled.
//!
//! Tree `log`: key = log index as 8 big-endian bytes (so sled's order is the log's order),
//! value = one format byte ([`LOG_ENTRY_FORMAT`]) followed by the bincode entry.
//! Tree `raft`: `vote`, `committed` and `purged` (the last purged log id).
//!
//! An append is acknowledged to openraft only after [`GroupCommit`] has made it durable, except
//! a leader's own appends without a membership entry once [`LogStore::report_own_appends_early`]
//! is set: those are reported at once and synced while they replicate, and [`DurableLog`] holds
//! back what a commit may cause until they are on disk (see [`sonraft_raft::durable`]; such a
//! node also never resumes leadership after a restart). A vote is made durable before
//! `save_vote` returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, StorageIOError, Vote};
use sonraft_raft::durable::DurableLog;
use sonraft_raft::{Entry, LogId, NodeId, StorageError, TypeConfig, codec};

use crate::durable::{Durability, GroupCommit, PendingSync};
use crate::format::LOG_ENTRY_FORMAT;
use crate::purge::Purger;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// The Raft log and vote of one node. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    raft: sled::Tree,
    durability: Arc<Durability>,
    group: GroupCommit,
    synced: Arc<DurableLog>,
    /// This node's id, when its own appends as leader may be reported before they are synced.
    early_as: Option<NodeId>,
    /// The vote last saved (read on every append, so kept here rather than in sled).
    vote: Arc<Mutex<Option<Vote<NodeId>>>>,
    /// The first index after the last purged one: entries before it may still be in the tree
    /// (the [`Purger`] removes them in the background) and are never read.
    readable_from: Arc<AtomicU64>,
    purger: Arc<Purger>,
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Encodes an entry as stored: format byte, then bincode.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, codec::CodecError> {
    let body = codec::encode(entry)?;
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(LOG_ENTRY_FORMAT);
    v.extend_from_slice(&body);
    Ok(v)
}

/// Decodes a stored entry, refusing formats this build does not know.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    match bytes.split_first() {
        Some((&LOG_ENTRY_FORMAT, body)) => codec::decode(body).map_err(|e| e.to_string()),
        Some((f, _)) => Err(format!(
            "log entry format {f} is not understood by this build (it reads format {LOG_ENTRY_FORMAT}); run the release that wrote it"
        )),
        None => Err("empty log entry".into()),
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Trees `log` and `raft` of `db`.
    pub(crate) fn trees(db: &sled::Db) -> sled::Result<(sled::Tree, sled::Tree)> {
        Ok((db.open_tree("log")?, db.open_tree("raft")?))
    }

    /// The store over `trees`; `synced` must start at [`last_log_id`] of them.
    pub(crate) fn new(
        (log, raft): (sled::Tree, sled::Tree),
        durability: Arc<Durability>,
        group: GroupCommit,
        synced: Arc<DurableLog>,
    ) -> Result<Self, StorageError> {
        let purged: Option<LogId> = read_meta(&raft, PURGED)?;
        let purger = Purger::start(log.clone())
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(LogStore {
            log,
            raft,
            durability,
            group,
            synced,
            early_as: None,
            vote: Arc::default(),
            readable_from: Arc::new(AtomicU64::new(purged.map_or(0, |p| p.index + 1))),
            purger: Arc::new(purger),
        })
    }

    /// Reports the appends node `me` makes as leader to openraft as soon as they are written,
    /// and syncs them in the background, so that replication does not wait for the leader's
    /// disk. Only safe when the state machine waits on, and the transport caps commits at, this
    /// store's [`DurableLog`] (as `Store` and `HttpNetworkFactory` do).
    pub fn report_own_appends_early(&mut self, me: NodeId) {
        self.early_as = Some(me);
    }

    /// Whether an append now is this node's own, as the leader of a committed vote.
    fn leading(&self) -> bool {
        let Some(me) = self.early_as else {
            return false;
        };
        let vote = self.vote.lock().unwrap_or_else(|p| p.into_inner());
        vote.is_some_and(|v| v.is_committed() && v.leader_id().voted_for() == Some(me))
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        name: &[u8],
    ) -> Result<Option<T>, StorageError> {
        read_meta(&self.raft, name)
    }

    fn write_meta<T: serde::Serialize>(&self, name: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes =
            codec::encode(value).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.raft
            .insert(name, bytes)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    /// Makes everything written so far durable, off the async runtime.
    async fn sync(&self) -> std::io::Result<()> {
        let d = self.durability.clone();
        tokio::task::spawn_blocking(move || d.sync())
            .await
            .map_err(std::io::Error::other)?
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(
    raft: &sled::Tree,
    name: &[u8],
) -> Result<Option<T>, StorageError> {
    let subject = || ErrorSubject::Store;
    let Some(bytes) = raft
        .get(name)
        .map_err(|e| io_err(subject(), ErrorVerb::Read, e))?
    else {
        return Ok(None);
    };
    codec::decode(&bytes).map(Some).map_err(|e| {
        io_err(
            subject(),
            ErrorVerb::Read,
            format!("stored {} is damaged: {e}", String::from_utf8_lossy(name)),
        )
    })
}

/// Finishes a purge a crash interrupted, then removes every entry after the first missing
/// index, counting from the entry after the last purged one.
///
/// A purge syncs the purged id before it removes entries, so a crash may leave entries at or
/// before it: they are removed (they are in the snapshot), never taken for a hole. After a
/// power loss sled may bring back an unsynced tail with holes in it (it counts data as stable
/// after `sync_file_range`, which does not flush the drive's cache); nothing at or after a hole
/// was acknowledged, since every acknowledgement follows an `fdatasync` covering all earlier
/// writes.
pub(crate) fn cut_at_first_hole(log: &sled::Tree, raft: &sled::Tree) -> Result<(), StorageError> {
    let read = |e: sled::Error| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
    for k in log.iter().keys() {
        let k = k.map_err(read)?;
        if k.len() != 8 {
            // Not a key this store writes: damage, not a lost tail; cutting would lose entries.
            return Err(io_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                format!("the log holds a key of {} bytes (log keys have 8)", k.len()),
            ));
        }
    }
    let purged: Option<LogId> = read_meta(raft, PURGED)?;
    if let Some(p) = purged {
        let mut batch = sled::Batch::default();
        let mut left = 0u64;
        for k in log.range(..=key(p.index)).keys() {
            batch.remove(k.map_err(read)?);
            left += 1;
        }
        if left > 0 {
            log.apply_batch(batch)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            tracing::info!(
                purged = p.index,
                removed = left,
                "finished a purge an unclean stop had interrupted"
            );
        }
    }
    let mut expected = purged.map(|p| p.index + 1);
    let mut hole = None;
    for k in log.iter().keys() {
        let index = id_at(&k.map_err(read)?).index;
        if let Some(e) = expected
            && index != e
        {
            hole = Some(e);
            break;
        }
        expected = Some(index + 1);
    }
    let Some(from) = hole else { return Ok(()) };
    let mut batch = sled::Batch::default();
    let mut removed = 0u64;
    for k in log.range(key(from)..).keys() {
        batch.remove(k.map_err(read)?);
        removed += 1;
    }
    log.apply_batch(batch)
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
    tracing::warn!(
        first_missing = from,
        removed,
        "the log had a hole after an unclean stop; removed the unsynced entries after it (none was acknowledged)"
    );
    Ok(())
}

/// Lowers the persisted commit index to the last entry that survived, if it points past it.
///
/// Only what was committed on a majority of disks is persisted as committed (see
/// `save_committed`), so every surviving entry up to it is committed too; but a power loss can
/// take this node's own unsynced tail, and openraft refuses to start with a commit index
/// beyond its log. Returns the commit index as it now stands.
pub(crate) fn lower_committed_to_log(
    log: &sled::Tree,
    raft: &sled::Tree,
) -> Result<Option<LogId>, StorageError> {
    let committed: Option<LogId> = read_meta::<Option<LogId>>(raft, COMMITTED)?.flatten();
    let last = last_log_id(log, raft)?;
    let Some(c) = committed else { return Ok(None) };
    if last.is_some_and(|l| l.index >= c.index) {
        return Ok(committed);
    }
    let bytes =
        codec::encode(&last).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
    raft.insert(COMMITTED, bytes)
        .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
    tracing::warn!(
        committed = %c,
        last_entry = ?last,
        "the persisted commit index pointed past the log that survived an unclean stop; lowered it to the last entry (the leader will tell this node the rest)"
    );
    Ok(last)
}

/// The id of the last entry in the log, or else of the last purged one (also when the log
/// holds only purged entries not yet removed).
pub(crate) fn last_log_id(
    log: &sled::Tree,
    raft: &sled::Tree,
) -> Result<Option<LogId>, StorageError> {
    let purged: Option<LogId> = read_meta(raft, PURGED)?;
    let last = log
        .last()
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
    match last {
        Some((k, _)) if purged.is_some_and(|p| id_at(&k).index <= p.index) => Ok(purged),
        None => Ok(purged),
        Some((k, v)) => {
            let entry = decode_entry(&v)
                .map_err(|e| io_err(ErrorSubject::Log(id_at(&k)), ErrorVerb::Read, e))?;
            Ok(Some(*entry.get_log_id()))
        }
    }
}

fn id_at(k: &[u8]) -> LogId {
    let mut b = [0u8; 8];
    if k.len() == 8 {
        b.copy_from_slice(k);
    }
    LogId::new(
        openraft::CommittedLeaderId::new(0, 0),
        u64::from_be_bytes(b),
    )
}

fn range_keys<RB: RangeBounds<u64>>(range: &RB) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |b: Bound<&u64>| match b {
        Bound::Included(i) => Bound::Included(key(*i)),
        Bound::Excluded(i) => Bound::Excluded(key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

/// Encoded bytes of entries sent to a follower in one append (at least one entry, however
/// large). openraft gives an append one heartbeat interval to be answered (50 ms with
/// loopback timing) and resends it whole when it is not: a batch of up to 512 entries of an
/// import's megabyte parts never was, so the leader resent it for ever and never learned that
/// the follower needed a snapshot.
pub const APPEND_BATCH_BYTES: usize = 1 << 20;

impl LogStore {
    /// The entries in `range`, stopping once `max_bytes` of them are read (at least one).
    /// Purged entries not yet removed are skipped.
    fn entries_up_to<RB: RangeBounds<u64>>(
        &self,
        range: RB,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let (start, end) = range_keys(&range);
        let from = key(self.readable_from.load(Ordering::Acquire));
        let start = match start {
            Bound::Included(k) | Bound::Excluded(k) if k < from => Bound::Included(from),
            Bound::Unbounded => Bound::Included(from),
            other => other,
        };
        for item in self.log.range((start, end)) {
            let (k, v) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if !out.is_empty() && bytes.saturating_add(v.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(v.len());
            let entry = decode_entry(&v)
                .map_err(|e| io_err(ErrorSubject::Log(id_at(&k)), ErrorVerb::Read, e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries_up_to(range, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries_up_to(start..end, APPEND_BATCH_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.read_meta(PURGED)?,
            last_log_id: last_log_id(&self.log, &self.raft)?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote)?;
        self.sync()
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        *self.vote.lock().unwrap_or_else(|p| p.into_inner()) = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let mut vote: Option<Vote<NodeId>> = self.read_meta(VOTE)?;
        if let (Some(me), Some(v)) = (self.early_as, vote.as_mut())
            && v.is_committed()
            && v.leader_id().voted_for() == Some(me)
        {
            // openraft 0.9 resumes a restarted leader in its old term at once. This node may
            // have lost appends it reported before syncing them, which followers hold; new
            // entries of the same term would reuse their log ids and be taken for them. So it
            // starts as a follower: leadership passes on in a higher term, whose entries
            // truncate whatever was lost (it was never applied or answered anywhere).
            v.committed = false;
            tracing::info!(
                term = v.leader_id().term,
                "this node led before it stopped; it rejoins as a follower, and a new term begins"
            );
        }
        *self.vote.lock().unwrap_or_else(|p| p.into_inner()) = vote;
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A leader's openraft commit may count its own append before it is synced; what is
        // persisted obeys the same cap as what followers are told, so that a restart never
        // applies an entry that was not committed on a majority of disks (and nothing at all
        // when the cap says nothing new). Not synced: after a crash openraft only re-applies
        // less, never wrongly, and `Store::open` lowers it to the log that survived.
        match self.synced.cap_commit(committed) {
            Some(safe) => self.write_meta(COMMITTED, &Some(safe)),
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Plain inserts in index order, not a sled batch: sled writes each batch between IO
        // buffers of its own, and each buffer costs a `sync_file_range` that waits for the
        // disk (strace: five per append instead of one). Atomicity is not needed here: after a
        // process crash sled recovers a prefix of its log, and after a power loss `Store::open`
        // cuts an unsynced tail off at its first hole; nothing unsynced was acknowledged.
        let mut last = None;
        let mut membership = false;
        for entry in entries {
            let id = *entry.get_log_id();
            membership |= matches!(entry.payload, openraft::EntryPayload::Membership(_));
            let bytes = encode_entry(&entry)
                .map_err(|e| io_err(ErrorSubject::Log(id), ErrorVerb::Write, e))?;
            let len = bytes.len() as u64;
            self.log
                .insert(key(id.index), bytes)
                .map_err(|e| io_err(ErrorSubject::Log(id), ErrorVerb::Write, e))?;
            self.durability
                .stats
                .appended_bytes
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            last = Some(id);
        }
        let last = last.map(|id| (id, self.synced.appended(id)));
        // A membership entry is reported only once synced: openraft acts on its commit itself
        // (the next membership change may follow at once), not only through the state machine.
        let callback = if !membership && self.leading() {
            // Replication starts now; what the commit may cause waits for the sync below.
            callback.log_io_completed(Ok(()));
            metrics::counter!("sonraft_log_appends_reported_early_total").increment(1);
            None
        } else {
            Some(callback)
        };
        self.group
            .submit(PendingSync { callback, last })
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Synced before anything is appended in place of the removed entries: after a power
        // loss, new entries written over an unsynced removal could come back interleaved with
        // the old ones (no hole to cut at, terms out of order). Truncation is rare (a leader
        // change with uncommitted entries), so the sync costs nothing that matters.
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(log_id.index)..) {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let before = last_log_id(&self.log, &self.raft)?;
        self.synced.truncated(log_id.index, before);
        self.sync()
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purged id is synced before any entry goes: a power loss must never leave a log
        // that starts after an unrecorded gap.
        self.write_meta(PURGED, &log_id)?;
        self.sync()
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // The entries go in the background, a few at a time (see `purge.rs`): in one batch,
        // the ~4,500 parts of a national import (sled files of their own) stalled every log
        // sync for 185-248 ms. Until then they are skipped.
        self.readable_from
            .fetch_max(log_id.index + 1, Ordering::AcqRel);
        self.purger.purge_to(log_id.index);
        Ok(())
    }
}
