//! The coverage counters of each cell, from one period of the radio layer: where its users
//! are (a timing-advance distribution) and who lost it for coverage (radio link failures).
//!
//! - **`TA.Distr.Bin0..3`**: the users a cell serves, by distance from its mast in the bins of
//!   [`TA_BIN_EDGES_M`]. A real eNodeB reads the distance from each user's timing advance
//!   (78 m per LTE step); here it is the bin's distance, so a user is where its bin is.
//! - **`RLF.Coverage`**: the users of bins no carrier covers (under −124 dBm or −6 dB SINR),
//!   counted at the strongest cell they hear: where a real network receives their RLF reports
//!   naming it as the last serving cell, with an RSRP under the coverage floor.
//!
//! Both are users averaged over the period, like `RRC.ConnMean`. A planted coverage hole
//! (`RadioGrid::set_hole`) raises `RLF.Coverage` at the cells whose area it is in; an
//! overshooting cell (`Topology::plant_overshooter`) has users in its far bins.

use sonraft_protocol::{TA_BIN_EDGES_M, cell_counter as cc};

use super::{Choice, RadioGrid, USERS_PER_MBPS};
use crate::topology::Topology;

/// One cell's coverage counters for one period, users.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellCoverage {
    /// Users served, by distance from the mast (bins of [`TA_BIN_EDGES_M`]).
    pub ta_users: [f32; cc::TA_BINS],
    /// Users of uncovered bins whose strongest cell this is.
    pub lost_users: f32,
}

impl CellCoverage {
    /// Share of the users served at least `from_m` from the mast (0 without users).
    pub fn share_beyond(&self, from_m: u32) -> f64 {
        let total: f32 = self.ta_users.iter().sum();
        if total <= 0.0 {
            return 0.0;
        }
        let far: f32 = (0..cc::TA_BINS)
            .filter(|k| *k > 0 && TA_BIN_EDGES_M[k - 1] >= from_m)
            .map(|k| self.ta_users[k])
            .sum();
        f64::from(far / total)
    }
}

/// The timing-advance bin of a distance.
pub fn ta_bin(d_m: f32) -> usize {
    TA_BIN_EDGES_M
        .iter()
        .position(|e| d_m < *e as f32)
        .unwrap_or(cc::TA_BINS - 1)
}

/// The cell a bin's users hear best when no carrier covers it: the first carrier's choice
/// (`u32::MAX`: none).
pub(super) fn strongest(chosen: &[Choice]) -> u32 {
    chosen
        .iter()
        .map(|c| c.cell)
        .find(|c| *c != u32::MAX)
        .unwrap_or(u32::MAX)
}

impl RadioGrid {
    /// Every cell's coverage counters, from the selection of the period just run.
    pub(super) fn coverage(&self, topo: &Topology, profile: f32) -> Vec<CellCoverage> {
        let nc = self.carriers.len();
        let mut out = vec![CellCoverage::default(); topo.cells.len()];
        let dist = |b: usize, c: u32| {
            let site = &topo.sites[topo.cells[c as usize].site];
            let (x, y) = self.xy[b];
            ((x - site.x as f32).powi(2) + (y - site.y as f32).powi(2)).sqrt()
        };
        for b in 0..self.bins {
            for k in 0..nc {
                let (v, d) = self.served_by[b * nc + k];
                if v != u32::MAX {
                    out[v as usize].ta_users[ta_bin(dist(b, v))] += d * USERS_PER_MBPS;
                }
            }
            let lost = self.lost_to[b];
            if lost != u32::MAX {
                let demand = self.demand[b] * self.demand_mult[b] * profile;
                out[lost as usize].lost_users += demand * USERS_PER_MBPS;
            }
        }
        out
    }

    /// Demand within `radius_m` of (x, y) in the period just run, and how much of it was
    /// served, Mbit/s (`load`: that period's cell loads; `profile`: its share of busy-hour
    /// demand): what a planted hole takes away, and what the node wins back.
    pub fn area_service(
        &self,
        x: f32,
        y: f32,
        radius_m: f32,
        load: &[f64],
        profile: f32,
    ) -> (f64, f64) {
        let nc = self.carriers.len();
        let (mut demand, mut served) = (0.0f64, 0.0f64);
        for b in self.area(x, y, radius_m) {
            demand += f64::from(self.demand[b] * self.demand_mult[b] * profile);
            for k in 0..nc {
                let (v, d) = self.served_by[b * nc + k];
                if v == u32::MAX {
                    continue;
                }
                let c = v as usize;
                let ratio = if self.faults[c] == Some(super::CellFault::Sleeping) {
                    0.0
                } else {
                    (1.0 / load.get(c).copied().unwrap_or(1.0).max(1e-9)).min(1.0)
                };
                served += f64::from(d) * ratio;
            }
        }
        (demand, served)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RelationState, initial_config};

    fn network() -> (
        Topology,
        Vec<Vec<usize>>,
        RadioGrid,
        Vec<sonraft_protocol::CellConfig>,
    ) {
        let mut topo = Topology::build(30, 1, &["site-a".to_string()]);
        topo.plant_overshooter("S00000-1")
            .expect("a cell of the layout");
        let by_source = topo.relations_by_source();
        let grid = RadioGrid::build(&topo, 1);
        let configs = (0..topo.cells.len())
            .map(|c| initial_config(&topo, c, &by_source))
            .collect();
        (topo, by_source, grid, configs)
    }

    #[test]
    fn an_overshooter_serves_users_beyond_its_neighbours_until_it_is_downtilted() {
        let (topo, by_source, mut grid, mut configs) = network();
        let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
        let o = topo.problems.overshooters[0];
        assert_eq!(configs[o].electrical_tilt, 0, "installed uptilted");
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        let before = out.coverage[o].share_beyond(1000);
        let normal = (0..topo.cells.len())
            .filter(|c| topo.cells[*c].site != topo.cells[o].site)
            .map(|c| out.coverage[c].share_beyond(1000))
            .fold(0.0, f64::max);
        assert!(before > 0.4, "{before}");
        assert!(before > 2.0 * normal, "{before} against {normal}");
        configs[o].electrical_tilt = 100;
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        let after = out.coverage[o].share_beyond(1000);
        assert!(after < before / 3.0, "{before} -> {after}");
        let lost: f32 = out.coverage.iter().map(|c| c.lost_users).sum();
        let users: f32 = out.coverage.iter().flat_map(|c| c.ta_users).sum();
        assert!(
            lost < 0.02 * users,
            "{lost} of {users} users lost without a hole"
        );
    }

    #[test]
    fn a_hole_makes_its_users_fail_at_the_cell_they_hear_best_and_power_wins_some_back() {
        let (topo, by_source, mut grid, mut configs) = network();
        let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
        let h = topo
            .cells
            .iter()
            .position(|c| c.id == "S00007-1")
            .expect("cell");
        let site = &topo.sites[topo.cells[h].site];
        let az = f64::from(topo.cells[h].azimuth).to_radians();
        let (x, y) = (
            (site.x + 400.0 * az.sin()) as f32,
            (site.y + 400.0 * az.cos()) as f32,
        );
        assert!(grid.set_hole(x, y, 250.0, 25.0) > 0);
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        let lost = out.coverage[h].lost_users;
        let users: f32 = out.coverage[h].ta_users.iter().sum();
        assert!(lost > 0.1 * (lost + users), "{lost} of {users}");
        let (demand, served) = grid.area_service(x, y, 250.0, &out.load, 1.0);
        configs[h].max_tx_power_dbm += 3;
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        let (_, more) = grid.area_service(x, y, 250.0, &out.load, 1.0);
        assert!(
            more > served && more < demand,
            "{served} -> {more} of {demand}"
        );
        assert!(out.coverage[h].lost_users < lost);
    }

    #[test]
    fn timing_advance_bins_follow_the_edges() {
        assert_eq!(ta_bin(0.0), 0);
        assert_eq!(ta_bin(499.0), 0);
        assert_eq!(ta_bin(500.0), 1);
        assert_eq!(ta_bin(1499.0), 2);
        assert_eq!(ta_bin(9000.0), 3);
        let c = CellCoverage {
            ta_users: [10.0, 10.0, 15.0, 5.0],
            lost_users: 0.0,
        };
        assert_eq!(c.share_beyond(1000), 0.5);
        assert_eq!(c.share_beyond(1500), 0.125);
        assert_eq!(CellCoverage::default().share_beyond(1000), 0.0);
    }
}
