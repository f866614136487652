//! What `GET /state` says of the coverage problems: each planted hole's own area (demand
//! within its radius, and how much of it is served), and each overshooting site's cells (the
//! share of their users beyond one inter-site distance, and their tilt and power). What
//! `tests/coverage_capacity.rs` and `sonraft bench cco` judge the node's coverage and capacity
//! optimisation by.

use serde_json::{Value, json};
use sonraft_protocol::cell_counter as cc;

use super::{FaultKind, Mutable, Planted, Sim};
use crate::topology::ISD_M;

/// Radius of a planted hole, metres (`Sim::plant`).
const HOLE_RADIUS_M: f32 = 250.0;

impl Sim {
    /// `v` (a planted fault's status) with, for a hole, its area's demand and service.
    pub(super) fn with_hole_status(
        &self,
        mut v: Value,
        s: &Mutable,
        p: &Planted,
        profile: f32,
    ) -> Value {
        if p.kind != FaultKind::Hole {
            return v;
        }
        let (x, y) = self.fault_point(p.cell);
        // `s` is held: the radio lock comes second, as everywhere.
        let radio = super::lock(&self.radio);
        let (demand, served) =
            radio
                .grid
                .area_service(x, y, HOLE_RADIUS_M, &s.last.radio.load, profile);
        v["hole_demand_mbps"] = json!(demand);
        v["hole_served_mbps"] = json!(served);
        v["hole_served_pct"] = json!(if demand > 0.0 {
            served * 100.0 / demand
        } else {
            100.0
        });
        v
    }

    /// Every cell of a site with a planted overshooter: the share of its users farther than
    /// one inter-site distance (from its last report's `TA.Distr.Bin*`), tilt and power.
    pub(super) fn overshooter_status(&self, s: &Mutable) -> Vec<Value> {
        let sites: Vec<usize> = self
            .topo
            .problems
            .overshooters
            .iter()
            .map(|c| self.topo.cells[*c].site)
            .collect();
        self.topo
            .cells
            .iter()
            .enumerate()
            .filter(|(_, cell)| sites.contains(&cell.site))
            .map(|(c, cell)| {
                let far_pct = s.last.reports.get(c).map_or(0.0, |r| {
                    let bins = &r.cell[cc::TA_BIN0..cc::TA_BIN0 + cc::TA_BINS];
                    let total: u64 = bins.iter().sum();
                    let far: u64 = sonraft_protocol::TA_BIN_EDGES_M
                        .iter()
                        .enumerate()
                        .filter(|(_, edge)| f64::from(**edge) >= ISD_M)
                        .map(|(k, _)| bins[k + 1])
                        .sum();
                    if total == 0 {
                        0.0
                    } else {
                        far as f64 * 100.0 / total as f64
                    }
                });
                let cfg = &s.configs[c];
                json!({"cell": cell.id, "planted": self.topo.problems.overshooters.contains(&c),
                       "mast_m": self.topo.sites[cell.site].mast_m, "far_user_pct": far_pct,
                       "electrical_tilt": cfg.electrical_tilt, "max_tx_power_dbm": cfg.max_tx_power_dbm})
            })
            .collect()
    }
}
