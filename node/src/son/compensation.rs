//! Cell outage compensation (COC; command format 6): while one of this site's cells is in
//! outage ([`super::outage`]), its neighbours on the same carrier that have a relation into it
//! (at most [`MAX_COMPENSATORS`], not co-site, not down, not in outage themselves) uptilt by
//! 1° and raise their power by 3 dB — the most one change set may move either — within their
//! tilt box and [`MAX_POWER_DBM`]; when the cell is back, each of them that still has the
//! compensated values returns to what it had.
//!
//! The site keeps a **ledger** of compensations: per failed cell, each compensating cell with
//! its values before and after. Each period it reconciles the image with the ledger — a
//! compensation not yet in the image is proposed (again), a finished outage's compensation is
//! reverted where nobody changed the values since (a cell someone else changed meanwhile is
//! theirs now and left alone) — so a refused or lost proposal is simply retried. The ledger is
//! saved in the node's data directory (`son-compensations.json`), so a restart during an outage
//! still reverts it afterwards.
//!
//! Compensation answers a fault: it does not wait for other functions' cool-downs, opens no
//! trial (it is undone when the outage ends, not by verification), and its priority holds the
//! optimisers off the compensating cells (see `sonraft_raft::changeset::Function::is_urgent`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};

use super::Proposal;
use super::view::RadioView;

/// Most neighbours compensating one cell.
pub const MAX_COMPENSATORS: usize = 4;
/// Uptilt per compensation, 0.1° (the rules' step limit).
pub const UPTILT: i16 = 10;
/// Power raise per compensation, dB (the rules' step limit).
pub const POWER_UP_DB: i16 = 3;
/// Highest power compensation sets, dBm.
pub const MAX_POWER_DBM: i16 = 49;
/// A neighbour compensates only while its downlink PRB load is under this, percent: users
/// pulled into a full cell are not served, and its own users lose capacity.
pub const MAX_COMPENSATOR_LOAD_PCT: f64 = 70.0;
/// A compensating neighbour that reaches this load goes back to its own values, percent.
pub const WITHDRAW_LOAD_PCT: f64 = 85.0;

/// One compensating cell: its values before and during the compensation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensator {
    pub cell: String,
    pub tilt: (i16, i16),
    pub power: (i16, i16),
    /// It filled up and went back (or is going back) while the outage goes on.
    #[serde(default)]
    pub withdrawn: bool,
}

/// The compensations this site started and has not finished reverting, by failed cell.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub cells: BTreeMap<String, Vec<Compensator>>,
    /// Where the ledger is saved (not saved itself).
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl Ledger {
    /// The ledger saved in `dir`, or an empty one (a damaged file is reported and set aside).
    pub fn load(dir: &Path) -> Ledger {
        let path = dir.join("son-compensations.json");
        let mut ledger = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Ledger>(&bytes) {
                Ok(l) => l,
                Err(e) => {
                    let aside = path.with_extension("json.damaged");
                    tracing::warn!(file = %path.display(), error = %e, aside = %aside.display(),
                        "outage compensation ledger unreadable; set aside, starting empty");
                    let _ = std::fs::rename(&path, &aside);
                    Ledger::default()
                }
            },
            Err(_) => Ledger::default(),
        };
        ledger.path = Some(path);
        ledger
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "outage compensation ledger not saved");
        }
    }

    /// A copy that proposes what this one would, without recording anything.
    pub fn frozen(&self) -> Ledger {
        Ledger {
            cells: self.cells.clone(),
            path: None,
        }
    }

    /// Reconciles the image with the ledger for this period's outages (`outage`: own cells)
    /// and proposes what is missing: compensation for new or unfinished outages, reverts for
    /// finished ones.
    pub fn propose(
        &mut self,
        view: &RadioView,
        outage: &HashSet<u32>,
        load: impl Fn(u32) -> Option<f64>,
        node: u64,
        now_ms: u64,
    ) -> Vec<Proposal> {
        let before = self.cells.clone();
        let mut out = Vec::new();
        // New outages: choose the compensators once, with their values now. A cell already
        // compensating another outage is left out: its values now are not its own, and two
        // reverts would fight over what it goes back to.
        let mut busy: HashSet<String> = self
            .cells
            .values()
            .flatten()
            .map(|k| k.cell.clone())
            .collect();
        for &c in outage {
            let id = view.id(c).to_string();
            if self.cells.contains_key(&id) {
                continue;
            }
            let chosen: Vec<Compensator> = compensators(view, c, outage, &load)
                .into_iter()
                .filter(|k| !busy.contains(&k.cell))
                .collect();
            busy.extend(chosen.iter().map(|k| k.cell.clone()));
            if !chosen.is_empty() {
                self.cells.insert(id, chosen);
            }
        }
        let mut finished = Vec::new();
        for (failed, list) in &mut self.cells {
            let active = view.index.get(failed).is_some_and(|c| outage.contains(c));
            let mut writes = Vec::new();
            let mut read_set = Vec::new();
            let mut cells = Vec::new();
            let mut what = Vec::new();
            let mut withdrawn = Vec::new();
            list.retain_mut(|k| {
                let Some(&n) = view.index.get(&k.cell) else {
                    return false;
                };
                let cell = view.cell(n);
                let now = (cell.electrical_tilt, cell.max_tx_power_dbm);
                let (before, during) = ((k.tilt.0, k.power.0), (k.tilt.1, k.power.1));
                // A compensating cell that filled up goes back, and stays out of this outage.
                if active && !k.withdrawn && load(n).is_some_and(|l| l >= WITHDRAW_LOAD_PCT) {
                    k.withdrawn = true;
                    withdrawn.push(format!(
                        "{} at {:.0} % (withdrawn at {WITHDRAW_LOAD_PCT:.0} %)",
                        k.cell,
                        load(n).unwrap_or(0.0)
                    ));
                }
                let compensating = active && !k.withdrawn;
                let (from, to) = if compensating {
                    (before, during)
                } else {
                    (during, before)
                };
                if now == to {
                    // Done: compensating (kept), or back (leaves the ledger, unless it is a
                    // withdrawn one of an outage still on: kept so it is not chosen again).
                    return compensating || (active && k.withdrawn);
                }
                if now != from {
                    // Someone else changed it meanwhile: theirs now.
                    return false;
                }
                read_set.push(view.read_cell(n));
                if to.0 != now.0 {
                    writes.push(write(&k.cell, Param::ElectricalTilt, to.0));
                }
                if to.1 != now.1 {
                    writes.push(write(&k.cell, Param::MaxTxPowerDbm, to.1));
                }
                if cell.own {
                    cells.push(k.cell.clone());
                }
                what.push(format!(
                    "{} tilt {:.1} -> {:.1}°, power {} -> {} dBm",
                    k.cell,
                    f64::from(now.0) / 10.0,
                    f64::from(to.0) / 10.0,
                    now.1,
                    to.1
                ));
                true
            });
            if list.is_empty() && !active {
                finished.push(failed.clone());
            }
            if writes.is_empty() {
                continue;
            }
            let reason = if active {
                let mut parts = Vec::new();
                if !what.is_empty() {
                    parts.push(format!(
                        "compensating {failed} (in outage): {}",
                        what.join("; ")
                    ));
                }
                if !withdrawn.is_empty() {
                    parts.push(format!(
                        "{failed}'s compensation withdrawn from {}",
                        withdrawn.join("; ")
                    ));
                }
                parts.join("; ")
            } else {
                format!(
                    "{failed} is back: reverting its compensation: {}",
                    what.join("; ")
                )
            };
            out.push(Proposal {
                change_set: ChangeSet {
                    origin: Origin {
                        node,
                        function: Function::OutageCompensation,
                    },
                    reason,
                    read_set,
                    writes,
                    proposed_at_ms: now_ms,
                },
                cells,
            });
        }
        for f in finished {
            self.cells.remove(&f);
        }
        if self.cells != before {
            self.save();
        }
        out
    }
}

fn write(cell: &str, param: Param, value: i16) -> Write {
    Write {
        entity: EntityRef::cell(cell),
        param,
        value: Value::Int(value.into()),
    }
}

/// The cells that compensate `c`: same carrier, a relation into `c`, not co-site, not down,
/// not in outage, under [`MAX_COMPENSATOR_LOAD_PCT`] (or of unknown load); those with something
/// left to give, at most [`MAX_COMPENSATORS`] (the most room first, then the least loaded),
/// with their values now and compensated.
fn compensators(
    view: &RadioView,
    c: u32,
    outage: &HashSet<u32>,
    load: &impl Fn(u32) -> Option<f64>,
) -> Vec<Compensator> {
    let failed = view.cell(c);
    let mut out: Vec<(i16, Compensator)> = view.incoming[c as usize]
        .iter()
        .copied()
        .filter(|&n| {
            let cell = view.cell(n);
            n != c
                && cell.arfcn == failed.arfcn
                && cell.cell_site != failed.cell_site
                && !cell.down
                && !outage.contains(&n)
                && load(n).is_none_or(|l| l < MAX_COMPENSATOR_LOAD_PCT)
        })
        .filter_map(|n| {
            let cell = view.cell(n);
            let tilt = (cell.electrical_tilt - UPTILT).max(cell.tilt_min);
            let power = (cell.max_tx_power_dbm + POWER_UP_DB).min(MAX_POWER_DBM);
            let room = (cell.electrical_tilt - tilt) + (power - cell.max_tx_power_dbm);
            (room > 0).then(|| {
                (
                    room,
                    Compensator {
                        cell: view.id(n).to_string(),
                        tilt: (cell.electrical_tilt, tilt.min(cell.electrical_tilt)),
                        power: (cell.max_tx_power_dbm, power.max(cell.max_tx_power_dbm)),
                        withdrawn: false,
                    },
                )
            })
        })
        .collect();
    let load_of = |k: &Compensator| {
        view.index
            .get(&k.cell)
            .and_then(|n| load(*n))
            .unwrap_or(0.0)
    };
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| load_of(&a.1).total_cmp(&load_of(&b.1)))
            .then_with(|| a.1.cell.cmp(&b.1.cell))
    });
    out.dedup_by(|a, b| a.1.cell == b.1.cell);
    out.into_iter()
        .take(MAX_COMPENSATORS)
        .map(|(_, k)| k)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sonraft_raft::model::image::NetworkImage;

    use super::super::testing::{cell, image, relation, view};
    use super::*;

    /// A1 (site A) fails; Z1 and Z2 (site Z) point at it, Z3 is on another carrier, A2 is
    /// co-site.
    fn img(z1_tilt: i64) -> NetworkImage {
        let mut z1 = cell("Z1", 11, 1300);
        z1["electrical_tilt"] = json!(z1_tilt);
        image(
            vec![
                cell("A1", 1, 1300),
                cell("A2", 2, 1300),
                z1,
                cell("Z2", 12, 1300),
                cell("Z3", 13, 636_666),
            ],
            vec![
                relation("Z1", "A1"),
                relation("Z2", "A1"),
                relation("Z3", "A1"),
                relation("A2", "A1"),
            ],
        )
    }

    fn writes(ps: &[Proposal]) -> Vec<(String, String, i64)> {
        ps.iter()
            .flat_map(|p| &p.change_set.writes)
            .map(|w| {
                let Value::Int(v) = w.value else { panic!() };
                (w.entity.to_string(), w.param.to_string(), v)
            })
            .collect()
    }

    fn set(img: &mut NetworkImage, cell: &str, tilt: i16, power: i16) {
        let c = img.cells.get_mut(cell).unwrap();
        c.electrical_tilt = tilt;
        c.max_tx_power_dbm = power;
        c.version += 1;
    }

    #[test]
    fn neighbours_pointing_at_a_cell_in_outage_compensate_and_go_back_when_it_returns() {
        let mut img = img(40);
        let v = view(&img);
        let mut ledger = Ledger::default();
        let outage = HashSet::from([v.index["A1"]]);
        let ps = ledger.propose(&v, &outage, |_| None, 1, 0);
        assert_eq!(ps.len(), 1);
        assert_eq!(
            ps[0].change_set.origin.function,
            Function::OutageCompensation
        );
        assert_eq!(
            writes(&ps),
            [
                ("cell/Z1".into(), "electrical_tilt".into(), 30),
                ("cell/Z1".into(), "max_tx_power_dbm".into(), 49),
                ("cell/Z2".into(), "electrical_tilt".into(), 30),
                ("cell/Z2".into(), "max_tx_power_dbm".into(), 49),
            ],
            "Z3 (other carrier) and A2 (co-site) do not compensate"
        );
        // Not applied yet (refused, lost): proposed again next period.
        assert_eq!(
            writes(&ledger.propose(&v, &outage, |_| None, 1, 0)).len(),
            4
        );
        // Applied: nothing more while the outage lasts.
        set(&mut img, "Z1", 30, 49);
        set(&mut img, "Z2", 30, 49);
        let v = view(&img);
        assert!(ledger.propose(&v, &outage, |_| None, 1, 0).is_empty());
        // Back: both revert; someone else's change to Z2 meanwhile would be left alone.
        set(&mut img, "Z2", 35, 49);
        let v = view(&img);
        let ps = ledger.propose(&v, &HashSet::new(), |_| None, 1, 0);
        assert_eq!(
            writes(&ps),
            [
                ("cell/Z1".into(), "electrical_tilt".into(), 40),
                ("cell/Z1".into(), "max_tx_power_dbm".into(), 46),
            ]
        );
        assert!(ps[0].change_set.reason.starts_with("A1 is back"));
        set(&mut img, "Z1", 40, 46);
        let v = view(&img);
        assert!(
            ledger
                .propose(&v, &HashSet::new(), |_| None, 1, 0)
                .is_empty()
        );
        assert!(
            ledger.cells.is_empty(),
            "finished compensations leave the ledger"
        );
    }

    #[test]
    fn compensation_stays_inside_the_tilt_box_and_a_cell_with_no_room_is_not_used() {
        let mut img = img(0);
        for c in ["Z1", "Z2"] {
            img.cells.get_mut(c).unwrap().tilt_box.min = 0;
        }
        img.cells.get_mut("Z2").unwrap().max_tx_power_dbm = MAX_POWER_DBM;
        img.cells.get_mut("Z2").unwrap().electrical_tilt = 0;
        let v = view(&img);
        let ps = Ledger::default().propose(&v, &HashSet::from([v.index["A1"]]), |_| None, 1, 0);
        assert_eq!(
            writes(&ps),
            [("cell/Z1".into(), "max_tx_power_dbm".into(), 49)],
            "Z1 is at its box's lowest tilt; Z2 has no room at all"
        );
    }

    #[test]
    fn a_full_neighbour_does_not_compensate_and_one_that_fills_up_withdraws() {
        let mut img = img(40);
        let v = view(&img);
        let (z1, z2) = (v.index["Z1"], v.index["Z2"]);
        let mut ledger = Ledger::default();
        let outage = HashSet::from([v.index["A1"]]);
        // Z2 is already at 75 %: only Z1 compensates.
        let busy = move |n: u32| Some(if n == z2 { 75.0 } else { 40.0 });
        let ps = ledger.propose(&v, &outage, busy, 1, 0);
        assert!(
            writes(&ps).iter().all(|w| w.0 == "cell/Z1"),
            "{:?}",
            writes(&ps)
        );
        set(&mut img, "Z1", 30, 49);
        let v = view(&img);
        // Z1 fills up with the outage's users: it goes back, and is not chosen again.
        let full = move |n: u32| Some(if n == z1 { 90.0 } else { 40.0 });
        let ps = ledger.propose(&v, &outage, full, 1, 0);
        assert_eq!(
            writes(&ps),
            [
                ("cell/Z1".into(), "electrical_tilt".into(), 40),
                ("cell/Z1".into(), "max_tx_power_dbm".into(), 46),
            ]
        );
        assert!(
            ps[0].change_set.reason.contains("withdrawn"),
            "{}",
            ps[0].change_set.reason
        );
        set(&mut img, "Z1", 40, 46);
        let v = view(&img);
        assert!(ledger.propose(&v, &outage, full, 1, 0).is_empty());
    }

    #[test]
    fn a_cell_compensates_one_outage_at_a_time() {
        // A1 and A2 (site A) both fail; Z1 points at both. It compensates the first only, so
        // that each revert puts back values that were Z1's own.
        let img = image(
            vec![
                cell("A1", 1, 1300),
                cell("A2", 2, 1300),
                cell("Z1", 11, 1300),
            ],
            vec![relation("Z1", "A1"), relation("Z1", "A2")],
        );
        let v = view(&img);
        let mut ledger = Ledger::default();
        let both = HashSet::from([v.index["A1"], v.index["A2"]]);
        let ps = ledger.propose(&v, &both, |_| None, 1, 0);
        assert_eq!(ps.len(), 1, "{ps:?}");
        let users: Vec<usize> = ["A1", "A2"]
            .iter()
            .map(|c| ledger.cells.get(*c).map_or(0, Vec::len))
            .collect();
        assert_eq!(users.iter().sum::<usize>(), 1, "{:?}", ledger.cells);
    }

    #[test]
    fn the_ledger_survives_a_restart_and_a_damaged_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let img = img(40);
        let v = view(&img);
        let mut ledger = Ledger::load(dir.path());
        ledger.propose(&v, &HashSet::from([v.index["A1"]]), |_| None, 1, 0);
        let again = Ledger::load(dir.path());
        assert_eq!(again.cells, ledger.cells);
        assert_eq!(again.cells["A1"].len(), 2);
        std::fs::write(dir.path().join("son-compensations.json"), b"{not json").unwrap();
        assert!(Ledger::load(dir.path()).cells.is_empty());
        assert!(dir.path().join("son-compensations.json.damaged").exists());
    }
}
