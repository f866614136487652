//! A compact, index-based copy of what the SON functions read from the image, captured in one
//! pass under the state lock so the analysis itself runs without holding it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sonraft_raft::changeset::ReadVersion;
use sonraft_raft::model::image::NetworkImage;
use sonraft_raft::model::{EntityRef, Policy, Rat};

/// FNV-1a: a fast hash for the short ids the SON functions look up millions of times; the
/// ids come from the replicated image, not from outside, so flooding is not a concern.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A hash map keyed by cell ids with [`Fnv`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

#[derive(Debug, Clone)]
pub struct ViewCell {
    pub pci: u16,
    pub arfcn: u32,
    pub rat: Rat,
    pub version: u64,
    pub hysteresis: u8,
    pub time_to_trigger_ms: u16,
    pub own: bool,
    /// Downlink PRB use from the replicated KPI summary, per mille.
    pub prb_permille: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct ViewRelation {
    /// A hash of "source/target", stable across captures (for per-relation history).
    pub key: u64,
    pub target: u32,
    pub cio_db: i8,
    pub ho_allowed: bool,
    pub remove_allowed: bool,
    pub version: u64,
}

/// The image as the SON functions of one site see it.
#[derive(Debug, Clone, Default)]
pub struct RadioView {
    pub ids: Vec<String>,
    pub index: FastMap<String, u32>,
    pub cells: Vec<ViewCell>,
    /// Outgoing relations per cell.
    pub out: Vec<Vec<ViewRelation>>,
    /// Sources of the relations that point at each cell.
    pub incoming: Vec<Vec<u32>>,
    /// Cells this site owns.
    pub own: Vec<u32>,
    pub policy: Policy,
}

/// A stable hash of a relation's ids.
pub fn relation_key(source: &str, target: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(source.as_bytes());
    h.write(b"/");
    h.write(target.as_bytes());
    h.finish()
}

impl RadioView {
    /// Refreshes what changes every period without a configuration change: the replicated
    /// KPI summaries.
    pub fn refresh_kpis(&mut self, image: &NetworkImage) {
        for (i, id) in self.ids.iter().enumerate() {
            self.cells[i].prb_permille = image.kpis.get(id).map(|k| k.prb_dl_permille);
        }
    }

    /// Captures the view of `site` (the cells whose cell site's region is `site`).
    pub fn capture(image: &NetworkImage, site: &str) -> RadioView {
        let n = image.cells.len();
        let mut v = RadioView {
            ids: Vec::with_capacity(n),
            index: FastMap::with_capacity_and_hasher(n, Default::default()),
            cells: Vec::with_capacity(n),
            out: vec![Vec::new(); n],
            incoming: vec![Vec::new(); n],
            own: Vec::new(),
            policy: image.policy.clone(),
        };
        for (i, c) in image.cells.values().enumerate() {
            let own = image.sites.get(&c.site).is_some_and(|s| s.region == site);
            v.ids.push(c.id.clone());
            v.index.insert(c.id.clone(), i as u32);
            v.cells.push(ViewCell {
                pci: c.pci,
                arfcn: c.arfcn,
                rat: c.rat,
                version: c.version,
                hysteresis: c.hysteresis,
                time_to_trigger_ms: c.time_to_trigger_ms,
                own,
                prb_permille: image.kpis.get(&c.id).map(|k| k.prb_dl_permille),
            });
            if own {
                v.own.push(i as u32);
            }
        }
        for r in image.relations.values() {
            let (Some(&s), Some(&t)) = (v.index.get(&r.source), v.index.get(&r.target)) else {
                continue;
            };
            v.out[s as usize].push(ViewRelation {
                key: relation_key(&r.source, &r.target),
                target: t,
                cio_db: r.cio_db,
                ho_allowed: r.ho_allowed,
                remove_allowed: r.remove_allowed,
                version: r.version,
            });
            v.incoming[t as usize].push(s);
        }
        v
    }

    pub fn id(&self, c: u32) -> &str {
        &self.ids[c as usize]
    }

    pub fn cell(&self, c: u32) -> &ViewCell {
        &self.cells[c as usize]
    }

    /// First-order neighbours: targets of the cell's relations and sources of relations to it.
    pub fn neighbours(&self, c: u32) -> Vec<u32> {
        let mut n: Vec<u32> = self.out[c as usize]
            .iter()
            .map(|r| r.target)
            .chain(self.incoming[c as usize].iter().copied())
            .collect();
        n.sort_unstable();
        n.dedup();
        n.retain(|x| *x != c);
        n
    }

    pub fn relation(&self, source: u32, target: u32) -> Option<&ViewRelation> {
        self.out[source as usize]
            .iter()
            .find(|r| r.target == target)
    }

    pub fn read_cell(&self, c: u32) -> ReadVersion {
        ReadVersion {
            entity: EntityRef::cell(self.id(c)),
            version: self.cell(c).version,
        }
    }

    pub fn read_relation(&self, source: u32, rel: &ViewRelation) -> ReadVersion {
        ReadVersion {
            entity: EntityRef::relation(self.id(source), self.id(rel.target)),
            version: rel.version,
        }
    }
}
