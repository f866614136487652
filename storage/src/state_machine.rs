//! openraft's state machine: the network image in memory for reads and rule checks, persisted
//! in sled tree `sm` for restarts.
//!
//! Keys of tree `sm` (ids never contain `/`):
//!
//! ```text
//! m/applied  m/membership  m/clock  m/policy  m/releases      state-machine metadata
//! m/staged/<part as 4 big-endian bytes>                       an import waiting for its last part, one
//!                                                              value per part (data format 10; format 3
//!                                                              to 9 kept it whole in `m/staged`)
//! m/son                                                        SON policy, next pending id, holds
//! m/tuning                                                     the SON functions' thresholds up to PCI
//! m/tuning/availability                                        outage, compensation and energy-saving
//!                                                              thresholds (data format 9; absent while
//!                                                              at their defaults)
//! p/<id>   t/<index>   j/<index>   (8 big-endian bytes)        pending proposals, open trials,
//!                                                              closed trials (the journal)
//! s/<site>   c/<cell>   r/<source>/<target>   k/<cell>         the image
//! o/<cell site>                                                who controls its antennas, when moved
//! g/<index as 8 big-endian bytes>                              history, one value per entry
//! ```
//!
//! (see [`crate::history`]).
//!
//! Each `apply` call hands everything its entries changed, the last-applied id and the
//! membership to the checkpoint writer ([`crate::sm_writer`]), which lands them in sled behind
//! the apply path, consistently. Nothing is synced for it: the log is durable, and after a
//! crash openraft re-applies the committed entries past the checkpointed last-applied id.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, TryLockError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError,
};
use serde::Serialize;
use sonraft_raft::command::Response;
use sonraft_raft::durable::DurableLog;
use sonraft_raft::model::image::{Changes, HistoryRecord, NetworkImage};
use sonraft_raft::model::import::{StagedImport, StagedPart};
use sonraft_raft::model::{CellId, CowMap, CowMapBuilder, Relation, RelationKey};
use sonraft_raft::son::{AvailabilityTuning, SonItem, SonState, Tuning, TuningV1};
use sonraft_raft::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig, codec};

use crate::durable::Durability;
use crate::error::Damaged;
use crate::history::{self, HeldHistory};

/// The tuning's sections of command format 9, apart from `m/tuning` so that the values of
/// older directories keep decoding as they are.
const TUNING_AVAILABILITY: &[u8] = b"m/tuning/availability";
use crate::sm_writer::{self, Ops, SmWriter, TORN};
use crate::snapshot::{SnapshotBody, SnapshotDir};

/// The applied state: what reads and SON functions see.
#[derive(Debug, Default, Clone)]
pub struct ImageState {
    pub image: NetworkImage,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The history, as the store holds it once its checkpoint writer has caught up.
    pub history: HeldHistory,
}

/// The applied state shared between the state machine and its readers.
pub type SharedImage = Arc<RwLock<ImageState>>;

/// Reads the shared state, recovering from a poisoned lock (a panicked writer leaves the last
/// consistent state behind: writers only swap in fully built values).
///
/// A reader that has to wait (an apply of a large import holds the state for seconds) waits
/// off the runtime's worker ([`off_worker`]).
pub fn read(state: &SharedImage) -> std::sync::RwLockReadGuard<'_, ImageState> {
    match state.try_read() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            off_worker(|| state.read().unwrap_or_else(|p| p.into_inner()))
        }
    }
}

fn write(state: &SharedImage) -> std::sync::RwLockWriteGuard<'_, ImageState> {
    match state.try_write() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            off_worker(|| state.write().unwrap_or_else(|p| p.into_inner()))
        }
    }
}

/// Runs `f`, which may wait for or hold the applied state for long, without holding one of the
/// runtime's worker threads: on a multi-threaded runtime the worker's other tasks move to
/// another thread meanwhile (`block_in_place`). A node has as many workers as cores; with them
/// all waiting here, its Raft core sends no heartbeats and the followers elect another leader.
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// One key's operation in a write of the whole state: insert, or remove when `None`.
type KeyOp = Result<(Vec<u8>, Option<Vec<u8>>), String>;

fn put(k: Vec<u8>, v: Result<Vec<u8>, StorageError>) -> KeyOp {
    v.map(|v| (k, Some(v))).map_err(|e| e.to_string())
}

/// The operations that make tree `sm` hold exactly `image`, `records` and `meta_keys`: every
/// key there now removed (but [`TORN`]), then every key of the new state inserted.
fn replacing_ops<'a>(
    tree: &'a sled::Tree,
    image: &'a NetworkImage,
    history: &'a HeldHistory,
    meta_keys: Vec<(Vec<u8>, Vec<u8>)>,
) -> impl Iterator<Item = KeyOp> + 'a {
    let held = tree.iter().keys().filter_map(|k| match k {
        Ok(k) if k == TORN => None,
        Ok(k) => Some(Ok((k.to_vec(), None))),
        Err(e) => Some(Err(e.to_string())),
    });
    let new = (image.sites.values().map(|s| put(site_key(&s.id), enc(s))))
        .chain(image.cells.values().map(|c| put(cell_key(&c.id), enc(c))))
        .chain((image.relations.values()).map(|r| put(relation_key(&r.source, &r.target), enc(r))))
        .chain(image.kpis.values().map(|k| put(kpi_key(&k.cell), enc(k))))
        .chain((image.control.iter()).map(|(cell_site, c)| put(control_key(cell_site), enc(c))))
        .chain((history.keys_and_values()).map(|(k, v)| Ok((k, Some(v.to_vec())))))
        .chain(meta_keys.into_iter().map(|(k, v)| Ok((k, Some(v)))));
    held.chain(new)
}

/// Relations a batch changes from which on the checkpoint writer writes them all from a copy
/// of the image ([`relations_in_bulk`]), when they are also half the image's or more.
const BULK_RELATIONS: usize = 100_000;

/// When a batch changed relations in bulk (a large import's last part, which says so, or many
/// relations listed), the relations it removed; `None` otherwise.
fn in_bulk(image: &NetworkImage, changes: &Changes) -> Option<Vec<RelationKey>> {
    let n = changes.relations.len();
    if !changes.relations_in_bulk
        && (n < BULK_RELATIONS || n.saturating_mul(2) < image.relations.len())
    {
        return None;
    }
    Some(removed_relations(image, &changes.relations))
}

/// The keys of `changed` the image holds no relation under: merged with the image's, both in
/// key order (9 million lookups took seconds).
fn removed_relations(image: &NetworkImage, changed: &BTreeSet<RelationKey>) -> Vec<RelationKey> {
    let mut held = image.relations.keys().peekable();
    let mut removed = Vec::new();
    for key in changed {
        while held.next_if(|k| *k < key).is_some() {}
        if held.next_if(|k| *k == key).is_none() {
            removed.push(key.clone());
        }
    }
    removed
}

/// The checkpoint of a batch that changed relations in bulk, as a write of its own: every
/// relation of `image` (a copy: its maps share their shards with the state's), the `removed`
/// ones gone, and the rest of the batch (`m/applied` among it), under one [`TORN`] marker.
///
/// Why: encoded into the batch, a national import's 9.4 million keys took seconds of the
/// apply, holding the state, and ~570 MB of buffers beside the image for as long as the
/// writer took to put them in sled (a minute and a half), when the node's memory peaked.
/// Here each is encoded as it is written.
fn relations_in_bulk(image: NetworkImage, removed: Vec<RelationKey>, rest: Ops) -> sm_writer::Job {
    Box::new(move |tree: &sled::Tree, durability: &Durability| {
        let relations =
            (image.relations.values()).map(|r| put(relation_key(&r.source, &r.target), enc(r)));
        let removed = (removed.iter()).map(|(s, t)| Ok((relation_key(s, t), None)));
        let rest = rest
            .iter()
            .map(|(k, v)| Ok((k.to_vec(), v.map(<[u8]>::to_vec))));
        sm_writer::write_marked(tree, durability, relations.chain(removed).chain(rest))
    })
}

/// openraft's state machine for sonraft.
pub struct StateMachine {
    state: SharedImage,
    snapshots: Arc<SnapshotDir>,
    writer: Arc<SmWriter>,
    feed: tokio::sync::broadcast::Sender<Arc<AppliedChanges>>,
    /// Entries are applied only once they are on disk here (see [`sonraft_raft::durable`]).
    synced: Arc<DurableLog>,
    /// A batch changed relations in bulk since the last snapshot began: the next is built at
    /// the node's priority (see [`SnapshotBuilder`]).
    urgent: Arc<AtomicBool>,
}

/// Batches the feed of applied changes keeps: a subscriber that falls further behind is told
/// it lagged (and re-reads everything).
const FEED_BATCHES: usize = 4096;

/// Most keys (cells, relations, sites, control) one batch in the feed lists: a batch that
/// changed more is told as `reset` (everything may have changed), which every subscriber reads
/// as it reads a lag. The feed's ring keeps its last [`FEED_BATCHES`] batches whatever their
/// size, so a national import's nine million relation keys (~290 MB) stayed in memory until
/// thousands of later batches pushed them out, on a quiet network for hours. Bounded this
/// way, the ring holds at most ~130 MB of keys, and that only if every batch in it is this
/// large.
pub const FEED_KEYS_AT_MOST: usize = 1_000;

/// What the feed says of a batch that made `changes` (up to log index `index`): nothing when
/// it changed no configuration, `reset` when it changed more than [`FEED_KEYS_AT_MOST`] keys.
/// A large batch's sets (nine million relation keys after a national import) are freed on a
/// thread of their own: that takes a good part of a second, which neither the apply nor a
/// runtime worker (and the tasks queued behind it) should wait for.
fn feed_message(changes: Changes, index: u64) -> Option<AppliedChanges> {
    let listed =
        changes.cells.len() + changes.relations.len() + changes.sites.len() + changes.control.len();
    if listed == 0 && !changes.relations_in_bulk {
        return None;
    }
    if listed <= FEED_KEYS_AT_MOST && !changes.relations_in_bulk {
        return Some(AppliedChanges {
            index,
            cells: changes.cells.into_iter().collect(),
            relations: changes.relations.into_iter().collect(),
            sites: changes.sites.into_iter().collect(),
            control: changes.control.into_iter().collect(),
            reset: false,
        });
    }
    // Should no thread start, the sets are freed here, with the closure.
    let _ = std::thread::Builder::new()
        .name("sonraft-free".into())
        .spawn(move || drop(changes));
    Some(AppliedChanges {
        index,
        reset: true,
        ..AppliedChanges::default()
    })
}

/// What one applied batch changed in the configuration, for those who push it southbound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedChanges {
    /// The last log index of the batch.
    pub index: u64,
    pub cells: Vec<sonraft_raft::model::CellId>,
    pub relations: Vec<sonraft_raft::model::RelationKey>,
    /// Cell sites added, changed (their position) or removed.
    pub sites: Vec<sonraft_raft::model::SiteId>,
    /// Cell sites whose control moved to another node (see `sonraft_raft::model::control`).
    pub control: Vec<sonraft_raft::model::SiteId>,
    /// Everything may have changed: a snapshot was installed, or the batch changed more than
    /// [`FEED_KEYS_AT_MOST`] keys (the lists are empty then).
    pub reset: bool,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    codec::encode(v).map_err(|e| sm_err(ErrorVerb::Write, e))
}

fn cell_key(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}
fn site_key(id: &str) -> Vec<u8> {
    format!("s/{id}").into_bytes()
}
fn relation_key(s: &str, t: &str) -> Vec<u8> {
    format!("r/{s}/{t}").into_bytes()
}
fn kpi_key(id: &str) -> Vec<u8> {
    format!("k/{id}").into_bytes()
}
fn control_key(cell_site: &str) -> Vec<u8> {
    format!("o/{cell_site}").into_bytes()
}
fn son_key(item: SonItem) -> Vec<u8> {
    let (prefix, n) = match item {
        SonItem::Pending(id) => (b"p/", id),
        SonItem::Trial(index) => (b"t/", index),
        SonItem::Closed(index) => (b"j/", index),
    };
    [prefix.as_slice(), &n.to_be_bytes()].concat()
}

/// The number after a SON item key's prefix.
fn son_number(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(2..)?.try_into().ok()?))
}

/// The stored value of SON item `item`, `None` when it is gone.
fn son_value(son: &SonState, item: SonItem) -> Result<Option<Vec<u8>>, StorageError> {
    match item {
        SonItem::Pending(id) => son.pending.get(&id).map(enc).transpose(),
        SonItem::Trial(index) => son.trials.get(&index).map(enc).transpose(),
        SonItem::Closed(index) => son.journal.get(&index).map(enc).transpose(),
    }
}

/// Adds to `batch` the current value (or removal) of SON item `item`.
fn persist_son_item(son: &SonState, item: SonItem, batch: &mut Ops) -> Result<(), StorageError> {
    match son_value(son, item)? {
        Some(v) => batch.insert(son_key(item), v),
        None => batch.remove(son_key(item)),
    }
    Ok(())
}

/// Every SON item's key, for writing a whole state.
fn son_items(son: &SonState) -> impl Iterator<Item = SonItem> + '_ {
    son.pending
        .keys()
        .map(|id| SonItem::Pending(*id))
        .chain(son.trials.keys().map(|i| SonItem::Trial(*i)))
        .chain(son.journal.keys().map(|i| SonItem::Closed(*i)))
}

impl StateMachine {
    /// Loads the persisted state; if the newest snapshot is ahead of it (a crash during an
    /// install, or sled lost unsynced writes), restores from the snapshot. A checkpoint torn by
    /// a crash is discarded: the state is rebuilt from the newest snapshot, or from empty, and
    /// openraft re-applies the log after it.
    pub(crate) fn open(
        db: &sled::Db,
        snapshots: Arc<SnapshotDir>,
        synced: Arc<DurableLog>,
        durability: Arc<Durability>,
    ) -> Result<Self, Damaged> {
        let tree = db
            .open_tree("sm")
            .map_err(|e| Damaged::new("state machine tree", e))?;
        let torn = tree
            .contains_key(TORN)
            .map_err(|e| Damaged::new("state machine tree", e))?;
        let state = if torn {
            ImageState::default()
        } else {
            load(&tree)?
        };
        let writer = Arc::new(
            SmWriter::start(tree.clone(), durability.clone())
                .map_err(|e| Damaged::new("state machine writer", e))?,
        );
        let sm = StateMachine {
            state: Arc::new(RwLock::new(state)),
            snapshots,
            writer,
            feed: tokio::sync::broadcast::channel(FEED_BATCHES).0,
            synced,
            urgent: Arc::default(),
        };
        if let Some((meta, path)) = sm.snapshots.current() {
            let behind = read(&sm.state).last_applied < meta.last_log_id;
            if behind {
                if torn {
                    tracing::warn!(snapshot = %path.display(), "the state machine's last checkpoint was cut short by a crash; restoring from the newest snapshot");
                } else {
                    tracing::info!(snapshot = %path.display(), "state machine is behind the newest snapshot; restoring from it");
                }
                let f = std::fs::File::open(&path)
                    .map_err(|e| Damaged::new(path.display().to_string(), e))?;
                let (_, body) = crate::snapshot::decode_snapshot(f)?;
                sm.replace_all(&meta, body)
                    .map_err(|e| Damaged::new("restore from snapshot", e))?;
                return Ok(sm);
            }
        }
        if torn {
            tracing::warn!(
                "the state machine's last checkpoint was cut short by a crash and no snapshot is ahead of it; rebuilding it from the whole log"
            );
            let empty = SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: String::new(),
            };
            let body = SnapshotBody {
                image: NetworkImage::default(),
                history: Vec::new(),
            };
            sm.replace_all(&empty, body)
                .map_err(|e| Damaged::new("rebuild after a torn checkpoint", e))?;
        }
        Ok(sm)
    }

    /// The state readers share.
    pub fn shared(&self) -> SharedImage {
        self.state.clone()
    }

    pub(crate) fn writer(&self) -> Arc<SmWriter> {
        self.writer.clone()
    }

    /// Replaces the whole state (snapshot install) in memory and in sled.
    ///
    /// Written as a checkpoint is ([`sm_writer::write_marked`]), not as one sled batch: a
    /// batch of a national image's 9.4 million keys held all of them encoded, and sled, which
    /// keeps one epoch pinned for the whole of a batch, freed none of the node versions it
    /// replaced meanwhile: a learner installing that snapshot grew to 18 GB and was killed.
    ///
    /// sled's copy is written by the checkpoint writer, after what it holds and before anything
    /// applied later; this returns once the new state is in memory, waiting for neither.
    /// Written before, a national image's install held the state locked for 50 s, and the
    /// node's runtime stalled on it: every task that reads the image waited, heartbeats went
    /// unanswered, the learner's API hung; and a store opened with a torn checkpoint wrote the
    /// image back for a minute and a half before it started. Safe across a crash: the snapshot
    /// file is current before the install ([`SnapshotDir::receive`]) or the restore, and a
    /// store whose checkpoint is behind it or torn is restored from it on open; readers of sled
    /// wait for the writer.
    fn replace_all(&self, meta: &SnapshotMeta, body: SnapshotBody) -> Result<(), StorageError> {
        let SnapshotBody {
            image,
            history: records,
        } = body;
        let history =
            HeldHistory::from_records(&records).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut meta_keys = vec![
            (b"m/applied".to_vec(), enc(&meta.last_log_id)?),
            (b"m/membership".to_vec(), enc(&meta.last_membership)?),
            (b"m/clock".to_vec(), enc(&image.log_time_ms)?),
            (b"m/policy".to_vec(), enc(&image.policy)?),
            (b"m/releases".to_vec(), enc(&image.releases)?),
        ];
        // The staged parts as one value: a later part goes in after it, by its number.
        if let Some(staged) = &image.staged {
            meta_keys.push((staged_key(0), enc(&staged.as_part())?));
        }
        if image.son.tuning.v1() != TuningV1::default() {
            meta_keys.push((b"m/tuning".to_vec(), enc(&image.son.tuning.v1())?));
        }
        if image.son.tuning.needs_format_9() {
            meta_keys.push((
                TUNING_AVAILABILITY.to_vec(),
                enc(&image.son.tuning.availability())?,
            ));
        }
        if image.son != SonState::default() {
            meta_keys.push((b"m/son".to_vec(), enc(&image.son.meta())?));
            for item in son_items(&image.son) {
                if let Some(v) = son_value(&image.son, item)? {
                    meta_keys.push((son_key(item), v));
                }
            }
        }
        let put_all = {
            // The writer's own copy shares the image's maps (see `CowMap`).
            let image = image.clone();
            let history = history.clone();
            move |tree: &sled::Tree, durability: &Durability| {
                let ops = replacing_ops(tree, &image, &history, meta_keys);
                sm_writer::write_marked(tree, durability, ops)
            }
        };
        let mut state = write(&self.state);
        self.writer
            .submit_job(Box::new(put_all))
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        *state = ImageState {
            image,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            history,
        };
        let _ = self.feed.send(Arc::new(AppliedChanges {
            index: meta.last_log_id.map_or(0, |l| l.index),
            reset: true,
            ..AppliedChanges::default()
        }));
        Ok(())
    }

    /// Subscribes to the configuration changes of every applied batch.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<AppliedChanges>> {
        self.feed.subscribe()
    }

    /// The sender side, for readers that subscribe later.
    pub(crate) fn feed(&self) -> tokio::sync::broadcast::Sender<Arc<AppliedChanges>> {
        self.feed.clone()
    }

    /// Adds to `batch` the current value (or removal) of every key `changes` names, the
    /// relations' only if `relations`; `staged_before`: the parts staged before the batch.
    fn persist_changes(
        &self,
        state: &ImageState,
        changes: &Changes,
        staged_before: u32,
        relations: bool,
        batch: &mut Ops,
    ) -> Result<(), StorageError> {
        let image = &state.image;
        if changes.staged {
            persist_staged(image, changes, staged_before, batch)?;
        }
        for id in &changes.sites {
            match image.sites.get(id) {
                Some(s) => batch.insert(site_key(id), enc(s)?),
                None => batch.remove(site_key(id)),
            }
        }
        for id in &changes.cells {
            match image.cells.get(id) {
                Some(c) => batch.insert(cell_key(id), enc(c)?),
                None => batch.remove(cell_key(id)),
            }
        }
        for key in changes.relations.iter().filter(|_| relations) {
            match image.relations.get(key) {
                Some(r) => batch.insert(relation_key(&key.0, &key.1), enc(r)?),
                None => batch.remove(relation_key(&key.0, &key.1)),
            }
        }
        for id in &changes.kpis {
            if let Some(k) = image.kpis.get(id) {
                batch.insert(kpi_key(id), enc(k)?);
            }
        }
        for id in &changes.control {
            if let Some(c) = image.control.get(id) {
                batch.insert(control_key(id), enc(c)?);
            }
        }
        if changes.policy {
            batch.insert(b"m/policy".as_slice(), enc(&image.policy)?);
        }
        if changes.releases {
            batch.insert(b"m/releases".as_slice(), enc(&image.releases)?);
        }
        if changes.son {
            batch.insert(b"m/son".as_slice(), enc(&image.son.meta())?);
        }
        for item in &changes.son_items {
            persist_son_item(&image.son, *item, batch)?;
        }
        if changes.son_tuning {
            batch.insert(b"m/tuning".as_slice(), enc(&image.son.tuning.v1())?);
            // Only a tuning that sets them stores the sections of data format 9.
            if image.son.tuning.needs_format_9() {
                batch.insert(TUNING_AVAILABILITY, enc(&image.son.tuning.availability())?);
            } else {
                batch.remove(TUNING_AVAILABILITY);
            }
        }
        Ok(())
    }

    /// Adds the history `changes` recorded to `batch` and to the state's copy, trimmed to the
    /// policy's limit in both.
    fn persist_history(
        &self,
        state: &mut ImageState,
        changes: &Changes,
        batch: &mut Ops,
    ) -> Result<(), StorageError> {
        for (index, run) in history::by_entry(&changes.history) {
            let value: Arc<[u8]> = enc(&run)?.into();
            batch.insert(history::key(index), &value[..]);
            state.history.hold(index, run.len(), value);
        }
        for index in state.history.trim(state.image.policy.history_keep) {
            batch.remove(history::key(index));
        }
        Ok(())
    }
}

/// The key of a staged import's part `n` (data format 10).
pub(crate) fn staged_key(n: u32) -> Vec<u8> {
    let mut k = STAGED_PREFIX.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

const STAGED_PREFIX: &[u8] = b"m/staged/";

/// Data format 9 -> 10: the staged import's one value (`m/staged`) becomes the value of its
/// first part key, holding every part staged so far; in one atomic batch, so that a crash leaves
/// either layout whole (and the migration runs again).
pub(crate) fn migrate_staged_v9(tree: &sled::Tree) -> Result<(), Damaged> {
    let Some(v) = tree
        .get(b"m/staged")
        .map_err(|e| Damaged::new("state machine tree", e))?
    else {
        return Ok(());
    };
    let staged: StagedImport =
        codec::decode(&v).map_err(|e| Damaged::new("state machine key \"m/staged\"", e))?;
    let part = codec::encode(&staged.as_part())
        .map_err(|e| Damaged::new("state machine key \"m/staged\"", e))?;
    let mut batch = sled::Batch::default();
    batch.insert(staged_key(0), part);
    batch.remove(b"m/staged".as_slice());
    tree.apply_batch(batch)
        .map_err(|e| Damaged::new("state machine tree", e))
}

/// Writes the parts the batch staged for the import still staged, and removes the values of
/// parts no longer staged (the import finished, or a new one replaced a longer one). Every
/// stored part's number is below the count of parts staged (a snapshot's merged value is
/// part 0), so `staged_before` bounds the keys there are.
fn persist_staged(
    image: &NetworkImage,
    changes: &Changes,
    staged_before: u32,
    batch: &mut Ops,
) -> Result<(), StorageError> {
    let now = match &image.staged {
        Some(staged) => {
            // From the batch's last part 0 on, so all of the import still staged.
            for part in &changes.staged_parts {
                batch.insert(staged_key(part.parts - 1), enc(part)?);
            }
            staged.parts
        }
        None => 0,
    };
    for n in now..staged_before {
        batch.remove(staged_key(n));
    }
    Ok(())
}

/// The last applied log id of the checkpoint in sled (tests: whether a checkpoint is whole).
#[cfg(test)]
pub(crate) fn load_checkpoint(tree: &sled::Tree) -> Result<Option<LogId>, Damaged> {
    let bad = |e| Damaged::new("state machine checkpoint", e);
    match tree.get(b"m/applied").map_err(bad)? {
        Some(v) => codec::decode(&v).map_err(|e| Damaged::new("m/applied", e)),
        None => Ok(None),
    }
}

/// A sled key as error messages name it (made only when one is needed: a load decodes millions).
struct KeyName<'a>(&'a [u8]);

impl std::fmt::Debug for KeyName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.0))
    }
}

/// Reads the persisted state from tree `sm`, its relations on every core (up to
/// [`LOAD_THREADS_AT_MOST`], and one for each [`LOAD_CELLS_PER_THREAD_AT_LEAST`] cells at most).
fn load(tree: &sled::Tree) -> Result<ImageState, Damaged> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    load_on(tree, |cells| {
        cores
            .min(LOAD_THREADS_AT_MOST)
            .min(cells / LOAD_CELLS_PER_THREAD_AT_LEAST + 1)
    })
}

/// [`load`] with the relations on `threads(cells)` threads.
fn load_on(tree: &sled::Tree, threads: impl Fn(usize) -> usize) -> Result<ImageState, Damaged> {
    let started = std::time::Instant::now();
    let mut state = ImageState::default();
    let unreadable = |e| Damaged::new("state machine tree", e);
    // Everything but the relations first, in one pass: the relations name the cells.
    for item in tree
        .range(..RELATIONS_FROM)
        .chain(tree.range(RELATIONS_TO..))
    {
        let (k, v) = item.map_err(unreadable)?;
        load_key(&mut state, &k, &v)?;
    }
    let cells = state.image.cells.len();
    // The relations (30 for each cell of a national image: 9 million keys, ~1 µs each to read
    // from sled alone) on every core, each thread a range of them cut at the cells' ids and
    // built into shards as they come; the ranges follow one another in the tree's order, so
    // their maps join without a copy.
    let threads = threads(cells).max(1);
    let mut bounds = vec![RELATIONS_FROM.to_vec()];
    bounds.extend(
        (1..threads)
            .filter_map(|i| state.image.cells.keys().nth(i * cells / threads))
            .map(|id| relation_key(id, "")),
    );
    bounds.push(RELATIONS_TO.to_vec());
    // In the tree's byte order, which is not always the cells' (`r/A-1/` before `r/A/`): out
    // of it, one range came out empty and the next overlapped another, its keys read twice
    // and the maps merged instead of joined.
    bounds.sort();
    bounds.dedup();
    let ids = state.image.shared_ids();
    let parts = std::thread::scope(|scope| {
        let loaders: Vec<_> = bounds
            .windows(2)
            .map(|range| {
                let ids = &ids;
                scope.spawn(move || load_relations(tree, &range[0]..&range[1], ids))
            })
            .collect();
        loaders
            .into_iter()
            .map(|loader| {
                loader.join().unwrap_or_else(|_| {
                    Err(Damaged::new("state machine", "a relation loader panicked"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    state.image.relations = CowMap::concat(parts);
    state.image.cells = std::mem::take(&mut state.image.cells).into_iter().collect();
    tracing::info!(
        cells,
        relations = state.image.relations.len(),
        threads,
        took_ms = started.elapsed().as_millis() as u64,
        "loaded the state machine"
    );
    Ok(state)
}

/// Where the relations' keys begin and end (`0` follows `/`).
const RELATIONS_FROM: &[u8] = b"r/";
const RELATIONS_TO: &[u8] = b"r0";
/// [`load`]'s relation threads: at most this many, and one for each this many cells at most.
const LOAD_THREADS_AT_MOST: usize = 8;
const LOAD_CELLS_PER_THREAD_AT_LEAST: usize = 10_000;

/// The relations whose keys are in `range`, in the tree's order, their cells' ids shared.
fn load_relations(
    tree: &sled::Tree,
    range: std::ops::Range<&Vec<u8>>,
    ids: &sonraft_raft::model::SharedIds,
) -> Result<CowMap<(CellId, CellId), Relation>, Damaged> {
    let mut relations = CowMapBuilder::default();
    for item in tree.range(range.start.as_slice()..range.end.as_slice()) {
        let (k, v) = item.map_err(|e| Damaged::new("state machine tree", e))?;
        // The relation names its cells with the cells' own ids, found by hash and taken
        // straight from the stored bytes.
        let r = Relation::decode_with_ids(&v, |id| ids.get(id))
            .map_err(|e| Damaged::new(format!("state machine key {:?}", KeyName(&k)), e))?;
        relations.push((r.source.clone(), r.target.clone()), r);
    }
    Ok(relations.finish())
}

/// Loads one key of tree `sm` other than a relation into `state`.
fn load_key(state: &mut ImageState, k: &[u8], v: &[u8]) -> Result<(), Damaged> {
    let key = KeyName(k);
    let bad = |e: codec::CodecError| Damaged::new(format!("state machine key {key:?}"), e);
    let image = &mut state.image;
    match k.get(..2) {
        Some(b"s/") => {
            let s: sonraft_raft::model::Site = codec::decode(v).map_err(bad)?;
            image.sites.insert(s.id.clone(), s);
        }
        Some(b"c/") => {
            let c: sonraft_raft::model::Cell = codec::decode(v).map_err(bad)?;
            image.cells.insert(c.id.clone(), c);
        }
        Some(b"k/") => {
            let s: sonraft_raft::model::KpiSummary = codec::decode(v).map_err(bad)?;
            image.kpis.insert(s.cell.clone(), s);
        }
        Some(b"o/") => {
            let c: sonraft_raft::model::control::Control = codec::decode(v).map_err(bad)?;
            image
                .control
                .insert(String::from_utf8_lossy(&k[2..]).into_owned(), c);
        }
        Some(b"p/" | b"t/" | b"j/") => {
            let Some(n) = son_number(k) else {
                return Err(Damaged::new(
                    "state machine",
                    format!("bad SON key {key:?}"),
                ));
            };
            let son = &mut image.son;
            match k[0] {
                b'p' => {
                    son.pending.insert(n, codec::decode(v).map_err(bad)?);
                }
                b't' => {
                    son.trials.insert(n, codec::decode(v).map_err(bad)?);
                }
                _ => {
                    son.journal.insert(n, codec::decode(v).map_err(bad)?);
                }
            }
        }
        Some(b"g/") => {
            let Some(index) = history::index_of(k) else {
                return Err(Damaged::new(
                    "state machine",
                    format!("bad history key {key:?}"),
                ));
            };
            state
                .history
                .hold(index, history::decode(index, v)?.len(), Arc::from(v));
        }
        Some(b"h/") => {
            return Err(Damaged::new(
                "state machine",
                format!(
                    "history key {key:?} is in data format 1's layout, but the directory is marked format 2"
                ),
            ));
        }
        Some(b"m/") if k.starts_with(STAGED_PREFIX) => {
            if k.len() != STAGED_PREFIX.len() + 4 {
                return Err(Damaged::new(
                    "state machine",
                    format!("bad staged key {key:?}"),
                ));
            }
            let part: StagedPart = codec::decode(v).map_err(bad)?;
            if state
                .image
                .staged
                .as_ref()
                .is_some_and(|s| s.import_id != part.import_id)
            {
                return Err(Damaged::new(
                    "state machine",
                    format!(
                        "staged key {key:?} belongs to another import than the parts before it"
                    ),
                ));
            }
            StagedImport::push(&mut state.image.staged, part);
        }
        Some(b"m/") => match k {
            b"m/applied" => state.last_applied = codec::decode(v).map_err(bad)?,
            b"m/membership" => state.membership = codec::decode(v).map_err(bad)?,
            b"m/clock" => image.log_time_ms = codec::decode(v).map_err(bad)?,
            b"m/policy" => image.policy = codec::decode(v).map_err(bad)?,
            b"m/releases" => image.releases = codec::decode(v).map_err(bad)?,
            b"m/staged" => {
                return Err(Damaged::new(
                    "state machine",
                    "key \"m/staged\" is in data format 9's layout, but the directory is marked format 10",
                ));
            }
            b"m/son" => image.son.set_meta(codec::decode(v).map_err(bad)?),
            b"m/tuning" => {
                let v1: TuningV1 = codec::decode(v).map_err(bad)?;
                image.son.tuning = Tuning::from_parts(v1, image.son.tuning.availability());
            }
            TUNING_AVAILABILITY => {
                let availability: AvailabilityTuning = codec::decode(v).map_err(bad)?;
                image.son.tuning = Tuning::from_parts(image.son.tuning.v1(), availability);
            }
            _ => {
                return Err(Damaged::new(
                    "state machine",
                    format!("unknown key {key:?}"),
                ));
            }
        },
        _ => {
            return Err(Damaged::new(
                "state machine",
                format!("unknown key {key:?}"),
            ));
        }
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = read(&self.state);
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // A leader reports its own appends before they are synced; nothing of them may be seen
        // (by a client, a read, or a follower) before they are.
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            let waited = std::time::Instant::now();
            self.synced
                .wait_synced(last.log_id.index)
                .await
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            metrics::histogram!("sonraft_apply_wait_sync_seconds")
                .record(waited.elapsed().as_secs_f64());
        }
        let started = std::time::Instant::now();
        // A large import part holds the state for seconds: off the runtime's worker.
        let (replies, applied, failure) = off_worker(|| {
            let mut state = write(&self.state);
            let staged_before = state.image.staged.as_ref().map_or(0, |s| s.parts);
            let mut changes = Changes::default();
            let mut replies = Vec::new();
            let mut membership_changed = false;
            let mut failure = None;
            for entry in entries {
                let reply = match &entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        membership_changed = true;
                        Response::None
                    }
                    EntryPayload::Normal(envelope) => {
                        match state
                            .image
                            .apply_entry(entry.log_id.index, envelope, &mut changes)
                        {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::error!(index = entry.log_id.index, error = %e, "cannot apply a log entry; stopping");
                                failure = Some(StorageIOError::apply(
                                    entry.log_id,
                                    openraft::AnyError::error(e.to_string()),
                                ));
                                break;
                            }
                        }
                    }
                };
                state.last_applied = Some(entry.log_id);
                replies.push(reply);
            }
            let mut batch = Ops::default();
            let bulk = in_bulk(&state.image, &changes);
            self.persist_changes(&state, &changes, staged_before, bulk.is_none(), &mut batch)?;
            self.persist_history(&mut state, &changes, &mut batch)?;
            batch.insert(b"m/applied".as_slice(), enc(&state.last_applied)?);
            batch.insert(b"m/clock".as_slice(), enc(&state.image.log_time_ms)?);
            if membership_changed {
                batch.insert(b"m/membership".as_slice(), enc(&state.membership)?);
            }
            match bulk {
                None => self.writer.submit(batch),
                Some(removed) => {
                    self.urgent.store(true, Ordering::Release);
                    self.writer
                        .submit_job(relations_in_bulk(state.image.clone(), removed, batch))
                }
            }
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            let index = state.last_applied.map_or(0, |l| l.index);
            drop(state);
            Ok::<_, StorageError>((replies, feed_message(changes, index), failure))
        })?;
        if let Some(applied) = applied {
            let _ = self.feed.send(Arc::new(applied));
        }
        metrics::histogram!("sonraft_apply_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("sonraft_applied_entries_total").increment(replies.len() as u64);
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(replies),
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            snapshots: self.snapshots.clone(),
            urgent: self.urgent.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let f = self
            .snapshots
            .receiving_file()
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = snapshot.into_std().await;
        let dir = self.snapshots.clone();
        let m = meta.clone();
        let received = tokio::task::spawn_blocking(move || dir.receive(&mut file, &m))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let (_, body) = received.map_err(|e| snap_err(ErrorVerb::Read, e))?;
        // Off the runtime's worker: taking the state lock waits for any capture holding it,
        // and the worker's other tasks (the Raft core's answers among them) move meanwhile.
        off_worker(|| self.replace_all(meta, body))?;
        tracing::info!(last_log_id = ?meta.last_log_id, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Opened while current: a newer snapshot published meanwhile cuts this file down only
        // once this descriptor is closed.
        let snapshots = self.snapshots.clone();
        let opened = tokio::task::spawn_blocking(move || snapshots.open_current())
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(opened.map(|(meta, f)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        }))
    }
}

/// Bytes a second a snapshot built in the background is written at, at most (an urgent one
/// goes as fast as it comes): ~22 s for a national image's 434 MB.
///
/// The drive is the Raft log's too. Three nodes writing a national image's snapshot as fast as
/// their idle-priority encoders went (~45 MB/s each) raised the change sets' p99 1.6-2.3x
/// (`sonraft bench scale`), their log syncs over 2 ms 3-5x.
pub const SNAPSHOT_WRITE_RATE: u64 = 20 << 20;

/// Builds a snapshot from a consistent view: the image, last-applied id, membership and
/// history are captured together under the state lock (so no apply interleaves), then
/// written to a file without holding it.
///
/// The encoding runs below the priority of the threads writes wait for ([`crate::background`]),
/// unless a batch changed relations in bulk since the last snapshot began (a national import):
/// then at the node's priority. The three nodes' checkpoint writers then take the machine for
/// a minute and a half, an idle-priority snapshot waited as long, and a node restarted
/// meanwhile found its checkpoint torn and no snapshot ahead of it, and replayed the whole
/// import from the log (over 30 s).
pub struct SnapshotBuilder {
    state: SharedImage,
    snapshots: Arc<SnapshotDir>,
    urgent: Arc<AtomicBool>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Capturing decodes the history: off the runtime. It holds the state for a moment, so
        // at the node's own priority: a thread below it, holding the state on a busy machine,
        // would keep every apply waiting until it got a core again.
        let state = self.state.clone();
        let (meta, body) = tokio::task::spawn_blocking(move || capture(&state))
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        // Encoding takes seconds of a core for a large image: below the priority of the
        // threads writes wait for (see `background`), unless urgent.
        let dir = self.snapshots.clone();
        let urgent = self.urgent.swap(false, Ordering::AcqRel);
        let pace = (!urgent).then_some(SNAPSHOT_WRITE_RATE);
        let write = move || dir.write(&meta, &body, pace).map(|written| (meta, written));
        let written = if urgent {
            tokio::task::spawn_blocking(write)
                .await
                .map_err(std::io::Error::other)
        } else {
            crate::background::run("sonraft-snapshot", write).await
        };
        let (meta, (path, f)) = written
            .map_err(|e| snap_err(ErrorVerb::Write, e))?
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, file = %path.display(), "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        })
    }
}

/// Captures the applied state, membership and history together under the state lock (so no
/// apply interleaves), and names the snapshot after its last log id and the capture time.
///
/// It reads the history the state holds, not sled's: a capture queued behind the checkpoint
/// writer waited as long as the writer was behind, 80 s for a backup right after a national
/// import.
pub(crate) fn capture(state: &SharedImage) -> Result<(SnapshotMeta, SnapshotBody), Damaged> {
    let held = std::time::Instant::now();
    let (image, last_applied, membership, history) = {
        let s = read(state);
        // The image's maps share their shards with the copy (see `CowMap`), the history's
        // entries their values.
        (
            s.image.clone(),
            s.last_applied,
            s.membership.clone(),
            s.history.clone(),
        )
    };
    let held = held.elapsed();
    metrics::histogram!("sonraft_capture_hold_seconds").record(held.as_secs_f64());
    tracing::debug!(
        held_us = held.as_micros() as u64,
        "captured the applied state"
    );
    let history = history.decode_all()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id: format!(
            "{}-{}-{stamp}",
            last_applied.map_or(0, |l| l.leader_id.term),
            last_applied.map_or(0, |l| l.index)
        ),
    };
    Ok((meta, SnapshotBody { image, history }))
}

/// Up to `limit` history records older than `before`, newest first, each with its cursor (see
/// [`history::newest_first`]): the applied state's, decoded outside its lock.
pub(crate) fn history_newest_first(
    state: &SharedImage,
    limit: usize,
    before: Option<history::HistoryCursor>,
) -> Result<Vec<(history::HistoryCursor, HistoryRecord)>, Damaged> {
    let page = read(state).history.page_before(limit, before);
    history::newest_first(page, limit, before)
}

/// Up to `limit` history records from `from` on, oldest first, each with its cursor (see
/// [`history::oldest_first`]): the applied state's, decoded outside its lock.
pub(crate) fn history_oldest_first(
    state: &SharedImage,
    limit: usize,
    from: history::HistoryCursor,
) -> Result<Vec<(history::HistoryCursor, HistoryRecord)>, Damaged> {
    let page = read(state).history.page_from(limit, from);
    history::oldest_first(page, limit, from)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use sonraft_raft::model::Cell;

    fn cell(id: &str) -> Cell {
        serde_json::from_value(serde_json::json!({
            "id": id, "site": "S", "rat": "LTE", "pci": 1, "arfcn": 100, "azimuth": 0
        }))
        .unwrap()
    }

    fn relation(source: &str, target: &str, cio_db: i8) -> Relation {
        serde_json::from_value(serde_json::json!({
            "source": source, "target": target, "cio_db": cio_db
        }))
        .unwrap()
    }

    #[test]
    fn the_relations_a_batch_removed_are_those_it_changed_that_the_image_lacks() {
        let mut image = NetworkImage::default();
        for (s, t) in [("A", "B"), ("A", "C"), ("B", "A"), ("C", "A")] {
            image.put_relation(relation(s, t, 0));
        }
        let key = |s: &str, t: &str| (CellId::from(s), CellId::from(t));
        let changed: BTreeSet<RelationKey> = [
            key("A", "A"),
            key("A", "C"),
            key("A-1", "B"),
            key("B", "A"),
            key("D", "A"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            removed_relations(&image, &changed),
            [key("A", "A"), key("A-1", "B"), key("D", "A")]
        );
        let mut changes = Changes {
            relations: changed,
            ..Changes::default()
        };
        assert_eq!(in_bulk(&image, &changes), None, "a few: in the batch");
        changes.relations_in_bulk = true;
        assert_eq!(
            in_bulk(&image, &changes),
            Some(vec![key("A", "A"), key("A-1", "B"), key("D", "A")]),
            "a large import's: written from the image"
        );
    }

    /// Cells whose relation keys sort otherwise than the cells do: `r/A-1/…` comes before
    /// `r/A/…` (`-` sorts before `/`) while cell `A` comes before `A-1`.
    #[test]
    fn a_load_on_many_threads_is_the_load_on_one() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut ids: Vec<String> = ["A", "A-1", "A.2", "A1", "A-1-1", "B", "B-", "B--1"]
            .into_iter()
            .map(String::from)
            .collect();
        ids.extend((0..40).map(|i| format!("C{i}")));
        ids.extend((0..40).map(|i| format!("C{}-{i}", i % 7)));
        let mut expected = BTreeMap::new();
        for (n, source) in ids.iter().enumerate() {
            tree.insert(cell_key(source), enc(&cell(source)).unwrap())
                .unwrap();
            for target in ids.iter().skip(n % 5).step_by(3) {
                let r = relation(source, target, (n % 7) as i8);
                tree.insert(relation_key(source, target), enc(&r).unwrap())
                    .unwrap();
                expected.insert((source.clone(), target.clone()), r);
            }
        }
        let one = load_on(&tree, |_| 1).unwrap();
        let got: Vec<_> = one
            .image
            .relations
            .iter()
            .map(|((s, t), r)| ((s.to_string(), t.to_string()), r.clone()))
            .collect();
        assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
        for threads in [2, 3, 8] {
            let many = load_on(&tree, |_| threads).unwrap();
            assert_eq!(
                many.image.relations, one.image.relations,
                "{threads} threads"
            );
            assert_eq!(many.image.cells, one.image.cells, "{threads} threads");
        }
    }
}
