//! The simulated network's layout: sites on a hexagonal grid, three sectors each, neighbour
//! relations between facing sectors, a clean PCI plan — and the planted problems the SON
//! functions should find.
//!
//! The layout is a pure function of (cells, seed, regions), so the simulator and the image it
//! exports always agree.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod overshoot;
pub use overshoot::{OVERSHOOTER_MAST_M, OVERSHOOTER_TILT};

/// Inter-site distance of the default (urban) layout, metres.
pub const ISD_M: f64 = 1000.0;
/// Transmit power every cell of the default layout is configured with, dBm: a 40 W radio run
/// at its full rating, as urban macro cells are (no headroom for outage compensation beyond
/// what the node allows, `MAX_POWER_DBM`).
pub const CONFIGURED_POWER_DBM: i16 = 46;
/// Downlink EARFCN of every simulated LTE cell (band 3, 1815 MHz).
pub const EARFCN: u32 = 1300;
/// A capacity layer on every fifth site: a fourth cell, NR (band n78, 3.55 GHz, NR-ARFCN),
/// pointing like the site's first LTE sector (its coverage partner, which energy saving can
/// hand its users to). PCI rules are per frequency, and NR's PCIs above 503 occur.
pub const NR_ARFCN: u32 = 636_666;
/// The first NR-ARFCN (TS 38.104): a cell on a channel from here on is NR.
pub const FIRST_NR_ARFCN: u32 = 600_000;

/// Whether a simulated cell on `arfcn` is NR (else LTE).
pub fn is_nr(arfcn: u32) -> bool {
    arfcn >= FIRST_NR_ARFCN
}

/// Largest legal PCI on `arfcn`: 503 for LTE (TS 36.211), 1007 for NR (TS 38.211).
pub fn max_pci(arfcn: u32) -> u16 {
    if is_nr(arfcn) { 1007 } else { 503 }
}

#[derive(Debug, Clone)]
pub struct SimSite {
    pub id: String,
    pub x: f64,
    pub y: f64,
    pub lat: f64,
    pub lon: f64,
    /// The sonraft site (node) that owns this cell site.
    pub region: String,
    /// Antenna height above the users' ground, metres ([`MAST_M`]; more for an overshooter).
    pub mast_m: f32,
}

/// Antenna height of a normal site, metres (TR 38.901 UMa).
pub const MAST_M: f32 = 25.0;
/// Electrical tilt every cell is installed with, 0.1°.
pub const INSTALLED_TILT: i16 = 40;

#[derive(Debug, Clone)]
pub struct SimCell {
    pub id: String,
    pub site: usize,
    pub sector: u8,
    pub azimuth: u16,
    pub arfcn: u32,
    pub pci: u16,
    /// PRB demand (0..1) with neutral configuration.
    pub demand: f64,
    /// The delay (dB-equivalent of hysteresis + time-to-trigger) at which handovers out of
    /// this cell are neither too late nor too early; depends on user speed.
    pub optimal_delay_db: f64,
    /// Electrical tilt it was installed with (0.1°): what the exported image and the antenna
    /// start with.
    pub installed_tilt: i16,
}

#[derive(Debug, Clone)]
pub struct SimRelation {
    pub source: usize,
    pub target: usize,
    /// Handover attempts per period at neutral configuration (0: a dead relation).
    pub base_attempts: f64,
    /// Success ratio before mobility and PCI effects (low: a persistently failing relation).
    pub base_success: f64,
    pub remove_allowed: bool,
    /// Not in the exported image: a cell the users measure at this source's border that the
    /// planner left out (added by the simulator from the radio layer; ANR can find it).
    pub latent: bool,
}

/// What was planted, for tests and the demo.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    pub overloaded: Vec<usize>,
    pub pci_collisions: Vec<(usize, usize)>,
    pub pci_confusions: Vec<(usize, usize, usize)>,
    pub late_cells: Vec<usize>,
    pub early_cells: Vec<usize>,
    pub dead_relations: Vec<usize>,
    pub failing_relations: Vec<usize>,
    /// Overshooting cells ([`Topology::plant_overshooter`]).
    pub overshooters: Vec<usize>,
}

/// How a network is deployed: how far apart its sites stand and the power its cells are
/// configured with. The default is the urban layout every test and benchmark was built on;
/// a sparser one (suburban, rural) is where an outage leaves users without any coverage.
/// The status endpoint's planted holes and hotspots (0.4 × [`ISD_M`] out from their cell)
/// and its overshooter far-user share still assume the urban distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deployment {
    /// Inter-site distance, metres.
    pub isd_m: f64,
    /// Configured maximum transmit power of every cell, dBm (what the exported image and the
    /// antennas start with). Operators commonly configure cells below what the radio can do
    /// (43 dBm on a 46–49 dBm radio): the rest is headroom for outage compensation.
    pub power_dbm: i16,
    /// Carriers per sector: 1 (three LTE sectors a site, and an NR capacity cell on every
    /// fifth site) or 2 (three LTE and three NR sectors pointing alike: six cells a base
    /// station).
    pub carriers: u8,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            isd_m: ISD_M,
            power_dbm: CONFIGURED_POWER_DBM,
            carriers: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    /// Where the sites stand and what power their cells are configured with.
    pub deployment: Deployment,
    pub sites: Vec<SimSite>,
    pub cells: Vec<SimCell>,
    pub relations: Vec<SimRelation>,
    pub problems: Problems,
}

/// Axial hex coordinates in spiral order around the origin.
fn hex_spiral(n: usize) -> Vec<(i32, i32)> {
    const DIRS: [(i32, i32); 6] = [(1, 0), (1, -1), (0, -1), (-1, 0), (-1, 1), (0, 1)];
    let mut out = vec![(0, 0)];
    let mut ring = 1;
    while out.len() < n {
        let (mut q, mut r) = (-ring, ring);
        for (dq, dr) in DIRS {
            for _ in 0..ring {
                out.push((q, r));
                q += dq;
                r += dr;
            }
        }
        ring += 1;
    }
    out.truncate(n);
    out
}

fn bearing_deg(from: (f64, f64), to: (f64, f64)) -> f64 {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    (dx.atan2(dy).to_degrees() + 360.0) % 360.0
}

fn angle_diff(a: f64, b: f64) -> f64 {
    let d = (a - b).abs() % 360.0;
    d.min(360.0 - d)
}

impl Topology {
    /// Builds a network of `cells` cells (three LTE sectors per site, plus an NR capacity cell
    /// on every fifth site; the last site may have fewer), its cell sites split between
    /// `regions` by angle around the centre.
    pub fn build(cells: usize, seed: u64, regions: &[String]) -> Topology {
        Topology::build_deployed(cells, seed, regions, Deployment::default())
    }

    /// [`Topology::build`] with another deployment: the same grid, PCI plan, relations and
    /// planted problems, scaled to `deployment.isd_m`.
    pub fn build_deployed(
        cells: usize,
        seed: u64,
        regions: &[String],
        deployment: Deployment,
    ) -> Topology {
        let isd_m = deployment.isd_m;
        let mut rng = StdRng::seed_from_u64(seed);
        let dual = deployment.carriers >= 2;
        let cells_of = |site: usize| match (dual, site.is_multiple_of(5)) {
            (true, _) => 6,
            (false, true) => 4,
            (false, false) => 3,
        };
        let mut n_sites = 0;
        let mut counted = 0;
        while counted < cells.max(1) {
            counted += cells_of(n_sites);
            n_sites += 1;
        }
        let coords = hex_spiral(n_sites);
        let regions: Vec<String> = if regions.is_empty() {
            vec!["site-a".into()]
        } else {
            regions.to_vec()
        };
        let sites: Vec<SimSite> = coords
            .iter()
            .enumerate()
            .map(|(i, &(q, r))| {
                let x = isd_m * (f64::from(q) + f64::from(r) / 2.0);
                let y = isd_m * f64::from(r) * 3f64.sqrt() / 2.0;
                let angle = (y.atan2(x).to_degrees() + 360.0) % 360.0;
                let region = regions
                    [((angle / 360.0 * regions.len() as f64) as usize).min(regions.len() - 1)]
                .clone();
                SimSite {
                    id: format!("S{i:05}"),
                    x,
                    y,
                    lat: 48.137 + y / 111_320.0,
                    lon: 11.575 + x / (111_320.0 * 48.137f64.to_radians().cos()),
                    region,
                    mast_m: MAST_M,
                }
            })
            .collect();

        let at: std::collections::HashMap<(i32, i32), usize> =
            coords.iter().enumerate().map(|(i, c)| (*c, i)).collect();
        let within = |i: usize, radius: i32| -> Vec<usize> {
            let (q, r) = coords[i];
            let mut out = Vec::new();
            for dq in -radius..=radius {
                for dr in (-radius).max(-dq - radius)..=radius.min(-dq + radius) {
                    if let Some(&j) = at.get(&(q + dq, r + dr))
                        && j != i
                    {
                        out.push(j);
                    }
                }
            }
            out
        };

        // A clean PCI plan: one group of three per site, reused only beyond four rings.
        let mut group = vec![0u16; n_sites];
        for i in 0..n_sites {
            let near: BTreeSet<u16> = within(i, 4)
                .into_iter()
                .filter(|&j| j < i)
                .map(|j| group[j])
                .collect();
            group[i] = (0..168)
                .find(|g| !near.contains(g))
                .unwrap_or((i % 168) as u16);
        }

        let mut cell_list: Vec<SimCell> = Vec::with_capacity(cells);
        for (s, site) in sites.iter().enumerate() {
            for sector in 0..cells_of(s) as u8 {
                if cell_list.len() == cells {
                    break;
                }
                let overlay = sector >= 3;
                let arfcn = if overlay { NR_ARFCN } else { EARFCN };
                // NR plans its PCIs in the upper half of its range, above LTE's.
                let pci = if overlay {
                    504 + group[s] * 3 + u16::from(sector - 3)
                } else {
                    group[s] * 3 + u16::from(sector)
                };
                let azimuth = if overlay {
                    // Like the LTE sector it overlays (the site's first, for a capacity cell).
                    cell_list[cell_list.len() - 3].azimuth
                } else {
                    (u16::from(sector) * 120 + rng.random_range(0..10)) % 360
                };
                cell_list.push(SimCell {
                    id: format!("{}-{}", site.id, sector + 1),
                    site: s,
                    sector,
                    azimuth,
                    arfcn,
                    pci,
                    demand: rng.random_range(0.25..0.6),
                    optimal_delay_db: 4.0,
                    installed_tilt: INSTALLED_TILT,
                })
            }
        }

        // Relations: co-site sectors, and sectors of the first ring that face each other.
        let mut by_site: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, c) in cell_list.iter().enumerate() {
            by_site.entry(c.site).or_default().push(i);
        }
        let mut relations = Vec::new();
        for (i, c) in cell_list.iter().enumerate() {
            let here = (sites[c.site].x, sites[c.site].y);
            let mut candidates: Vec<usize> = by_site.get(&c.site).cloned().unwrap_or_default();
            for s in within(c.site, 1) {
                candidates.extend(by_site.get(&s).into_iter().flatten());
            }
            for j in candidates {
                let d = &cell_list[j];
                if i == j || d.arfcn != c.arfcn && d.site != c.site {
                    continue;
                }
                let there = (sites[d.site].x, sites[d.site].y);
                let dist = ((here.0 - there.0).powi(2) + (here.1 - there.1).powi(2)).sqrt();
                let related = if d.site == c.site {
                    true
                } else if dist < 1.1 * isd_m {
                    angle_diff(bearing_deg(here, there), f64::from(c.azimuth)) <= 90.0
                        && angle_diff(bearing_deg(there, here), f64::from(d.azimuth)) <= 90.0
                } else {
                    false
                };
                if related {
                    relations.push(SimRelation {
                        source: i,
                        target: j,
                        base_attempts: rng.random_range(20.0..80.0),
                        base_success: 0.985,
                        remove_allowed: true,
                        latent: false,
                    });
                }
            }
        }

        let mut topo = Topology {
            deployment,
            sites,
            cells: cell_list,
            relations,
            problems: Problems::default(),
        };
        topo.plant(&mut rng);
        topo
    }

    /// Indexes of the relations whose source is each cell.
    pub fn relations_by_source(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.cells.len()];
        for (i, r) in self.relations.iter().enumerate() {
            out[r.source].push(i);
        }
        out
    }

    /// Plants the problems, each on distinct cells away from each other.
    fn plant(&mut self, rng: &mut StdRng) {
        let n = self.cells.len();
        let by_source = self.relations_by_source();
        let adjacency: Vec<Vec<usize>> = by_source
            .iter()
            .map(|rels| rels.iter().map(|r| self.relations[*r].target).collect())
            .collect();
        let neighbours = |c: usize| -> Vec<usize> { adjacency[c].clone() };
        let count =
            |share: f64| ((n as f64 * share).round() as usize).max(if n >= 30 { 2 } else { 1 });
        let mut used: BTreeSet<usize> = BTreeSet::new();
        let pick = |rng: &mut StdRng, used: &mut BTreeSet<usize>| -> Option<usize> {
            for _ in 0..200 {
                let c = rng.random_range(0..n);
                let near = neighbours(c);
                if !used.contains(&c) && near.iter().all(|x| !used.contains(x)) && near.len() >= 3 {
                    used.insert(c);
                    used.extend(near);
                    return Some(c);
                }
            }
            None
        };
        for _ in 0..count(0.02) {
            let Some(c) = pick(rng, &mut used) else { break };
            self.cells[c].demand = rng.random_range(0.93..0.99);
            for nb in neighbours(c) {
                self.cells[nb].demand = rng.random_range(0.2..0.4);
            }
            self.problems.overloaded.push(c);
        }
        for _ in 0..count(0.01) {
            let Some(c) = pick(rng, &mut used) else { break };
            // A collision is between cells on one carrier.
            let nb: Vec<usize> = neighbours(c)
                .into_iter()
                .filter(|x| self.cells[*x].arfcn == self.cells[c].arfcn)
                .collect();
            if nb.is_empty() {
                continue;
            }
            let other = nb[rng.random_range(0..nb.len())];
            self.cells[other].pci = self.cells[c].pci;
            self.problems.pci_collisions.push((c, other));
        }
        for _ in 0..count(0.01) {
            let Some(c) = pick(rng, &mut used) else { break };
            let nb: Vec<usize> = neighbours(c)
                .into_iter()
                .filter(|x| self.cells[*x].arfcn == self.cells[c].arfcn)
                .collect();
            if nb.len() < 2 {
                continue;
            }
            let (a, b) = (nb[0], nb[nb.len() - 1]);
            self.cells[b].pci = self.cells[a].pci;
            self.problems.pci_confusions.push((c, a, b));
        }
        for _ in 0..count(0.02) {
            let Some(c) = pick(rng, &mut used) else { break };
            self.cells[c].optimal_delay_db = 2.0;
            self.problems.late_cells.push(c);
        }
        for _ in 0..count(0.01) {
            let Some(c) = pick(rng, &mut used) else { break };
            self.cells[c].optimal_delay_db = 5.5;
            self.problems.early_cells.push(c);
        }
        for _ in 0..count(0.01) {
            let Some(c) = pick(rng, &mut used) else { break };
            let rels = by_source[c].clone();
            let dead = rels[0];
            self.relations[dead].base_attempts = 0.0;
            self.problems.dead_relations.push(dead);
            let failing = rels[rels.len() - 1];
            if failing != dead {
                self.relations[failing].base_success = 0.35;
                self.problems.failing_relations.push(failing);
            }
            // One relation of the cell is protected from pruning, to prove the rule holds.
            if rels.len() > 2 {
                self.relations[rels[1]].remove_allowed = false;
            }
        }
    }

    /// The image as `POST /image/import` takes it.
    pub fn image_json(&self) -> Value {
        let sites: Vec<Value> = self
            .sites
            .iter()
            .map(|s| json!({"id": s.id, "name": format!("cell site {}", s.id), "lat": s.lat, "lon": s.lon, "region": s.region}))
            .collect();
        let cells: Vec<Value> = self
            .cells
            .iter()
            .map(|c| {
                json!({
                    "id": c.id, "site": self.sites[c.site].id, "rat": if is_nr(c.arfcn) { "NR" } else { "LTE" }, "pci": c.pci, "arfcn": c.arfcn,
                    "azimuth": c.azimuth, "electrical_tilt": c.installed_tilt, "max_tx_power_dbm": self.deployment.power_dbm, "hysteresis": 4,
                    "time_to_trigger_ms": 320, "a3_offset": 6,
                })
            })
            .collect();
        let relations: Vec<Value> = self
            .relations
            .iter()
            .filter(|r| !r.latent)
            .map(|r| {
                json!({"source": self.cells[r.source].id, "target": self.cells[r.target].id, "cio_db": 0,
                       "ho_allowed": true, "remove_allowed": r.remove_allowed, "origin": "anr"})
            })
            .collect();
        json!({"sites": sites, "cells": cells, "relations": relations})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        ["site-a", "site-b", "site-c"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn the_layout_is_a_function_of_its_inputs() {
        let a = Topology::build(300, 7, &regions());
        let b = Topology::build(300, 7, &regions());
        assert_eq!(a.image_json(), b.image_json());
        assert_eq!(a.cells.len(), 300);
    }

    #[test]
    fn every_region_owns_cells_and_relations_cross_region_borders() {
        let t = Topology::build(300, 1, &regions());
        for r in regions() {
            assert!(t.sites.iter().any(|s| s.region == r), "{r} owns nothing");
        }
        let crossing = t
            .relations
            .iter()
            .filter(|r| {
                t.sites[t.cells[r.source].site].region != t.sites[t.cells[r.target].site].region
            })
            .count();
        assert!(crossing > 0);
    }

    #[test]
    fn problems_are_planted() {
        let t = Topology::build(300, 1, &regions());
        let p = &t.problems;
        assert!(
            !p.overloaded.is_empty()
                && !p.pci_collisions.is_empty()
                && !p.pci_confusions.is_empty()
        );
        assert!(!p.late_cells.is_empty() && !p.dead_relations.is_empty());
        for &(a, b) in &p.pci_collisions {
            assert_eq!(t.cells[a].pci, t.cells[b].pci);
        }
    }

    #[test]
    fn planted_pcis_stay_legal_for_their_carrier_and_collisions_share_one() {
        for seed in 1..30 {
            for cells in [30, 300, 1000] {
                let t = Topology::build(cells, seed, &regions());
                for c in &t.cells {
                    assert!(
                        c.pci <= max_pci(c.arfcn),
                        "seed {seed}: {} pci {}",
                        c.id,
                        c.pci
                    );
                }
                for &(a, b) in &t.problems.pci_collisions {
                    assert_eq!(t.cells[a].arfcn, t.cells[b].arfcn);
                }
            }
        }
    }

    #[test]
    fn with_two_carriers_every_site_has_three_lte_and_three_nr_sectors_pointing_alike() {
        let dual = Deployment {
            carriers: 2,
            ..Deployment::default()
        };
        let t = Topology::build_deployed(60, 1, &regions(), dual);
        assert_eq!(t.cells.len(), 60);
        assert_eq!(t.sites.len(), 10, "six cells a base station");
        for site in 0..t.sites.len() {
            let cells: Vec<&SimCell> = t.cells.iter().filter(|c| c.site == site).collect();
            assert_eq!(cells.len(), 6);
            for k in 0..3 {
                let (lte, nr) = (cells[k], cells[k + 3]);
                assert_eq!((lte.arfcn, nr.arfcn), (EARFCN, NR_ARFCN));
                assert_eq!(lte.azimuth, nr.azimuth);
                assert!(nr.pci >= 504 && nr.pci <= 1007);
            }
        }
    }

    #[test]
    fn every_fifth_site_has_an_nr_capacity_cell_pointing_like_its_first_sector() {
        let t = Topology::build(300, 1, &regions());
        assert_eq!(t.cells.len(), 300);
        let overlays: Vec<&SimCell> = t.cells.iter().filter(|c| c.sector == 3).collect();
        assert!(!overlays.is_empty());
        for o in overlays {
            assert!(is_nr(o.arfcn) && t.sites[o.site].id.ends_with(['0', '5']));
            let first = t
                .cells
                .iter()
                .find(|c| c.site == o.site && c.sector == 0)
                .unwrap();
            assert_eq!((first.azimuth, first.arfcn), (o.azimuth, EARFCN));
        }
    }

    #[test]
    fn nr_cells_use_pcis_above_lte_range_and_report_prb_counts_of_their_carrier() {
        use rand::SeedableRng;
        use sonraft_protocol::cell_counter as cc;

        let t = Topology::build(300, 1, &regions());
        let nr: Vec<usize> = (0..t.cells.len())
            .filter(|c| is_nr(t.cells[*c].arfcn))
            .collect();
        assert!(!nr.is_empty(), "no NR cell");
        assert!(nr.iter().all(|c| (504..=1007).contains(&t.cells[*c].pci)));
        let export = t.image_json();
        let rats: Vec<&str> = export["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["rat"].as_str())
            .collect();
        assert_eq!(rats.iter().filter(|r| **r == "NR").count(), nr.len());

        let by_source = t.relations_by_source();
        let configs: Vec<_> = (0..t.cells.len())
            .map(|c| crate::model::initial_config(&t, c, &by_source))
            .collect();
        let relations = vec![crate::model::RelationState::NEUTRAL; t.relations.len()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut grid = crate::radio::RadioGrid::build(&t, 1);
        let clock = crate::model::PeriodClock {
            end_ms: 0,
            period_ms: 1000,
            profile: 1.0,
        };
        let out = crate::model::run_period(
            &t, &by_source, &mut grid, &configs, &relations, clock, &mut rng,
        );
        for (c, r) in out.reports.iter().enumerate() {
            let avail = if is_nr(t.cells[c].arfcn) { 273 } else { 100 };
            assert_eq!(r.cell[cc::PRB_AVAIL_DL], avail);
            assert!(r.cell[cc::PRB_USED_DL] <= avail);
        }
    }
}
