//! What each cell's counters read for one period, given the configuration pushed to it.
//!
//! - **Load, users, throughput** come from the radio layer ([`crate::radio`]): geometry, path
//!   loss, antenna patterns with the pushed tilt and power, CIO-shifted borders, SINR.
//! - **Handover attempts** on a relation scale with the users at its handover border now,
//!   relative to the start (a relation planted dead has none).
//! - **Mobility.** The handover delay of relation X→Y is `E = hysteresis/2 + TTT/160 ms − CIO/4`
//!   (dB-equivalent). Each cell has an optimum `O` (user speed); too-late handovers are
//!   4 % × (E − O), too-early 4 % × (O − E − 0.5), ping-pongs grow as hysteresis falls below 1.5 dB.
//! - **PCI.** Handovers towards a target whose PCI collides with the source or is confused with
//!   another neighbour's fail 40 % more often (wrong cell).
//! - **Faults.** A sleeping cell reports but serves nobody: its counters read idle and every
//!   handover into it fails (counted too early: the user returns to the source at once).

use rand::Rng;
use rand::rngs::StdRng;
use sonraft_protocol::{
    CELL_COUNTERS, CellConfig, RELATION_COUNTERS, RelationCounters, Report, cell_counter as cc,
    relation_counter as rc,
};

use super::radio::{CellFault, RadioGrid, USERS_PER_MBPS};
use super::topology::Topology;

/// Physical resource blocks of a 20 MHz LTE carrier.
pub const LTE_PRBS: u64 = 100;
/// Physical resource blocks of a 100 MHz NR carrier at 30 kHz subcarrier spacing.
pub const NR_PRBS: u64 = 273;

/// The configuration state of one simulated cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellState {
    pub config: CellConfig,
}

/// Per-relation mutable state, indexed like `Topology::relations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationState {
    pub cio_db: i8,
    pub ho_allowed: bool,
    pub exists: bool,
}

impl RelationState {
    /// As exported: present, handovers allowed, no offset.
    pub const NEUTRAL: RelationState = RelationState {
        cio_db: 0,
        ho_allowed: true,
        exists: true,
    };
}

/// The clock of one period.
#[derive(Debug, Clone, Copy)]
pub struct PeriodClock {
    pub end_ms: u64,
    pub period_ms: u32,
    /// Share of busy-hour demand (the daily profile).
    pub profile: f32,
}

/// The configuration an antenna starts with: what the exported image says.
pub fn initial_config(topo: &Topology, cell: usize, by_source: &[Vec<usize>]) -> CellConfig {
    let c = &topo.cells[cell];
    CellConfig {
        pci: c.pci,
        electrical_tilt: c.installed_tilt,
        max_tx_power_dbm: 46,
        hysteresis: 4,
        time_to_trigger_ms: 320,
        a3_offset: 6,
        admin_state: 0,
        energy_saving: 0,
        relations: by_source[cell]
            .iter()
            .map(|r| sonraft_protocol::RelationConfig {
                target: topo.cells[topo.relations[*r].target].id.clone(),
                cio_db: 0,
                ho_allowed: true,
            })
            .collect(),
    }
}

/// What one period produced, per cell and per relation.
#[derive(Debug, Clone, Default)]
pub struct PeriodOutcome {
    pub load: Vec<f64>,
    pub radio: super::radio::RadioOutcome,
    pub reports: Vec<Report>,
    /// Per relation: (attempts, too late).
    pub relation_late: Vec<(u64, u64)>,
}

/// Writes a cell's coverage counters (without noise, so that the other counters' random
/// draws stay what they were before these existed). A sleeping cell serves nobody: its
/// distribution is empty.
fn coverage_counters(
    counters: &mut [u64; CELL_COUNTERS.len()],
    coverage: Option<&super::radio::coverage::CellCoverage>,
    sleeping: bool,
) {
    let Some(cov) = coverage else { return };
    if !sleeping {
        for (k, users) in cov.ta_users.iter().enumerate() {
            counters[cc::TA_BIN0 + k] = users.round() as u64;
        }
    }
    counters[cc::RLF_COVERAGE] = cov.lost_users.round() as u64;
}

/// The handover delay of a cell's configuration, in dB-equivalent.
pub fn delay_db(config: &CellConfig) -> f64 {
    f64::from(config.hysteresis) * 0.5 + f64::from(config.time_to_trigger_ms) / 160.0
}

/// Computes one period.
pub fn run_period(
    topo: &Topology,
    by_source: &[Vec<usize>],
    grid: &mut RadioGrid,
    configs: &[CellConfig],
    relations: &[RelationState],
    clock: PeriodClock,
    rng: &mut StdRng,
) -> PeriodOutcome {
    let n = topo.cells.len();
    let radio = grid.run(topo, by_source, configs, relations, clock.profile);
    let load = radio.load.clone();
    let sleeping = |c: usize| grid.faults[c] == Some(CellFault::Sleeping);

    // PCI problems: targets whose PCI collides with the source or another neighbour.
    let mut pci_trouble = vec![false; topo.relations.len()];
    for (s, rels) in by_source.iter().enumerate() {
        for &r in rels {
            let t = topo.relations[r].target;
            let same = |x: usize, y: usize| {
                configs[x].pci == configs[y].pci && topo.cells[x].arfcn == topo.cells[y].arfcn
            };
            let confused = rels
                .iter()
                .any(|&o| o != r && same(topo.relations[o].target, t));
            pci_trouble[r] = same(s, t) || confused;
        }
    }

    let mut reports = Vec::with_capacity(n);
    let mut relation_late = vec![(0, 0); topo.relations.len()];
    for (i, cell) in topo.cells.iter().enumerate() {
        let cfg = &configs[i];
        let l = if sleeping(i) {
            0.0
        } else {
            load[i].clamp(0.0, 1.5)
        };
        let noise = |rng: &mut StdRng, v: f64| (v * rng.random_range(0.97..1.03)).max(0.0);
        // RRU.PrbUsed* and RRU.PrbAvail* are counts: the carrier's width matters.
        let prbs = if super::topology::is_nr(cell.arfcn) {
            NR_PRBS
        } else {
            LTE_PRBS
        };
        let prb_dl = (noise(rng, l.min(1.0)) * prbs as f64)
            .round()
            .min(prbs as f64) as u64;
        let prb_ul = (noise(rng, (l * 0.6).min(1.0)) * prbs as f64)
            .round()
            .min(prbs as f64) as u64;
        let mut counters = [0u64; CELL_COUNTERS.len()];
        counters[cc::PRB_USED_DL] = prb_dl;
        counters[cc::PRB_AVAIL_DL] = prbs;
        counters[cc::PRB_USED_UL] = prb_ul;
        counters[cc::PRB_AVAIL_UL] = prbs;
        let (users, thp_dl) = if sleeping(i) {
            (0.0, 0.0)
        } else {
            // Per-user throughput: the cell's capacity at its mean efficiency, shared.
            let mhz = prbs as f64 * if prbs == NR_PRBS { 0.36 } else { 0.18 };
            (
                radio.served_mbps[i] * f64::from(USERS_PER_MBPS),
                radio.spectral_eff[i] * mhz * 1000.0 * (1.05 - l.min(1.0)) + 1_500.0,
            )
        };
        counters[cc::CONN_MEAN] = noise(rng, users) as u64;
        counters[cc::CONN_MAX] = noise(rng, users * 1.3) as u64;
        counters[cc::THP_DL] = noise(rng, thp_dl) as u64;
        counters[cc::THP_UL] = noise(rng, thp_dl / 4.0) as u64;
        coverage_counters(&mut counters, radio.coverage.get(i), sleeping(i));
        let mut rel_counters = Vec::with_capacity(by_source[i].len());
        let delay = delay_db(cfg);
        for &r in &by_source[i] {
            if !relations[r].exists {
                continue;
            }
            let rel = &topo.relations[r];
            let c = f64::from(relations[r].cio_db);
            let mut v = [0u64; RELATION_COUNTERS.len()];
            if relations[r].ho_allowed && rel.base_attempts > 0.0 && !sleeping(i) {
                // Attempts follow the users at this relation's border (CIO moves it).
                let b0 = grid.border0.get(r).copied().unwrap_or(0.0);
                let ratio = if b0 > 0.0 {
                    f64::from(radio.border_users[r] / b0)
                } else {
                    (l / 0.5).clamp(0.3, 2.0)
                };
                let att = noise(rng, rel.base_attempts * ratio.clamp(0.0, 3.0)).round();
                let e = delay - c / 4.0;
                let late = (0.04 * (e - cell.optimal_delay_db)).clamp(0.0, 0.6);
                let early = (0.04 * (cell.optimal_delay_db - e - 0.5)).clamp(0.0, 0.6);
                let ping_pong = (0.05 * (1.5 - f64::from(cfg.hysteresis) * 0.5)).clamp(0.0, 0.3);
                let wrong = if pci_trouble[r] { 0.4 } else { 0.0 };
                // Into a sleeping cell every handover fails at once.
                let (early, success) = if sleeping(rel.target) {
                    (1.0 - late, 0.0)
                } else {
                    (
                        early,
                        (rel.base_success * (1.0 - late - early) * (1.0 - wrong)).clamp(0.0, 1.0),
                    )
                };
                v[rc::ATT] = att as u64;
                v[rc::SUCC] = (att * success).round() as u64;
                v[rc::TOO_LATE] = (att * late).round() as u64;
                v[rc::TOO_EARLY] = (att * early).round() as u64;
                v[rc::WRONG_CELL] = (att * wrong).round() as u64;
                v[rc::PING_PONG] = (att * ping_pong).round() as u64;
                relation_late[r] = (v[rc::ATT], v[rc::TOO_LATE]);
            }
            counters[cc::HO_ATT] += v[rc::ATT];
            counters[cc::HO_SUCC] += v[rc::SUCC];
            rel_counters.push(RelationCounters {
                target: topo.cells[rel.target].id.clone(),
                values: v,
            });
        }
        reports.push(Report {
            period_end_ms: clock.end_ms,
            period_ms: clock.period_ms,
            cell: counters,
            relations: rel_counters,
        });
    }
    PeriodOutcome {
        load,
        radio,
        reports,
        relation_late,
    }
}
