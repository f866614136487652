//! A compact, index-based copy of what the SON functions read from the image, captured in one
//! pass under the state lock so the analysis itself runs without holding it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use sonraft_raft::changeset::{Function, ReadVersion};
use sonraft_raft::model::image::NetworkImage;
use sonraft_raft::model::{
    AdminState, Cell, CellId, EnergySaving, EntityRef, Param, Policy, Rat, Relation, RelationKey,
};
use sonraft_raft::son::Tuning;

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
    /// Index of its cell site in [`RadioView::site_cells`]: co-site cells share it.
    pub cell_site: u32,
    /// Locked, shutting down or dormant (energy saving): it carries no traffic now.
    pub down: bool,
    /// Dormant by energy saving (then also `down`).
    pub dormant: bool,
    /// Antenna azimuth, degrees.
    pub azimuth: u16,
    /// Electrical tilt (0.1°), the lowest the operator's tilt box allows, and the maximum
    /// transmit power (dBm): what outage compensation moves.
    pub electrical_tilt: i16,
    pub tilt_min: i16,
    pub max_tx_power_dbm: i16,
    /// The highest tilt the operator's box allows (0.1°): how far coverage optimisation may
    /// downtilt.
    pub tilt_max: i16,
    /// Downlink PRB use from the replicated KPI summary, per mille.
    pub prb_permille: Option<u16>,
    /// End of its newest replicated KPI summary's period, ms since the Unix epoch (0: none).
    pub kpi_end_ms: u64,
    /// Its replicated KPI summary says it serves nobody (no connected user, no PRB in use)
    /// while it is neither locked nor dormant: what a sleeping cell looks like from another
    /// site, which cannot run detection on it (see [`RadioView::in_outage`]).
    pub serves_nobody: bool,
    /// Its tilt or power was last set by outage compensation (of any site): the values are
    /// not its own now, and it does not compensate another outage until they are reverted.
    pub compensating: bool,
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
    pub ids: Vec<CellId>,
    pub index: FastMap<CellId, u32>,
    pub cells: Vec<ViewCell>,
    /// Outgoing relations per cell.
    pub out: Vec<Vec<ViewRelation>>,
    /// Sources of the relations that point at each cell.
    pub incoming: Vec<Vec<u32>>,
    /// Cells this site owns.
    pub own: Vec<u32>,
    /// The cells of each cell site, indexed by [`ViewCell::cell_site`].
    pub site_cells: Vec<Vec<u32>>,
    /// The id of each cell site, indexed like `site_cells`.
    pub site_ids: Vec<String>,
    /// Position of each cell site, metres east and north of the network's mean position
    /// (equirectangular: exact enough over a region), indexed like `site_cells`.
    pub site_xy: Vec<(f64, f64)>,
    /// The typical inter-site distance: the median distance from a cell site to its nearest
    /// other one, metres (0 with fewer than two sites).
    pub isd_m: f64,
    pub policy: Policy,
    /// The functions' thresholds (`PUT /son/tuning`).
    pub tuning: Tuning,
    /// How long an open-loop proposal may wait for the operator (log time, ms).
    pub pending_ttl_ms: u64,
}

/// The median over points of the distance to the nearest other point (0 with fewer than two).
/// Sorted by x, each point only looks at the points whose x is within its best distance so far.
fn median_nearest(points: &[(f64, f64)]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut nearest: Vec<f64> = (0..p.len())
        .map(|i| {
            let mut best = f64::INFINITY;
            // Co-located sites (0 m apart) say nothing about the spacing.
            let d = |j: usize| {
                let d = ((p[i].0 - p[j].0).powi(2) + (p[i].1 - p[j].1).powi(2)).sqrt();
                if d < 1.0 { f64::INFINITY } else { d }
            };
            for j in (i + 1)..p.len() {
                if p[j].0 - p[i].0 > best {
                    break;
                }
                best = best.min(d(j));
            }
            for j in (0..i).rev() {
                if p[i].0 - p[j].0 > best {
                    break;
                }
                best = best.min(d(j));
            }
            best
        })
        .collect();
    nearest.sort_by(f64::total_cmp);
    nearest[nearest.len() / 2]
}

/// A stable hash of a relation's ids.
pub fn relation_key(source: &str, target: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(source.as_bytes());
    h.write(b"/");
    h.write(target.as_bytes());
    h.finish()
}

/// What the functions read of one cell (its KPI fields are set by [`RadioView::refresh`]).
fn view_cell(c: &Cell, own: bool, cell_site: u32) -> ViewCell {
    ViewCell {
        pci: c.pci,
        arfcn: c.arfcn,
        rat: c.rat,
        version: c.version,
        hysteresis: c.hysteresis,
        time_to_trigger_ms: c.time_to_trigger_ms,
        own,
        cell_site,
        down: c.admin_state != AdminState::Unlocked || c.energy_saving == EnergySaving::Dormant,
        dormant: c.energy_saving == EnergySaving::Dormant,
        azimuth: c.azimuth,
        electrical_tilt: c.electrical_tilt,
        tilt_min: c.tilt_box.min,
        max_tx_power_dbm: c.max_tx_power_dbm,
        tilt_max: c.tilt_box.max,
        prb_permille: None,
        kpi_end_ms: 0,
        serves_nobody: false,
        compensating: [Param::ElectricalTilt, Param::MaxTxPowerDbm]
            .iter()
            .any(|p| {
                c.last_change
                    .get(p)
                    .is_some_and(|s| s.by == Function::OutageCompensation)
            }),
    }
}

fn view_relation(r: &Relation, target: u32) -> ViewRelation {
    ViewRelation {
        key: relation_key(&r.source, &r.target),
        target,
        cio_db: r.cio_db,
        ho_allowed: r.ho_allowed,
        remove_allowed: r.remove_allowed,
        version: r.version,
    }
}

impl RadioView {
    /// Refreshes what changes without a configuration change: the replicated KPI summaries,
    /// the coordination policy and the functions' tuning.
    pub fn refresh(&mut self, image: &NetworkImage) {
        for (i, id) in self.ids.iter().enumerate() {
            let kpi = image.kpis.get(id);
            let cell = &mut self.cells[i];
            cell.prb_permille = kpi.map(|k| k.prb_dl_permille);
            cell.kpi_end_ms = kpi.map_or(0, |k| k.period_end_ms);
            cell.serves_nobody =
                !cell.down && kpi.is_some_and(|k| k.rrc_conn_mean == 0 && k.prb_dl_permille == 0);
        }
        self.policy = image.policy.clone();
        self.tuning = image.son.tuning.clone();
        self.pending_ttl_ms = image.son.policy.pending_ttl_ms;
    }

    /// Captures the view of `site` (its own cells: those whose antennas the node of `site`
    /// controls, see [`NetworkImage::controls`]).
    pub fn capture(image: &NetworkImage, site: &str) -> RadioView {
        let n = image.cells.len();
        let mut v = RadioView {
            ids: Vec::with_capacity(n),
            index: FastMap::with_capacity_and_hasher(n, Default::default()),
            cells: Vec::with_capacity(n),
            out: vec![Vec::new(); n],
            incoming: vec![Vec::new(); n],
            own: Vec::new(),
            site_cells: Vec::new(),
            site_ids: Vec::new(),
            site_xy: Vec::new(),
            isd_m: 0.0,
            // Set with the KPIs by `refresh` at the end.
            policy: Policy::default(),
            tuning: Tuning::default(),
            pending_ttl_ms: 0,
        };
        let mut site_index: FastMap<&str, u32> = FastMap::default();
        let n_sites = image.sites.len().max(1) as f64;
        let lat0 = image.sites.values().map(|s| s.lat).sum::<f64>() / n_sites;
        let lon0 = image.sites.values().map(|s| s.lon).sum::<f64>() / n_sites;
        let metres = |lat: f64, lon: f64| {
            const R: f64 = 6_371_000.0;
            (
                (lon - lon0).to_radians() * R * lat0.to_radians().cos(),
                (lat - lat0).to_radians() * R,
            )
        };
        for (i, c) in image.cells.values().enumerate() {
            let next = site_index.len() as u32;
            let cell_site = *site_index.entry(c.site.as_str()).or_insert_with(|| {
                v.site_cells.push(Vec::new());
                v.site_ids.push(c.site.clone());
                v.site_xy.push(
                    image
                        .sites
                        .get(&c.site)
                        .map_or((0.0, 0.0), |s| metres(s.lat, s.lon)),
                );
                next
            });
            v.site_cells[cell_site as usize].push(i as u32);
            let own = image.controls(site, c);
            v.ids.push(c.id.clone());
            v.index.insert(c.id.clone(), i as u32);
            v.cells.push(view_cell(c, own, cell_site));
            if own {
                v.own.push(i as u32);
            }
        }
        for r in image.relations.values() {
            let (Some(&s), Some(&t)) = (v.index.get(&r.source), v.index.get(&r.target)) else {
                continue;
            };
            v.out[s as usize].push(view_relation(r, t));
            v.incoming[t as usize].push(s);
        }
        v.isd_m = median_nearest(&v.site_xy);
        v.refresh(image);
        v
    }

    /// Brings the view up to date with the `cells` and `relations` that entries applied since
    /// it was captured changed, at the cost of those alone: at 100,000 cells a full capture
    /// takes most of a second, and SON changes land every period. Returns whether anything
    /// the PCI search reads changed (a PCI, a channel, a cell going down or up, a relation
    /// added or removed), or `None` when only a full capture can bring it up to date: a cell
    /// added, removed or moved to another cell site, or one whose control moved.
    pub fn update(
        &mut self,
        image: &NetworkImage,
        site: &str,
        cells: &HashSet<CellId>,
        relations: &HashSet<RelationKey>,
    ) -> Option<bool> {
        let mut pci_inputs = false;
        for id in cells {
            let i = *self.index.get(id)?;
            let c = image.cells.get(id)?;
            let old = &self.cells[i as usize];
            if self.site_ids[old.cell_site as usize] != c.site || old.own != image.controls(site, c)
            {
                return None;
            }
            let mut new = view_cell(c, old.own, old.cell_site);
            pci_inputs |= new.pci != old.pci || new.arfcn != old.arfcn || new.down != old.down;
            // Set again by `refresh`, which runs after every update.
            (new.prb_permille, new.kpi_end_ms, new.serves_nobody) =
                (old.prb_permille, old.kpi_end_ms, old.serves_nobody);
            self.cells[i as usize] = new;
        }
        for key in relations {
            let (Some(&s), Some(&t)) = (self.index.get(&key.0), self.index.get(&key.1)) else {
                continue;
            };
            let out = &mut self.out[s as usize];
            let at = out.iter().position(|r| r.target == t);
            match (image.relations.get(key), at) {
                (Some(r), Some(at)) => out[at] = view_relation(r, t),
                (Some(r), None) => {
                    // In the order a capture gives: by target id, and by source id.
                    let ids = &self.ids;
                    let pos = out.partition_point(|x| ids[x.target as usize] < key.1);
                    out.insert(pos, view_relation(r, t));
                    let incoming = &mut self.incoming[t as usize];
                    let pos = incoming.partition_point(|&x| ids[x as usize] < key.0);
                    incoming.insert(pos, s);
                    pci_inputs = true;
                }
                (None, Some(at)) => {
                    out.remove(at);
                    self.incoming[t as usize].retain(|&x| x != s);
                    pci_inputs = true;
                }
                (None, None) => {}
            }
        }
        self.refresh(image);
        Some(pci_inputs)
    }

    /// Whether another site's cell `c` looks like it is in outage from here: its summary says
    /// it serves nobody while it radiates ([`ViewCell::serves_nobody`]). Own cells are judged by
    /// detection ([`super::PeriodInput::outage`]), which sees their counters.
    pub fn seems_in_outage(&self, c: u32) -> bool {
        let cell = self.cell(c);
        !cell.own && cell.serves_nobody
    }

    /// Whether another site's cell `c` has gone silent by the period ending at `end_ms`: it
    /// radiates (neither locked nor dormant), had a replicated KPI summary, and none for more
    /// than three periods — what a hard outage at another site looks like from here (its site
    /// detects it, but only its own functions learn of that).
    pub fn silent(&self, c: u32, end_ms: u64, period_ms: u32) -> bool {
        let cell = self.cell(c);
        !cell.own
            && !cell.down
            && cell.kpi_end_ms > 0
            && cell.kpi_end_ms + 3 * u64::from(period_ms) < end_ms
    }

    /// Distance between the cell sites of two cells, metres.
    pub fn distance_m(&self, a: u32, b: u32) -> f64 {
        let (p, q) = (
            self.site_xy[self.cell(a).cell_site as usize],
            self.site_xy[self.cell(b).cell_site as usize],
        );
        ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt()
    }

    pub fn id(&self, c: u32) -> &str {
        &self.ids[c as usize]
    }

    pub fn cell(&self, c: u32) -> &ViewCell {
        &self.cells[c as usize]
    }

    /// First-order neighbours as [`RadioView::neighbours`] gives them, without allocating: in
    /// any order, possibly twice, possibly `c` itself.
    pub fn adjacent(&self, c: u32) -> impl Iterator<Item = u32> + '_ {
        self.out[c as usize]
            .iter()
            .map(|r| r.target)
            .chain(self.incoming[c as usize].iter().copied())
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

    /// The other cells of `c`'s cell site.
    pub fn co_site(&self, c: u32) -> impl Iterator<Item = u32> + '_ {
        self.site_cells[self.cell(c).cell_site as usize]
            .iter()
            .copied()
            .filter(move |x| *x != c)
    }

    /// A cell that shares `target`'s PCI on its frequency as `source` sees it: `source` itself
    /// (a collision) or another of `source`'s neighbours (a confusion). Handovers from `source`
    /// to `target` then fail for a reason the PCI function fixes, not the mobility functions.
    pub fn pci_clash(&self, source: u32, target: u32) -> Option<u32> {
        let t = self.cell(target);
        let same =
            |x: u32| x != target && self.cell(x).pci == t.pci && self.cell(x).arfcn == t.arfcn;
        if same(source) {
            return Some(source);
        }
        self.neighbours(source).into_iter().find(|x| same(*x))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::son::testing::{cell, image, relation};

    fn set<T: Clone + Eq + std::hash::Hash>(items: &[T]) -> HashSet<T> {
        items.iter().cloned().collect()
    }

    fn key(s: &str, t: &str) -> RelationKey {
        (s.into(), t.into())
    }

    #[test]
    fn an_updated_view_is_the_view_a_full_capture_gives() {
        let mut img = image(
            vec![
                cell("A1", 1, 100),
                cell("A2", 2, 100),
                cell("A3", 3, 100),
                cell("Z1", 4, 100),
            ],
            vec![
                relation("A1", "A3"),
                relation("A3", "A1"),
                relation("Z1", "A3"),
            ],
        );
        let mut v = RadioView::capture(&img, "site-a");
        // A PCI, a tilt, a relation added in the middle of others, one removed, one changed.
        img.cells.get_mut("A2").unwrap().pci = 9;
        img.cells.get_mut("Z1").unwrap().electrical_tilt = 40;
        let mut added = img.relations[&key("A1", "A3")].clone();
        added.target = "A2".into();
        img.relations.insert(key("A1", "A2"), added.clone());
        added.source = "Z1".into();
        img.relations.insert(key("Z1", "A2"), added);
        img.relations.remove(&key("A3", "A1"));
        img.relations.get_mut(&key("Z1", "A3")).unwrap().cio_db = 3;
        let cells = set::<CellId>(&["A2".into(), "Z1".into()]);
        let relations = set(&[
            key("A1", "A2"),
            key("Z1", "A2"),
            key("A3", "A1"),
            key("Z1", "A3"),
            // Of a cell the view does not know: skipped, as a capture skips it.
            key("A1", "X9"),
        ]);
        assert_eq!(v.update(&img, "site-a", &cells, &relations), Some(true));
        let full = RadioView::capture(&img, "site-a");
        assert_eq!(format!("{v:?}"), format!("{full:?}"));
        // A tilt alone is nothing the PCI search reads.
        img.cells.get_mut("A1").unwrap().electrical_tilt = 20;
        let only_tilt = set::<CellId>(&["A1".into()]);
        assert_eq!(
            v.update(&img, "site-a", &only_tilt, &HashSet::new()),
            Some(false)
        );
        assert_eq!(
            format!("{v:?}"),
            format!("{:?}", RadioView::capture(&img, "site-a"))
        );
    }

    #[test]
    fn a_cell_added_removed_or_moved_to_another_cell_site_needs_a_full_capture() {
        let mut img = image(vec![cell("A1", 1, 100), cell("Z1", 2, 100)], vec![]);
        let mut v = RadioView::capture(&img, "site-a");
        let mut new = img.cells["A1"].clone();
        new.id = "A7".into();
        img.cells.insert("A7".into(), new);
        let none = HashSet::new();
        assert_eq!(
            v.update(&img, "site-a", &set::<CellId>(&["A7".into()]), &none),
            None
        );
        img.cells.remove("Z1");
        assert_eq!(
            v.update(&img, "site-a", &set::<CellId>(&["Z1".into()]), &none),
            None
        );
        img.cells.get_mut("A1").unwrap().site = "Z".into();
        assert_eq!(
            v.update(&img, "site-a", &set::<CellId>(&["A1".into()]), &none),
            None
        );
    }
}
