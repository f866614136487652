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
//! - **Unknown neighbours.** Users at the border of a cell their serving cell has no relation
//!   to report it by PCI, carrier and the cell identity read from its broadcast: a relation
//!   entry whose target is `/PCI/ARFCN/CELL` (`/PCI/ARFCN` without the identity), its
//!   attempts counting those reports (as many as handover attempts would be). The pairs are the
//!   planned relations the node removed and the latent ones the plan left out.
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

    /// The state a relation starts in: a latent one is not in the neighbour list.
    pub fn initial(rel: &super::topology::SimRelation) -> RelationState {
        RelationState {
            exists: !rel.latent,
            ..RelationState::NEUTRAL
        }
    }
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
        max_tx_power_dbm: topo.deployment.power_dbm,
        hysteresis: 4,
        time_to_trigger_ms: 320,
        a3_offset: 6,
        admin_state: 0,
        energy_saving: 0,
        relations: by_source[cell]
            .iter()
            .filter(|r| !topo.relations[**r].latent)
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

/// The strangers (see [`super::radio::RadioOutcome::strangers`]) whose serving cell is `cell`.
fn strangers_of(all: &[(u32, u32, f32)], cell: usize) -> &[(u32, u32, f32)] {
    let from = all.partition_point(|x| (x.0 as usize) < cell);
    let to = all.partition_point(|x| (x.0 as usize) <= cell);
    &all[from..to]
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
            // Only a neighbour in the list confuses: a removed or latent one is not measured
            // against this target.
            let confused = rels
                .iter()
                .any(|&o| o != r && relations[o].exists && same(topo.relations[o].target, t));
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
        // Neighbours its users measured that the cell has no relation to (planned relations
        // the node removed, latent ones the plan left out), by what the reports name: PCI and
        // carrier, and by the global cell identity the antenna had users read (TS 36.300
        // 22.3.2a). Each is reported as often as it would see handover attempts (the users at
        // its border now). The entry's target `/PCI/ARFCN/CELL` can be no cell's id (ids hold
        // no `/`), so a node that does not know such entries skips it as an unknown cell.
        let mut unknown: Vec<((u16, u32, usize), u64)> = Vec::new();
        let strangers = strangers_of(&radio.strangers, i);
        for &r in &by_source[i] {
            let rel = &topo.relations[r];
            // A planted dead relation's users never hand over that way.
            if relations[r].exists || rel.base_attempts <= 0.0 || sleeping(i) {
                continue;
            }
            let users = strangers
                .iter()
                .find(|x| x.1 as usize == rel.target)
                .map_or(0.0, |x| x.2);
            let b0 = grid.border0.get(r).copied().unwrap_or(0.0);
            let ratio = if b0 > 0.0 {
                f64::from(users / b0)
            } else {
                (l / 0.5).clamp(0.3, 2.0)
            };
            let n = noise(rng, rel.base_attempts * ratio.clamp(0.0, 3.0)).round() as u64;
            if n == 0 {
                continue;
            }
            let key = (
                configs[rel.target].pci,
                topo.cells[rel.target].arfcn,
                rel.target,
            );
            match unknown.iter_mut().find(|(k, _)| *k == key) {
                Some((_, u)) => *u += n,
                None => unknown.push((key, n)),
            }
        }
        for ((pci, arfcn, t), n) in unknown {
            let mut v = [0u64; RELATION_COUNTERS.len()];
            v[rc::ATT] = n;
            rel_counters.push(RelationCounters {
                target: format!("/{pci}/{arfcn}/{}", topo.cells[t].id),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn regions() -> Vec<String> {
        vec!["site-a".into(), "site-b".into(), "site-c".into()]
    }

    /// The `/PCI/ARFCN` entries of each cell's report, as (source, pci, arfcn, reports).
    fn unknown_entries(out: &PeriodOutcome) -> Vec<(usize, String, u64)> {
        out.reports
            .iter()
            .enumerate()
            .flat_map(|(c, r)| {
                r.relations
                    .iter()
                    .filter(|rel| rel.target.starts_with('/'))
                    .map(move |rel| (c, rel.target.clone(), rel.values[rc::ATT]))
            })
            .collect()
    }

    #[test]
    fn users_report_the_neighbours_their_cell_has_no_relation_to() {
        let mut topo = Topology::build(300, 1, &regions());
        let planned = topo.relations.len();
        let mut grid = RadioGrid::build(&topo, 1);
        let latent = grid.add_latent_relations(&mut topo);
        let by_source = topo.relations_by_source();
        let configs: Vec<_> = (0..topo.cells.len())
            .map(|c| initial_config(&topo, c, &by_source))
            .collect();
        // The exported image and the antennas' first configuration hold the planned relations.
        let listed: usize = configs.iter().map(|c| c.relations.len()).sum();
        assert_eq!(listed, planned);
        assert_eq!(
            topo.image_json()["relations"].as_array().unwrap().len(),
            planned
        );
        let mut relations: Vec<RelationState> =
            topo.relations.iter().map(RelationState::initial).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let clock = PeriodClock {
            end_ms: 0,
            period_ms: 1000,
            profile: 1.0,
        };
        let before = run_period(
            &topo, &by_source, &mut grid, &configs, &relations, clock, &mut rng,
        );
        let stray = unknown_entries(&before);
        eprintln!(
            "{planned} planned relations, {latent} latent; {} unknown entries, {} reports",
            stray.len(),
            stray.iter().map(|s| s.2).sum::<u64>()
        );
        assert!(
            latent > 0 && latent < planned,
            "{latent} latent of {planned}"
        );
        // Remove a busy planned relation: its target is now reported by PCI and carrier.
        let (r, rel) = topo
            .relations
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.latent && topo.cells[r.source].site != topo.cells[r.target].site)
            .max_by(|a, b| grid.border0[a.0].total_cmp(&grid.border0[b.0]))
            .unwrap();
        relations[r].exists = false;
        let after = run_period(
            &topo, &by_source, &mut grid, &configs, &relations, clock, &mut rng,
        );
        let name = format!(
            "/{}/{}/{}",
            configs[rel.target].pci, topo.cells[rel.target].arfcn, topo.cells[rel.target].id
        );
        let found = unknown_entries(&after)
            .into_iter()
            .find(|e| e.0 == rel.source && e.1 == name);
        assert!(
            found.as_ref().is_some_and(|f| f.2 >= 5),
            "the removed relation's target is not reported: {found:?}"
        );
        assert!(
            !unknown_entries(&before)
                .iter()
                .any(|e| e.0 == rel.source && e.1 == name)
        );
    }

    #[test]
    fn only_a_neighbour_in_the_list_confuses_a_target_with_the_same_pci() {
        let mut topo = Topology::build(300, 1, &regions());
        let mut grid = RadioGrid::build(&topo, 1);
        grid.add_latent_relations(&mut topo);
        let by_source = topo.relations_by_source();
        let mut configs: Vec<_> = (0..topo.cells.len())
            .map(|c| initial_config(&topo, c, &by_source))
            .collect();
        let mut relations: Vec<RelationState> =
            topo.relations.iter().map(RelationState::initial).collect();
        // A source with a planned relation r that carries handovers and a latent one o on the
        // same carrier; o's target takes r's target's PCI.
        let (r, o) = (0..topo.cells.len())
            .find_map(|s| {
                let rels = &by_source[s];
                let r = *rels.iter().find(|&&r| {
                    !topo.relations[r].latent && topo.relations[r].base_attempts > 0.0
                })?;
                let o = *rels.iter().find(|&&o| {
                    topo.relations[o].latent
                        && topo.cells[topo.relations[o].target].arfcn
                            == topo.cells[topo.relations[r].target].arfcn
                })?;
                Some((r, o))
            })
            .expect("a source with a planned and a latent relation");
        let (t, u) = (topo.relations[r].target, topo.relations[o].target);
        configs[u].pci = configs[t].pci;
        let clock = PeriodClock {
            end_ms: 0,
            period_ms: 1000,
            profile: 1.0,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let wrong = |out: &PeriodOutcome| {
            let src = topo.relations[r].source;
            out.reports[src]
                .relations
                .iter()
                .find(|x| x.target == topo.cells[t].id)
                .map(|x| x.values[rc::WRONG_CELL])
        };
        let out = run_period(
            &topo, &by_source, &mut grid, &configs, &relations, clock, &mut rng,
        );
        assert_eq!(
            wrong(&out),
            Some(0),
            "a latent neighbour confused the target"
        );
        relations[o].exists = true;
        let out = run_period(
            &topo, &by_source, &mut grid, &configs, &relations, clock, &mut rng,
        );
        assert!(wrong(&out).is_some_and(|w| w > 0), "{:?}", wrong(&out));
    }
}
