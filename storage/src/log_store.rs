//! openraft's log storage on sled.
//!
//! Tree `log`: key = log index as 8 big-endian bytes (so sled's order is the log's order),
//! value = one format byte ([`LOG_ENTRY_FORMAT`]) followed by the bincode entry.
//! Tree `raft`: `vote`, `committed` and `purged` (the last purged log id).
//!
//! An append is acknowledged to openraft only after [`GroupCommit`] has made it durable; a
//! vote is made durable before `save_vote` returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, StorageIOError, Vote};
use sonraft_raft::{Entry, LogId, NodeId, StorageError, TypeConfig, codec};

use crate::durable::{Durability, GroupCommit};
use crate::format::LOG_ENTRY_FORMAT;

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
    pub(crate) fn new(
        db: &sled::Db,
        durability: Arc<Durability>,
        group: GroupCommit,
    ) -> sled::Result<Self> {
        Ok(LogStore {
            log: db.open_tree("log")?,
            raft: db.open_tree("raft")?,
            durability,
            group,
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        name: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let subject = || ErrorSubject::Store;
        let Some(bytes) = self
            .raft
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

    fn write_meta<T: serde::Serialize>(&self, name: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes =
            codec::encode(value).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.raft
            .insert(name, bytes)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let last = self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match last {
            None => Ok(None),
            Some((k, v)) => {
                let entry = decode_entry(&v)
                    .map_err(|e| io_err(ErrorSubject::Log(id_at(&k)), ErrorVerb::Read, e))?;
                Ok(Some(*entry.get_log_id()))
            }
        }
    }

    /// Makes everything written so far durable, off the async runtime.
    async fn sync(&self) -> std::io::Result<()> {
        let d = self.durability.clone();
        tokio::task::spawn_blocking(move || d.sync())
            .await
            .map_err(std::io::Error::other)?
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

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        for item in self.log.range(range_keys(&range)) {
            let (k, v) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let entry = decode_entry(&v)
                .map_err(|e| io_err(ErrorSubject::Log(id_at(&k)), ErrorVerb::Read, e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(PURGED)?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
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
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: after a crash openraft only re-applies less, never wrongly.
        self.write_meta(COMMITTED, &committed)
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
        // disk (strace: five per append instead of one). Atomicity is not needed here: sled
        // recovers a prefix of its log, so a crash mid-append leaves a contiguous log, and the
        // append is acknowledged only after the sync below.
        for entry in entries {
            let id = *entry.get_log_id();
            let bytes = encode_entry(&entry)
                .map_err(|e| io_err(ErrorSubject::Log(id), ErrorVerb::Write, e))?;
            self.log
                .insert(key(id.index), bytes)
                .map_err(|e| io_err(ErrorSubject::Log(id), ErrorVerb::Write, e))?;
        }
        self.group
            .submit(callback)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Removing uncommitted entries need not be synced on its own: the next append's sync
        // covers it, and until then the entries are only re-truncated by the leader.
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(log_id.index)..) {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write_meta(PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=key(log_id.index)) {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }
}
