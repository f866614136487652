//! ANR that adds relations: the neighbours a cell's users measure but the cell has no relation
//! to (TS 32.511's automatic neighbour relation function, the adding half).
//!
//! **Evidence.** A user at a border reports the cells it measures by PCI and carrier; an
//! antenna cannot hand over to a cell it has no relation to, so it reports such a neighbour
//! in its counters as a relation entry whose target is `/PCI/ARFCN`, counting the measurement
//! reports (a cell id never holds `/`: a node that does not know these entries skips them as an
//! unknown cell). A PCI is a candidate once it was reported in [`EVIDENCE_PERIODS`] periods in a
//! row, each time at least [`MIN_REPORTS`] times and at least [`MIN_SHARE`] of the median
//! attempts of the cell's own busy relations: a neighbour about as strong as those the cell has.
//!
//! **Resolution.** A report that carries the cell's global identity (the antenna had a user
//! read it, TS 36.300 22.3.2a) names the cell; its PCI and carrier must match the image's.
//! Without it, the reported PCI is resolved to the nearest cell on that carrier with that PCI.
//! Either way the cell is not the source nor already a target, and it is added only when
//! - it is within [`MAX_DISTANCE_ISD`] × the network's typical inter-site distance of the
//!   source's site (the median distance from a site to its nearest other site): a PCI seen
//!   from farther is an overshooter's, not a neighbour's;
//! - resolved by PCI alone, no second cell with that PCI is within twice its distance (a PCI
//!   confusion: which one the users saw is not known; the PCI function resolves the clash);
//! - it carries traffic (not locked or dormant), and the source is not in outage;
//! - the source has fewer than `maxCellMeas` (32) relations on that carrier: the apply-time
//!   rules refuse more, so the proposer does not try.
//!
//! An operator who never wants a pair blocks it by keeping its relation with handovers
//! barred and removal forbidden: the pair then exists and is never reported as unknown. The
//! operator's exclusions of the function hold at either end (apply-time rules).
//!
//! **Proposal.** One change set per source cell, all its additions together, reading the
//! source cell: a change computed from a stale view is refused and recomputed. Each addition
//! is an experiment like any SON change: its trial removes it again if the cell's KPIs degrade.

use std::collections::HashMap;

use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};
use sonraft_raft::rules::MAX_NEIGHBOURS_PER_CARRIER;

use super::view::{FastMap, RadioView};
use super::{PeriodInput, Proposal};
use sonraft_protocol::relation_counter as rc;

/// Consecutive periods a PCI must be reported before it is added.
pub const EVIDENCE_PERIODS: u8 = 2;
/// Fewest measurement reports a period that count as evidence.
pub const MIN_REPORTS: u64 = 3;
/// Reports as a share of the median handover attempts on the cell's busy relations.
pub const MIN_SHARE: f64 = 0.15;
/// Farthest a resolved neighbour may be, in inter-site distances.
pub const MAX_DISTANCE_ISD: f64 = 1.5;

/// An unknown neighbour as a report entry names it: `/PCI/ARFCN`, or `/PCI/ARFCN/CELL` when
/// the antenna had a user read the cell's global identity from its broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub pci: u16,
    pub arfcn: u32,
    pub cgi: Option<String>,
}

/// The unknown neighbour a report entry's target names, if it names one.
pub fn parse_unknown(target: &str) -> Option<Measured> {
    let mut parts = target.strip_prefix('/')?.splitn(3, '/');
    let pci = parts.next()?.parse().ok()?;
    let arfcn = parts.next()?.parse().ok()?;
    let cgi = match parts.next() {
        Some(id) if sonraft_raft::model::valid_id(id) => Some(id.to_string()),
        Some(_) => return None,
        None => None,
    };
    Some(Measured { pci, arfcn, cgi })
}

/// Per (source cell, PCI, ARFCN): the consecutive periods it was reported strongly enough, and
/// the reports in them. Holds only what the last period reported, so it stays bounded by the
/// reports of one period.
#[derive(Debug, Default)]
pub struct Sightings {
    runs: FastMap<(u32, u16, u32), (u8, u64)>,
}

/// One period's report of an unknown neighbour: what it names and how many reports.
pub type Sighting = (Measured, u64);

/// Why a reported PCI could not be resolved to one cell to add.
#[derive(Debug, PartialEq)]
pub enum Unresolved {
    NoSuchCell,
    /// The identity the users read names a cell whose PCI or carrier the image has otherwise.
    Mismatch(u32),
    TooFar {
        cell: u32,
        distance_m: f64,
    },
    Ambiguous {
        nearest: u32,
        other: u32,
    },
    Known(u32),
    Down(u32),
}

/// The cell a report of `pci` on `arfcn` from `source`'s users names, if one can be added;
/// `by_pci` lists the cells of each (PCI, ARFCN).
pub fn resolve(
    view: &RadioView,
    by_pci: &HashMap<(u16, u32), Vec<u32>>,
    source: u32,
    m: &Measured,
) -> Result<(u32, f64), Unresolved> {
    let (pci, arfcn) = (m.pci, m.arfcn);
    if let Some(id) = &m.cgi {
        let Some(&cell) = view.index.get(id.as_str()) else {
            return Err(Unresolved::NoSuchCell);
        };
        let c = view.cell(cell);
        if c.pci != pci || c.arfcn != arfcn || cell == source {
            return Err(Unresolved::Mismatch(cell));
        }
        let d = view.distance_m(source, cell);
        return if view.relation(source, cell).is_some() {
            Err(Unresolved::Known(cell))
        } else if d > MAX_DISTANCE_ISD * view.isd_m {
            Err(Unresolved::TooFar {
                cell,
                distance_m: d,
            })
        } else if c.down {
            Err(Unresolved::Down(cell))
        } else {
            Ok((cell, d))
        };
    }
    let mut near: Vec<(f64, u32)> = by_pci
        .get(&(pci, arfcn))
        .into_iter()
        .flatten()
        .copied()
        .filter(|c| *c != source)
        .map(|c| (view.distance_m(source, c), c))
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(d, cell)) = near.first() else {
        return Err(Unresolved::NoSuchCell);
    };
    if view.relation(source, cell).is_some() {
        return Err(Unresolved::Known(cell));
    }
    if d > MAX_DISTANCE_ISD * view.isd_m {
        return Err(Unresolved::TooFar {
            cell,
            distance_m: d,
        });
    }
    if let Some(&(d2, other)) = near.get(1)
        && d2 < 2.0 * d.max(1.0)
    {
        return Err(Unresolved::Ambiguous {
            nearest: cell,
            other,
        });
    }
    if view.cell(cell).down {
        return Err(Unresolved::Down(cell));
    }
    Ok((cell, d))
}

impl Sightings {
    /// Counts this period's reports and proposes the relations that were reported long enough.
    pub fn propose(
        &mut self,
        view: &RadioView,
        input: &PeriodInput,
        node: u64,
        now_ms: u64,
    ) -> Vec<Proposal> {
        let mut next: FastMap<(u32, u16, u32), (u8, u64)> = FastMap::default();
        let mut due: Vec<(u32, Measured, u64)> = Vec::new();
        let mut sources: Vec<&u32> = input.unknown.keys().collect();
        sources.sort_unstable();
        for &c in sources {
            if input.outage.contains(&c) || view.cell(c).down || !view.cell(c).own {
                continue;
            }
            let floor = floor(input, c);
            for (m, reports) in &input.unknown[&c] {
                if *reports < floor {
                    tracing::trace!(
                        cell = view.id(c),
                        pci = m.pci,
                        arfcn = m.arfcn,
                        reports,
                        floor,
                        "a measured neighbour reported too little to count"
                    );
                    continue;
                }
                let key = (c, m.pci, m.arfcn);
                let (periods, total) = self.runs.get(&key).copied().unwrap_or((0, 0));
                let run = (periods.saturating_add(1), total.saturating_add(*reports));
                next.insert(key, run);
                if run.0 >= EVIDENCE_PERIODS {
                    due.push((c, m.clone(), run.1));
                }
            }
        }
        self.runs = next;
        if due.is_empty() {
            return Vec::new();
        }
        let mut by_pci: HashMap<(u16, u32), Vec<u32>> = HashMap::new();
        for (i, cell) in view.cells.iter().enumerate() {
            by_pci
                .entry((cell.pci, cell.arfcn))
                .or_default()
                .push(i as u32);
        }
        let mut out = Vec::new();
        for chunk in due.chunk_by(|a, b| a.0 == b.0) {
            let source = chunk[0].0;
            let mut on_carrier: HashMap<u32, usize> = HashMap::new();
            for r in &view.out[source as usize] {
                *on_carrier.entry(view.cell(r.target).arfcn).or_default() += 1;
            }
            let mut writes = Vec::new();
            let mut why = Vec::new();
            for (_, m, reports) in chunk {
                let (pci, arfcn) = (m.pci, m.arfcn);
                match resolve(view, &by_pci, source, m) {
                    Ok((target, d)) => {
                        let n = on_carrier.entry(arfcn).or_default();
                        if *n >= MAX_NEIGHBOURS_PER_CARRIER {
                            tracing::debug!(
                                cell = view.id(source),
                                arfcn,
                                "neighbour list full on this carrier; not adding"
                            );
                            continue;
                        }
                        if writes.iter().any(|w: &Write| {
                            w.entity == EntityRef::relation(view.id(source), view.id(target))
                        }) {
                            continue;
                        }
                        *n += 1;
                        writes.push(Write {
                            entity: EntityRef::relation(view.id(source), view.id(target)),
                            param: Param::Exists,
                            value: Value::Bool(true),
                        });
                        let how = if m.cgi.is_some() {
                            "by the identity users read"
                        } else {
                            "the nearest with that PCI"
                        };
                        why.push(format!(
                            "PCI {pci} on ARFCN {arfcn} ({reports} reports in {EVIDENCE_PERIODS} periods) is cell {} at {:.2} km ({how})",
                            view.id(target),
                            d / 1000.0
                        ));
                    }
                    Err(e) => tracing::debug!(
                        cell = view.id(source),
                        pci,
                        arfcn,
                        why = ?e,
                        "a measured neighbour is not added"
                    ),
                }
            }
            if writes.is_empty() {
                continue;
            }
            out.push(Proposal {
                change_set: ChangeSet {
                    origin: Origin {
                        node,
                        function: Function::AnrAdd,
                    },
                    reason: format!(
                        "cell {}'s users measure neighbours it has no relation to (inter-site distance {:.2} km): {}; adding",
                        view.id(source),
                        view.isd_m / 1000.0,
                        why.join("; ")
                    ),
                    read_set: vec![view.read_cell(source)],
                    writes,
                    proposed_at_ms: now_ms,
                },
                cells: vec![view.id(source).to_string()],
            });
        }
        out
    }
}

/// The fewest reports of one PCI this period that count for cell `c`: [`MIN_REPORTS`], or
/// [`MIN_SHARE`] of the median attempts on its relations that carried handovers.
fn floor(input: &PeriodInput, c: u32) -> u64 {
    let mut att: Vec<u64> = input
        .relations
        .get(&c)
        .into_iter()
        .flatten()
        .map(|(_, v)| v[rc::ATT])
        .filter(|a| *a > 0)
        .collect();
    att.sort_unstable();
    let median = att.get(att.len() / 2).copied().unwrap_or(0);
    MIN_REPORTS.max((median as f64 * MIN_SHARE).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sonraft_raft::command::{Command, ImageImport, Response};
    use sonraft_raft::model::image::{Changes, NetworkImage};

    use super::super::testing::counters;
    use super::*;

    /// Cell sites A..E 500 m apart on a line west to east, G 400 m north of D, F 5 km east;
    /// one LTE cell each on ARFCN 1300 (A1 PCI 10, B1 11, C1 12, D1 13, E1 14, G1 14, F1 13),
    /// all of `site-a`. The typical inter-site distance is 500 m. One relation: C1 -> B1.
    fn img() -> NetworkImage {
        let at = [
            ("A", 0.0, 0.0, 10),
            ("B", 500.0, 0.0, 11),
            ("C", 1000.0, 0.0, 12),
            ("D", 1500.0, 0.0, 13),
            ("E", 2000.0, 0.0, 14),
            ("G", 1500.0, 400.0, 14),
            ("F", 7000.0, 0.0, 13),
        ];
        let sites: Vec<_> = at
            .iter()
            .map(|(s, east, north, _)| {
                json!({"id": s, "name": s, "lat": 48.0 + north / 111_195.0,
                       "lon": 11.0 + east / 74_403.0, "region": "site-a"})
            })
            .collect();
        let cells: Vec<_> = at
            .iter()
            .map(|(s, _, _, pci)| {
                json!({"id": format!("{s}1"), "site": s, "rat": "LTE", "pci": pci, "arfcn": 1300, "azimuth": 0})
            })
            .collect();
        let import: ImageImport = serde_json::from_value(json!({
            "sites": sites, "cells": cells,
            "relations": [{"source": "C1", "target": "B1"}],
        }))
        .unwrap();
        let mut img = NetworkImage::default();
        let r = img.apply(1, &Command::Import(import), &mut Changes::default());
        assert!(matches!(r, Response::Imported(Ok(_))), "{r:?}");
        img
    }

    /// C1's period: 40 attempts on C1 -> B1, and `unknown` (PCI, reports) on ARFCN 1300.
    fn input(view: &RadioView, unknown: &[(u16, u64)]) -> PeriodInput {
        let c = view.index["C1"];
        let mut input = PeriodInput::default();
        input
            .relations
            .entry(c)
            .or_default()
            .push((view.index["B1"], counters(40, 39, 0, 0, 0)));
        input
            .unknown
            .insert(c, unknown.iter().map(|(p, n)| (pci(*p), *n)).collect());
        input
    }

    /// A report of `p` on ARFCN 1300 without the cell's identity.
    fn pci(p: u16) -> Measured {
        Measured {
            pci: p,
            arfcn: 1300,
            cgi: None,
        }
    }

    fn cgi(p: u16, id: &str) -> Measured {
        Measured {
            cgi: Some(id.into()),
            ..pci(p)
        }
    }

    fn by_pci(v: &RadioView) -> HashMap<(u16, u32), Vec<u32>> {
        let mut m: HashMap<(u16, u32), Vec<u32>> = HashMap::new();
        for (i, c) in v.cells.iter().enumerate() {
            m.entry((c.pci, c.arfcn)).or_default().push(i as u32);
        }
        m
    }

    #[test]
    fn a_neighbour_reported_two_periods_in_a_row_is_added_and_far_known_or_confused_ones_not() {
        let img = img();
        let v = RadioView::capture(&img, "site-a");
        assert!((v.isd_m - 500.0).abs() < 5.0, "{}", v.isd_m);
        let mut s = Sightings::default();
        // 13 is D1 (500 m; F1 shares it 6 km away); 11 is B1 (known); 10 is A1 (1 km: beyond
        // 1.5 inter-site distances); 14 is G1 (640 m) or E1 (1 km): confused.
        let reports = [(13, 20), (11, 20), (10, 20), (14, 20)];
        assert!(s.propose(&v, &input(&v, &reports), 1, 0).is_empty());
        let out = s.propose(&v, &input(&v, &reports), 1, 0);
        assert_eq!(out.len(), 1, "{out:?}");
        let cs = &out[0].change_set;
        assert_eq!(cs.origin.function, Function::AnrAdd);
        let added: Vec<String> = cs.writes.iter().map(|w| w.entity.to_string()).collect();
        assert_eq!(added, ["relation/C1/D1"]);
        assert!(cs.reason.contains("PCI 13 on ARFCN 1300"), "{}", cs.reason);
        assert_eq!(cs.read_set, vec![v.read_cell(v.index["C1"])]);
        assert_eq!(out[0].cells, ["C1"]);

        let (c, m) = (v.index["C1"], by_pci(&v));
        assert!(matches!(
            resolve(&v, &m, c, &pci(14)),
            Err(Unresolved::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve(&v, &m, c, &pci(10)),
            Err(Unresolved::TooFar { .. })
        ));
        assert_eq!(
            resolve(&v, &m, c, &pci(11)),
            Err(Unresolved::Known(v.index["B1"]))
        );
        assert_eq!(resolve(&v, &m, c, &pci(99)), Err(Unresolved::NoSuchCell));
        // The identity users read settles a confusion, and is checked against the image.
        assert_eq!(
            resolve(&v, &m, c, &cgi(14, "G1")).map(|r| r.0),
            Ok(v.index["G1"])
        );
        assert!(matches!(
            resolve(&v, &m, c, &cgi(14, "E1")),
            Err(Unresolved::TooFar { .. })
        ));
        assert_eq!(
            resolve(&v, &m, c, &cgi(12, "D1")),
            Err(Unresolved::Mismatch(v.index["D1"]))
        );
        assert_eq!(
            resolve(&v, &m, c, &cgi(13, "Q1")),
            Err(Unresolved::NoSuchCell)
        );
    }

    #[test]
    fn weak_or_interrupted_reports_and_cells_in_outage_add_nothing() {
        let img = img();
        let v = RadioView::capture(&img, "site-a");
        let mut s = Sightings::default();
        // 5 reports against 40 attempts on B1 is under 15 %.
        for _ in 0..3 {
            assert!(s.propose(&v, &input(&v, &[(13, 5)]), 1, 0).is_empty());
        }
        // Interrupted: strong, absent, strong.
        assert!(s.propose(&v, &input(&v, &[(13, 20)]), 1, 0).is_empty());
        assert!(s.propose(&v, &input(&v, &[]), 1, 0).is_empty());
        assert!(s.propose(&v, &input(&v, &[(13, 20)]), 1, 0).is_empty());
        // A cell in outage: its reports wait.
        let mut out_input = input(&v, &[(13, 20)]);
        out_input.outage.insert(v.index["C1"]);
        assert!(s.propose(&v, &out_input, 1, 0).is_empty());
        assert!(s.propose(&v, &out_input, 1, 0).is_empty());
        assert_eq!(parse_unknown("/12/1300"), Some(pci(12)));
        assert_eq!(parse_unknown("/12/1300/B1"), Some(cgi(12, "B1")));
        assert_eq!(parse_unknown("B1"), None);
        assert_eq!(parse_unknown("/x/1300"), None);
        assert_eq!(parse_unknown("/12"), None);
        assert_eq!(parse_unknown("/12/1300/"), None);
        assert_eq!(parse_unknown("/12/1300/a/b"), None);
    }
}
