//! Bulk imports of sites, cells and relations: checked whole, applied all-or-nothing.
//!
//! A large image does not fit one log entry of a reasonable size (openraft sends an entry
//! within one heartbeat's time), so an import of command format 3 arrives in parts
//! ([`ImportPart`]): the parts are staged in the replicated state, invisible to reads, and the
//! last part applies them all in one step, or none if the whole does not check. A crash or a
//! leader change between parts leaves the image untouched; the next import's first part drops
//! the unfinished one. One import is staged at a time.
//!
//! What an import changes is written to the history like a change set: counts of created,
//! updated and unchanged entities, and every writable parameter of an existing cell or relation
//! whose value it replaces (the first [`LISTED_CHANGES`]), so that an import over a live image
//! never silently undoes what SON functions and operators changed. [`NetworkImage::import_diff`]
//! computes the same, for a dry run.
//!
//! An entity an import of format 3 creates at log index `i` starts at version
//! [`VERSION_SPAN`]` * i`. One entry raises a version by at most [`VERSION_SPAN`]` - 1` (one
//! import, or at most [`crate::command::MAX_CHANGE_SETS_PER_ENTRY`] change sets), so every
//! version issued before index `i` is below that: the versions of one entity never repeat,
//! also when it is pruned and imported again, and a change set computed from its old
//! incarnation conflicts (ABA). No state beyond the log index is needed, so every node derives
//! the same numbers, whatever it held before. The import of format 1 (`Command::Import`)
//! keeps its original meaning, version 1 for new entities, so that every release applies old
//! entries alike.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cow_map::{Builder as CowMapBuilder, CowMap};
use super::entity::valid_id;
use super::image::{Changes, HistoryRecord, NetworkImage};
use super::param::{cell_value, check_cell, check_relation, relation_value};
use super::{Cell, EntityRef, Param, Policy, Relation, RelationKey, SharedIds, Site};
use crate::changeset::{Origin, Outcome, Write};
use crate::command::{ImageImport, ImportCounts, VERSION_SPAN};

/// Most parameter changes an import lists (in its history record and dry run).
pub const LISTED_CHANGES: usize = 1000;

/// One part of an import that becomes visible in one step (command format 3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ImportPart {
    /// Chosen by the proposer; the parts of one import share it.
    pub import_id: u64,
    /// 0, 1, 2, ...: part 0 starts an import (and drops an unfinished one).
    pub part: u32,
    /// With the last part, the whole import is checked and applied, or refused whole.
    pub last: bool,
    /// Who imports, and why, for the history.
    pub origin: Origin,
    pub reason: String,
    pub data: ImageImport,
}

impl ImportPart {
    /// The command format that carries import parts.
    pub const FORMAT: u16 = 3;
}

/// The parts of an import received so far, waiting for the last one.
///
/// Each part's data is kept as it came, shared (`Arc`): a snapshot's capture copies the image
/// under the state lock, and a copy of a national import's staged parts (millions of relations)
/// held it 0.5–1 s and doubled their memory; now a copy shares them. It encodes as it always
/// did, as one [`ImageImport`] of all the parts (a snapshot's staged import decodes as one
/// part).
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(from = "StagedWhole")]
pub struct StagedImport {
    pub import_id: u64,
    /// Parts received (the next expected part number).
    pub parts: u32,
    /// The parts' data in order.
    chunks: Vec<Arc<ImageImport>>,
    /// The cell ids the parts name, each held once, shared by every cell and relation that names
    /// it: as decoded, each relation held two allocations of its own (32 B for a 9-byte id),
    /// ~580 MB for a national import's 9 million relations, beside the image built from them.
    ids: Arc<SharedIds>,
}

/// How a [`StagedImport`] is decoded: its parts' data as one.
#[derive(Deserialize)]
struct StagedWhole {
    import_id: u64,
    parts: u32,
    data: ImageImport,
}

impl From<StagedWhole> for StagedImport {
    fn from(w: StagedWhole) -> Self {
        StagedImport::with_data(w.import_id, w.parts, w.data)
    }
}

/// One list of every chunk's entries, encoded as a `Vec` of them all would be.
struct Joined<'a, T>(Vec<&'a [T]>);

impl<T: Serialize> Serialize for Joined<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.iter().map(|c| c.len()).sum()))?;
        for item in self.0.iter().flat_map(|c| c.iter()) {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

impl Serialize for StagedImport {
    /// As the derived encoding of `{import_id, parts, data}` with `data` the parts as one.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Data<'a>(&'a StagedImport);
        impl Serialize for Data<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let chunks = &self.0.chunks;
                let mut s = serializer.serialize_struct("ImageImport", 4)?;
                s.serialize_field(
                    "sites",
                    &Joined(chunks.iter().map(|c| &c.sites[..]).collect()),
                )?;
                s.serialize_field(
                    "cells",
                    &Joined(chunks.iter().map(|c| &c.cells[..]).collect()),
                )?;
                s.serialize_field(
                    "relations",
                    &Joined(chunks.iter().map(|c| &c.relations[..]).collect()),
                )?;
                s.serialize_field("policy", &self.0.policy())?;
                s.end()
            }
        }
        let mut s = serializer.serialize_struct("StagedImport", 3)?;
        s.serialize_field("import_id", &self.import_id)?;
        s.serialize_field("parts", &self.parts)?;
        s.serialize_field("data", &Data(self))?;
        s.end()
    }
}

impl PartialEq for StagedImport {
    /// Equal when they hold the same import, however its data is cut into parts.
    fn eq(&self, other: &Self) -> bool {
        fn all<'a, T: 'a>(
            s: &'a StagedImport,
            f: impl Fn(&'a ImageImport) -> &'a [T],
        ) -> impl Iterator<Item = &'a T> {
            s.chunks.iter().flat_map(move |c| f(c).iter())
        }
        self.import_id == other.import_id
            && self.parts == other.parts
            && all(self, |c| &c.sites[..]).eq(all(other, |c| &c.sites[..]))
            && all(self, |c| &c.cells[..]).eq(all(other, |c| &c.cells[..]))
            && all(self, |c| &c.relations[..]).eq(all(other, |c| &c.relations[..]))
            && self.policy() == other.policy()
    }
}

/// One part of a staged import as a store keeps it (data format 10: one value per part, so that
/// staging part `n` writes one part, not the `n` before it again). A store rebuilds the
/// [`StagedImport`] by [`StagedImport::push`]ing its parts in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct StagedPart {
    pub import_id: u64,
    /// Parts staged once this one is (its number + 1; a store may hold earlier parts merged
    /// into one value, as written from a snapshot).
    pub parts: u32,
    pub data: ImageImport,
}

/// The entities of an import, whole ([`ImageImport`]) or in the parts it was staged in
/// ([`StagedImport`]): what checking it and telling what it changes read, in the same order
/// either way.
pub trait ImportEntities {
    fn sites(&self) -> impl Iterator<Item = &Site>;
    fn cells(&self) -> impl Iterator<Item = &Cell>;
    fn relations(&self) -> impl Iterator<Item = &Relation>;
    fn policy(&self) -> Option<&Policy>;
    /// How many cells and relations it holds.
    fn counts(&self) -> (usize, usize);
}

impl ImportEntities for ImageImport {
    fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.iter()
    }
    fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.cells.iter()
    }
    fn relations(&self) -> impl Iterator<Item = &Relation> {
        self.relations.iter()
    }
    fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }
    fn counts(&self) -> (usize, usize) {
        (self.cells.len(), self.relations.len())
    }
}

impl ImportEntities for StagedImport {
    fn sites(&self) -> impl Iterator<Item = &Site> {
        StagedImport::sites(self)
    }
    fn cells(&self) -> impl Iterator<Item = &Cell> {
        StagedImport::cells(self)
    }
    fn relations(&self) -> impl Iterator<Item = &Relation> {
        StagedImport::relations(self)
    }
    fn policy(&self) -> Option<&Policy> {
        StagedImport::policy(self)
    }
    fn counts(&self) -> (usize, usize) {
        let sum = |f: fn(&ImageImport) -> usize| self.chunks.iter().map(|c| f(c)).sum();
        (sum(|c| c.cells.len()), sum(|c| c.relations.len()))
    }
}

impl StagedImport {
    /// A new import with nothing staged yet.
    pub fn new(import_id: u64) -> StagedImport {
        StagedImport {
            import_id,
            ..Default::default()
        }
    }

    /// An import of which `parts` parts, holding `data` between them, are staged.
    pub fn with_data(import_id: u64, parts: u32, data: ImageImport) -> StagedImport {
        let mut staged = StagedImport {
            import_id,
            parts,
            ..Default::default()
        };
        staged.add(data);
        staged
    }

    /// Adds a stored part: its data after what is staged, and its count of parts.
    pub fn push(staged: &mut Option<StagedImport>, part: StagedPart) {
        let s = staged.get_or_insert_with(|| StagedImport::new(part.import_id));
        s.parts = part.parts;
        s.add(part.data);
    }

    /// Adds `data` after what is staged, its cells and relations naming cells by the ids the
    /// parts before hold.
    fn add(&mut self, mut data: ImageImport) {
        // Copied only while a copy of the image (a snapshot's capture) shares the set.
        let ids = Arc::make_mut(&mut self.ids);
        for cell in &mut data.cells {
            ids.share(&mut cell.id);
        }
        for rel in &mut data.relations {
            ids.share(&mut rel.source);
            ids.share(&mut rel.target);
        }
        self.chunks.push(Arc::new(data));
    }

    /// The sites, cells and relations staged, in order.
    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.chunks.iter().flat_map(|c| c.sites.iter())
    }

    pub fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.chunks.iter().flat_map(|c| c.cells.iter())
    }

    pub fn relations(&self) -> impl Iterator<Item = &Relation> {
        self.chunks.iter().flat_map(|c| c.relations.iter())
    }

    /// The policy the import replaces the coordination policy with: the last part's that has
    /// one (as [`ImageImport::append`] keeps it).
    pub fn policy(&self) -> Option<&Policy> {
        self.chunks.iter().rev().find_map(|c| c.policy.as_ref())
    }

    /// The parts' data as one (each part is moved, or copied if a copy of the image still
    /// shares it).
    pub fn into_data(self) -> ImageImport {
        let mut whole = ImageImport {
            sites: Vec::with_capacity(self.chunks.iter().map(|c| c.sites.len()).sum()),
            cells: Vec::with_capacity(self.chunks.iter().map(|c| c.cells.len()).sum()),
            relations: Vec::with_capacity(self.chunks.iter().map(|c| c.relations.len()).sum()),
            policy: None,
        };
        for chunk in self.chunks {
            whole.append(Arc::unwrap_or_clone(chunk));
        }
        whole
    }

    /// The whole staged import as one stored part.
    pub fn as_part(&self) -> StagedPart {
        StagedPart {
            import_id: self.import_id,
            parts: self.parts,
            data: self.clone().into_data(),
        }
    }
}

impl ImageImport {
    /// Appends another part's sites, cells and relations; its policy, if it has one, replaces
    /// this one's (as staging does).
    pub fn append(&mut self, mut other: ImageImport) {
        self.sites.append(&mut other.sites);
        self.cells.append(&mut other.cells);
        self.relations.append(&mut other.relations);
        if other.policy.is_some() {
            self.policy = other.policy;
        }
    }
}

/// How many entities of one kind an import creates, updates and leaves as they are.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KindCounts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// One writable parameter of an existing entity whose value an import replaces.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ParamChange {
    pub entity: EntityRef,
    pub param: Param,
    pub from: super::Value,
    pub to: super::Value,
}

/// What an import changes in an image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ImportDiff {
    pub sites: KindCounts,
    pub cells: KindCounts,
    pub relations: KindCounts,
    pub policy_changed: bool,
    /// Every replaced parameter value of an existing cell or relation, up to [`LISTED_CHANGES`].
    pub changes: Vec<ParamChange>,
    /// How many parameter values it replaces in all.
    pub changed_params: u64,
}

/// What applying an import part answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// A part was staged; `parts` are staged so far.
    Staged { parts: u32 },
    /// The last part arrived and the whole import was applied.
    Applied { index: u64, diff: ImportDiff },
    /// The import was refused whole (nothing of it applied), or a part came out of order.
    Refused { reason: String },
}

impl ImportDiff {
    fn note(&mut self, change: ParamChange) {
        self.changed_params += 1;
        if self.changes.len() < LISTED_CHANGES {
            self.changes.push(change);
        }
    }

    /// The counts as in a legacy import answer.
    pub fn counts(&self) -> ImportCounts {
        let total = |k: &KindCounts| k.created + k.updated + k.unchanged;
        ImportCounts {
            sites: total(&self.sites),
            cells: total(&self.cells),
            relations: total(&self.relations),
        }
    }

    /// One line for the history and logs.
    pub fn summary(&self) -> String {
        let k = |name: &str, c: &KindCounts| {
            format!(
                "{name} {} created, {} updated, {} unchanged",
                c.created, c.updated, c.unchanged
            )
        };
        format!(
            "{}; {}; {}; {} parameter values replaced{}",
            k("sites", &self.sites),
            k("cells", &self.cells),
            k("relations", &self.relations),
            self.changed_params,
            if self.policy_changed {
                "; policy replaced"
            } else {
                ""
            }
        )
    }
}

/// A cell or relation as an import compares it: without its version and change stamps.
fn same_cell(a: &Cell, b: &Cell) -> bool {
    let strip = |c: &Cell| {
        let mut c = c.clone();
        c.version = 0;
        c.last_change.clear();
        c
    };
    strip(a) == strip(b)
}

fn same_relation(a: &Relation, b: &Relation) -> bool {
    let strip = |r: &Relation| {
        let mut r = r.clone();
        r.version = 0;
        r.last_change.clear();
        r
    };
    strip(a) == strip(b)
}

/// Entries an import must put for its cells to be packed after it ([`NetworkImage::pack_cells`])
/// and its relations put in one go.
const PACK_AFTER: usize = 10_000;

impl NetworkImage {
    /// What `import` would change in this image (it must pass [`NetworkImage::check_import`]).
    pub fn import_diff(&self, import: &impl ImportEntities) -> ImportDiff {
        let mut diff = ImportDiff::default();
        for site in import.sites() {
            match self.sites.get(&site.id) {
                None => diff.sites.created += 1,
                Some(old) if old == site => diff.sites.unchanged += 1,
                Some(_) => diff.sites.updated += 1,
            }
        }
        for cell in import.cells() {
            let Some(old) = self.cells.get(&cell.id) else {
                diff.cells.created += 1;
                continue;
            };
            if same_cell(old, cell) {
                diff.cells.unchanged += 1;
                continue;
            }
            diff.cells.updated += 1;
            let entity = EntityRef::Cell(cell.id.clone());
            for param in Param::ALL.into_iter().filter(|p| !p.on_relation()) {
                if let (Some(from), Some(to)) = (cell_value(old, param), cell_value(cell, param))
                    && from != to
                {
                    diff.note(ParamChange {
                        entity: entity.clone(),
                        param,
                        from,
                        to,
                    });
                }
            }
        }
        for rel in import.relations() {
            let key = (rel.source.clone(), rel.target.clone());
            let Some(old) = self.relations.get(&key) else {
                diff.relations.created += 1;
                continue;
            };
            if same_relation(old, rel) {
                diff.relations.unchanged += 1;
                continue;
            }
            diff.relations.updated += 1;
            let entity = EntityRef::Relation(key.0, key.1);
            for param in [Param::CioDb, Param::HoAllowed] {
                if let (Some(from), Some(to)) =
                    (relation_value(old, param), relation_value(rel, param))
                    && from != to
                {
                    diff.note(ParamChange {
                        entity: entity.clone(),
                        param,
                        from,
                        to,
                    });
                }
            }
        }
        diff.policy_changed = import.policy().is_some_and(|p| *p != self.policy);
        diff
    }

    /// Applies one part of a staged import (command format 3) at log `index`.
    pub(crate) fn import_part(
        &mut self,
        index: u64,
        part: &ImportPart,
        changes: &mut Changes,
    ) -> ImportOutcome {
        changes.staged = true;
        if part.part == 0 {
            self.staged = Some(StagedImport::new(part.import_id));
        }
        let staged = match &mut self.staged {
            Some(s) if s.import_id == part.import_id && s.parts == part.part => s,
            other => {
                let have = other
                    .as_ref()
                    .map(|s| format!("import {} has {} parts", s.import_id, s.parts))
                    .unwrap_or_else(|| "no import is staged".into());
                return ImportOutcome::Refused {
                    reason: format!(
                        "part {} of import {} is out of order ({have}); start the import again",
                        part.part, part.import_id
                    ),
                };
            }
        };
        staged.parts += 1;
        staged.add(part.data.clone());
        if part.part == 0 {
            changes.staged_parts.clear();
        }
        changes.staged_parts.push(StagedPart {
            import_id: part.import_id,
            parts: staged.parts,
            data: part.data.clone(),
        });
        if !part.last {
            return ImportOutcome::Staged {
                parts: staged.parts,
            };
        }
        let Some(staged) = self.staged.take() else {
            return ImportOutcome::Refused {
                reason: "no import is staged".into(),
            };
        };
        match self.apply_import(index, part, staged, changes) {
            Ok(diff) => ImportOutcome::Applied { index, diff },
            Err(reason) => {
                changes.history.push(HistoryRecord {
                    index,
                    log_time_ms: self.log_time_ms,
                    proposed_at_ms: 0,
                    origin: part.origin.clone(),
                    reason: format!("import: {}", part.reason),
                    writes: Vec::new(),
                    outcome: Outcome::Invalid {
                        reason: reason.clone(),
                    },
                });
                ImportOutcome::Refused { reason }
            }
        }
    }

    /// Checks and applies a whole staged import, recording it in the history.
    ///
    /// Its parts are consumed one at a time, never joined into one import first: a national
    /// import's 9 million relations as one `Vec` (~650 MB) stayed beside everything built from
    /// them, and the node's memory peaked here.
    fn apply_import(
        &mut self,
        index: u64,
        part: &ImportPart,
        import: StagedImport,
        changes: &mut Changes,
    ) -> Result<ImportDiff, String> {
        self.check_import(&import)?;
        let diff = self.import_diff(&import);
        let created = VERSION_SPAN.saturating_mul(index.max(1));
        let mut versions = BTreeMap::new();
        let policy = import.policy().cloned();
        let relation_count = import.counts().1;
        // Each part's data is moved out, or copied where a snapshot's capture still shares
        // the part: the sites and cells now (a few), the relations one part at a time as they
        // are put. (Copied all at once, the parts of a national import a capture held during
        // the import doubled a node's memory for as long as its snapshot took: 3.5-3.7 GB.)
        let mut chunks = import.chunks;
        let (mut sites, mut cells) = (Vec::new(), Vec::new());
        for chunk in &mut chunks {
            match Arc::get_mut(chunk) {
                Some(c) => {
                    sites.append(&mut c.sites);
                    cells.append(&mut c.cells);
                }
                None => {
                    sites.extend(chunk.sites.iter().cloned());
                    cells.extend(chunk.cells.iter().cloned());
                }
            }
        }
        for site in sites {
            changes.sites.insert(site.id.clone());
            self.sites.insert(site.id.clone(), site);
        }
        for mut cell in cells {
            let old = self.cells.get(&cell.id);
            if old.is_some_and(|o| same_cell(o, &cell)) {
                continue;
            }
            cell.version = old.map_or(created, |c| c.version + 1);
            cell.last_change = old.map(|c| c.last_change.clone()).unwrap_or_default();
            // Only an entity that was there before can be listed among the changes (below).
            if old.is_some() {
                versions.insert(EntityRef::Cell(cell.id.clone()).to_string(), cell.version);
            }
            changes.cells.insert(cell.id.clone());
            self.cells.insert(cell.id.clone(), cell);
        }
        // Entries inserted one at a time leave the maps' nodes two-thirds full: after a large
        // import (a quarter of the image or more) they are packed, and a large import's
        // relations go in all at once.
        let large = |put: usize, held: usize| put >= PACK_AFTER && put * 4 >= held;
        if large(changes.cells.len(), self.cells.len()) {
            self.pack_cells();
        }
        let relations = chunks.into_iter().map(|c| match Arc::try_unwrap(c) {
            Ok(c) => c.relations,
            Err(shared) => shared.relations.clone(),
        });
        if large(relation_count, self.relations.len() + relation_count) {
            self.put_relations_at_once(relations, relation_count, created, &mut versions, changes);
        } else {
            for rel in relations.flatten() {
                let key = (rel.source.clone(), rel.target.clone());
                let Some(rel) = self.imported_relation(&key, rel, created, &mut versions) else {
                    continue;
                };
                changes.relations.insert(self.put_relation(rel));
            }
        }
        if let Some(policy) = policy {
            self.policy = policy;
            changes.policy = true;
        }
        let listed: BTreeSet<String> = diff.changes.iter().map(|c| c.entity.to_string()).collect();
        versions.retain(|entity, _| listed.contains(entity));
        changes.history.push(HistoryRecord {
            index,
            log_time_ms: self.log_time_ms,
            proposed_at_ms: 0,
            origin: part.origin.clone(),
            reason: format!("import: {} ({})", part.reason, diff.summary()),
            writes: diff
                .changes
                .iter()
                .map(|c| Write {
                    entity: c.entity.clone(),
                    param: c.param,
                    value: c.to.clone(),
                })
                .collect(),
            outcome: Outcome::Applied { index, versions },
        });
        Ok(diff)
    }

    /// `rel` as an import puts it under `key`: its version and change stamps carried on from
    /// the relation it replaces (its version noted in `versions`), or `None` when it changes
    /// nothing.
    fn imported_relation(
        &self,
        key: &RelationKey,
        mut rel: Relation,
        created: u64,
        versions: &mut BTreeMap<String, u64>,
    ) -> Option<Relation> {
        let old = self.relations.get(key);
        if old.is_some_and(|o| same_relation(o, &rel)) {
            return None;
        }
        rel.version = old.map_or(created, |r| r.version + 1);
        rel.last_change = old.map(|r| r.last_change.clone()).unwrap_or_default();
        // A created relation is counted, not listed: naming each of 9 million took seconds and
        // a gigabyte on every node, all dropped again below.
        if old.is_some() {
            versions.insert(
                EntityRef::Relation(key.0.clone(), key.1.clone()).to_string(),
                rel.version,
            );
        }
        Some(rel)
    }

    /// Puts a large import's relations (already checked), given in parts, the way one
    /// [`put_relation`] each would, but builds the relation map again in one go: one at a time,
    /// 3 million relations took 6 s and twice the map's memory (B-tree nodes two-thirds full,
    /// then packed), beside the import's own copy. Each relation names its cells by the cells'
    /// own ids, found by hash ([`NetworkImage::shared_ids`]).
    ///
    /// Each part is keyed and sorted as it comes, its received form freed, and while the parts
    /// follow one another in key order (an export's do) it goes into the map at once: the
    /// relations are never held twice whole (keyed all first, they were ~940 MB beside the map
    /// built from them for a national import, where the node's memory peaked). A part out of
    /// order turns what was built into one list (of exactly their number), which the rest
    /// joins, sorted at the end.
    ///
    /// The relations changed are not listed one by one: [`Changes::relations_in_bulk`] says
    /// that any relation of the image may have (9 million keys were ~700 MB more at the peak).
    ///
    /// [`put_relation`]: NetworkImage::put_relation
    fn put_relations_at_once(
        &mut self,
        parts: impl Iterator<Item = Vec<Relation>>,
        count: usize,
        created: u64,
        versions: &mut BTreeMap<String, u64>,
        changes: &mut Changes,
    ) {
        let ids = self.shared_ids();
        let mut in_order = Some(CowMapBuilder::default());
        let mut last: Option<RelationKey> = None;
        let mut gathered: Vec<(RelationKey, Relation)> = Vec::new();
        for relations in parts {
            let mut part = Vec::with_capacity(relations.len());
            // Consumed as it goes: each relation's own ids are freed as the shared ones
            // replace them.
            for mut rel in relations {
                rel.source = ids.get(&rel.source);
                rel.target = ids.get(&rel.target);
                let key = (rel.source.clone(), rel.target.clone());
                if let Some(rel) = self.imported_relation(&key, rel, created, versions) {
                    part.push((key, rel));
                }
            }
            part.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let Some(first) = part.first() else { continue };
            let follows = last.as_ref().is_none_or(|l| *l < first.0);
            match &mut in_order {
                Some(map) if follows => {
                    last = part.last().map(|(k, _)| k.clone());
                    for (key, rel) in part {
                        map.push(key, rel);
                    }
                }
                _ => {
                    if let Some(map) = in_order.take() {
                        gathered = Vec::with_capacity(count);
                        gathered.extend(map.finish());
                    }
                    gathered.append(&mut part);
                }
            }
        }
        changes.relations_in_bulk = true;
        let put: CowMap<RelationKey, Relation> = match in_order {
            Some(map) => map.finish(),
            None => CowMap::from_vec(gathered),
        };
        let held = std::mem::take(&mut self.relations);
        self.relations = if held.is_empty() {
            put
        } else {
            // Both sorted: one pass, the import's relation replacing the one it updates.
            let mut merged = Vec::with_capacity(held.len() + put.len());
            let mut put = put.into_iter().peekable();
            for (key, rel) in held {
                while let Some(p) = put.next_if(|(k, _)| *k < key) {
                    merged.push(p);
                }
                match put.next_if(|(k, _)| *k == key) {
                    Some(p) => merged.push(p),
                    None => merged.push((key, rel)),
                }
            }
            merged.extend(put);
            merged.into_iter().collect()
        };
    }

    /// Upserts sites, cells and relations; all-or-nothing (command format 1: new entities get
    /// version 1, as they always did).
    pub(crate) fn import_v1(
        &mut self,
        import: &ImageImport,
        changes: &mut Changes,
    ) -> Result<ImportCounts, String> {
        self.check_import(import)?;
        for site in &import.sites {
            self.sites.insert(site.id.clone(), site.clone());
            changes.sites.insert(site.id.clone());
        }
        for cell in &import.cells {
            let mut cell = cell.clone();
            let old = self.cells.get(&cell.id);
            cell.version = old.map_or(1, |c| c.version + 1);
            cell.last_change = old.map(|c| c.last_change.clone()).unwrap_or_default();
            changes.cells.insert(cell.id.clone());
            self.cells.insert(cell.id.clone(), cell);
        }
        for rel in &import.relations {
            let mut rel = rel.clone();
            let key = (rel.source.clone(), rel.target.clone());
            let old = self.relations.get(&key);
            rel.version = old.map_or(1, |r| r.version + 1);
            rel.last_change = old.map(|r| r.last_change.clone()).unwrap_or_default();
            changes.relations.insert(self.put_relation(rel));
        }
        if let Some(policy) = &import.policy {
            self.policy = policy.clone();
            changes.policy = true;
        }
        Ok(ImportCounts {
            sites: import.sites.len() as u64,
            cells: import.cells.len() as u64,
            relations: import.relations.len() as u64,
        })
    }

    /// Checks that an import is whole and legal: unique ids, known sites and cells (in the
    /// import or the image), legal values.
    pub fn check_import(&self, import: &impl ImportEntities) -> Result<(), String> {
        let (cell_count, relation_count) = import.counts();
        let mut sites = BTreeSet::new();
        for site in import.sites() {
            if !valid_id(&site.id) {
                return Err(format!(
                    "site id {:?} is empty, too long or contains '/'",
                    site.id
                ));
            }
            if !sites.insert(site.id.as_str()) {
                return Err(format!("site {} appears twice", site.id));
            }
            if !(-90.0..=90.0).contains(&site.lat) || !(-180.0..=180.0).contains(&site.lon) {
                return Err(format!(
                    "site {}: lat/lon {}/{} out of range",
                    site.id, site.lat, site.lon
                ));
            }
        }
        // By hash: at millions of relations the ordered sets took seconds.
        let mut cells = HashSet::with_capacity(cell_count);
        for cell in import.cells() {
            if !valid_id(&cell.id) {
                return Err(format!(
                    "cell id {:?} is empty, too long or contains '/'",
                    cell.id
                ));
            }
            if !cells.insert(cell.id.as_str()) {
                return Err(format!("cell {} appears twice", cell.id));
            }
            if !sites.contains(cell.site.as_str()) && !self.sites.contains_key(&cell.site) {
                return Err(format!("cell/{}: unknown site {:?}", cell.id, cell.site));
            }
            check_cell(cell)?;
        }
        let mut rels = HashSet::with_capacity(relation_count);
        for rel in import.relations() {
            for end in [&rel.source, &rel.target] {
                if !cells.contains(end.as_str()) && !self.cells.contains_key(end) {
                    return Err(format!(
                        "relation/{}/{}: unknown cell {:?}",
                        rel.source, rel.target, end
                    ));
                }
            }
            if !rels.insert((rel.source.as_str(), rel.target.as_str())) {
                return Err(format!(
                    "relation/{}/{} appears twice",
                    rel.source, rel.target
                ));
            }
            check_relation(rel)?;
        }
        if let Some(p) = import.policy()
            && !(0..=24).contains(&p.max_son_cio_db)
        {
            return Err(format!(
                "policy.max_son_cio_db {} is outside 0..=24",
                p.max_son_cio_db
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn part(n: u32, policy: Option<Policy>) -> StagedPart {
        let relation = |s: &str, t: &str| -> Relation {
            serde_json::from_value(serde_json::json!({"source": s, "target": t})).unwrap()
        };
        StagedPart {
            import_id: 9,
            parts: n + 1,
            data: ImageImport {
                relations: vec![
                    relation(&format!("A{n}"), "B"),
                    relation(&format!("C{n}"), "D"),
                ],
                policy,
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_staged_import_in_parts_encodes_as_one_and_its_copy_shares_them() {
        let mut staged = None;
        let policy = Policy {
            cooldown_ms: 12_345,
            ..Policy::default()
        };
        StagedImport::push(&mut staged, part(0, None));
        StagedImport::push(&mut staged, part(1, Some(policy.clone())));
        StagedImport::push(&mut staged, part(2, None));
        let staged = staged.unwrap();
        let whole = staged.clone().into_data();
        assert_eq!(whole.relations.len(), 6);
        assert_eq!(
            whole.policy.as_ref(),
            Some(&policy),
            "the last part with a policy"
        );
        assert_eq!(staged.policy(), Some(&policy));

        let as_one = StagedImport::with_data(9, 3, whole.clone());
        assert_eq!(staged, as_one, "equal however the data is cut");
        let bytes = codec::encode(&staged).unwrap();
        assert_eq!(bytes, codec::encode(&as_one).unwrap());
        let back: StagedImport = codec::decode(&bytes).unwrap();
        assert_eq!(back, staged);
        assert_eq!(staged.as_part().data, whole);

        let copy = staged.clone();
        assert!(
            copy.chunks
                .iter()
                .zip(&staged.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b)),
            "a copy shares every part"
        );
    }

    /// Every id a staged import names is held once: a relation's cells are the ids of the cells
    /// staged with it or before it, and of the relations before it, decoded from a snapshot too.
    #[test]
    fn a_staged_import_holds_each_cell_id_once_across_its_parts() {
        let cell = |id: &str| -> Cell {
            serde_json::from_value(serde_json::json!({
                "id": id, "site": "S", "rat": "NR", "pci": 1, "arfcn": 632628, "azimuth": 0
            }))
            .unwrap()
        };
        let mut staged = None;
        let mut first = part(0, None);
        first.data.cells = vec![cell("A1"), cell("B")];
        StagedImport::push(&mut staged, first);
        StagedImport::push(&mut staged, part(1, None));
        StagedImport::push(&mut staged, part(2, None));
        let shared = |s: &StagedImport| {
            let b = s.cells().find(|c| c.id == "B").unwrap().id.clone();
            let d: Vec<&Relation> = s.relations().filter(|r| r.target == "D").collect();
            assert_eq!(d.len(), 3);
            s.relations()
                .filter(|r| r.target == "B")
                .all(|r| r.target.shares(&b))
                && s.relations()
                    .any(|r| r.source == "A1" && r.source.shares(&s.cells().next().unwrap().id))
                && d.iter().all(|r| r.target.shares(&d[0].target))
        };
        let staged = staged.unwrap();
        assert!(shared(&staged), "staged part by part");
        let back: StagedImport = codec::decode(&codec::encode(&staged).unwrap()).unwrap();
        assert!(shared(&back), "decoded as one part");
        assert_eq!(back, staged);
    }
}
