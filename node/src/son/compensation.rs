//! Cell outage compensation (COC; command format 6): while one of this site's cells is in
//! outage ([`super::outage`]), its neighbours on the same carrier that have a relation into it
//! (at most `max_compensators`, not co-site, not down, not in outage themselves, under
//! `max_compensator_load_pct`) uptilt and raise their power, within their tilt box and the
//! radio's [`MAX_POWER_DBM`]; when the cell is back, or a compensating neighbour's load reaches
//! `withdraw_load_pct`, each of them that still has the compensated values returns to what it
//! had. Those three thresholds are the replicated tuning's ([`CompensationTuning`]: 4, 70 %,
//! 85 % by default); the step sizes and the number of steps are this module's, bound to the
//! rules' step limits and the revert's timing.
//!
//! **How far.** A change set may move tilt 1° and power 3 dB (the rules' step limits), and a
//! compensation must be gone within two periods of the cell's return. Compensation goes
//! [`STEPS`] steps, one change set a period: up to 2° of uptilt and 6 dB of power. The revert
//! cannot go a step a period: the period the cell's first report closes is the first of the
//! two, and a step proposed then lands only in the next. So a revert takes all its steps at
//! once, as one change set per step proposed one after the other in the same period
//! ([`Ledger::take_further_steps`]), and is done one period after the cell's return. Power is
//! what gives coverage back (the far side of an outage area is 1.5 inter-site distances from
//! the neighbours, where their vertical pattern costs little more than a dB); it is there only
//! where the cells are configured below the radio's capability, as operators commonly do
//! (43 dBm on a 49 dBm radio): a cell already at 46 dBm gains 3 dB, one at 49 none.
//! Each parameter moves along a fixed path — its value before, then a step at a time to its
//! compensated value — in either direction: a value on that path is compensation's own (a step
//! done, or a revert half done), any other is someone else's.
//!
//! The site keeps a **ledger** of compensations: per failed cell, each compensating cell with
//! its values before and after. Each period it reconciles the image with the ledger — a
//! compensation not yet in the image is proposed (again), a finished outage's compensation is
//! reverted where nobody changed the values since (a cell someone else changed meanwhile is
//! theirs now and left alone) — so a refused or lost proposal is simply retried. The ledger is
//! saved in the node's data directory (`son-compensations.json`), so a restart during an outage
//! still reverts it afterwards. After an outage ends its compensators stay watched for as long
//! as an open-loop compensation proposed during it may still be approved: one that lands late
//! is reverted too.
//!
//! A cell compensates one outage at a time, whichever site's: a cell whose tilt or power
//! outage compensation wrote last (the image's stamps, the same at every site) is not chosen,
//! so two sites never stack compensations on one cell and leave it uptilted after both reverts.
//! One gap remains: when a revert's further step does not get through (another function
//! changed the cell in between), the fallback wrote last on halfway values until the next
//! period, and another site whose own outage starts in that very period may take them for
//! the cell's own.
//!
//! Compensation answers a fault: it does not wait for other functions' cool-downs, opens no
//! trial (it is undone when the outage ends, not by verification), and its priority holds the
//! optimisers off the compensating cells (see `sonraft_raft::changeset::Function::is_urgent`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};

use sonraft_raft::son::CompensationTuning;

use super::Proposal;
use super::view::RadioView;

/// Change sets a compensation (and its revert) takes at most: the compensation one a period,
/// the revert all in the period it starts.
pub const STEPS: i16 = 2;
/// Uptilt per step, 0.1° (the rules' step limit).
pub const UPTILT: i16 = 10;
/// Power raise per step, dB (the rules' step limit).
pub const POWER_UP_DB: i16 = 3;
/// Highest power compensation sets, dBm: what the simulated radios can transmit.
pub const MAX_POWER_DBM: i16 = 49;

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

/// This period's outages, as detection sees them.
pub struct Outage<'a> {
    /// The own cells in outage.
    pub cells: &'a HashSet<u32>,
    /// Detection has seen enough periods since the node started that a cell not in `cells` is
    /// known to be up: until then nothing is reverted.
    pub settled: bool,
}

/// The compensations this site started and has not finished reverting, by failed cell.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Ledger {
    pub cells: BTreeMap<String, Vec<Compensator>>,
    /// When each finished outage was first seen over (log time, ms). Its compensators stay
    /// watched for as long as an open-loop compensation proposed during the outage may still
    /// be approved ([`RadioView::pending_ttl_ms`]): one that lands late is reverted.
    #[serde(default)]
    pub ended_ms: BTreeMap<String, u64>,
    /// Where the ledger is saved (not saved itself).
    #[serde(skip)]
    path: Option<PathBuf>,
    /// The further steps of this period's reverts, in rounds: round `j` holds each reverting
    /// cell's step `j + 2`, to be proposed once the round before it is through
    /// ([`Ledger::take_further_steps`]).
    #[serde(skip)]
    further: Vec<Vec<Proposal>>,
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
        // Synced, renamed, and the directory synced: after a power cut the ledger is the old
        // one or the new one, never empty (it is what puts the network back).
        let written = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&b)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path))
            .and_then(|()| match path.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            });
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "outage compensation ledger not saved");
        }
    }

    /// A copy that proposes what this one would, without recording anything.
    pub fn frozen(&self) -> Ledger {
        Ledger {
            cells: self.cells.clone(),
            ended_ms: self.ended_ms.clone(),
            path: None,
            further: Vec::new(),
        }
    }

    /// The further steps of the reverts [`Ledger::propose`] proposed this period, in rounds
    /// to propose one after the other, each after the proposals before it were answered.
    ///
    /// A change set moves a parameter one step (1°, 3 dB) and compensation takes two, but a
    /// revert must be done within two periods of the cell's return, the first of which its
    /// first report closes: so a revert takes every step in the period it starts, as
    /// change sets of one step each, every one reading the version the one before produces.
    /// The jump is to values the cell had in service before the outage, not a step into the
    /// unknown that the step limit is there to keep small.
    pub fn take_further_steps(&mut self) -> Vec<Vec<Proposal>> {
        std::mem::take(&mut self.further)
    }

    /// Reconciles the image with the ledger for this period's outages (`outage`: own cells)
    /// and proposes what is missing: compensation for new or unfinished outages, reverts for
    /// finished ones.
    pub fn propose(
        &mut self,
        view: &RadioView,
        outage: &Outage<'_>,
        load: impl Fn(u32) -> Option<f64>,
        node: u64,
        now_ms: u64,
    ) -> Vec<Proposal> {
        let (settled, outage) = (outage.settled, outage.cells);
        let withdraw_pct = f64::from(view.tuning.outage_compensation.withdraw_load_pct);
        let before = (self.cells.clone(), self.ended_ms.clone());
        let mut out = Vec::new();
        // New outages: choose the compensators once, with their values now. A cell already
        // compensating another outage is left out (here, or at any site: `compensating`): its
        // values now are not its own, and two reverts would fight over what it goes back to.
        // One only watched after its outage, with its own values back, is free.
        let mut busy: HashSet<String> = self
            .cells
            .iter()
            .flat_map(|(failed, list)| list.iter().map(move |k| (failed, k)))
            .filter(|(failed, k)| {
                !self.ended_ms.contains_key(*failed)
                    || view.index.get(k.cell.as_str()).is_some_and(|&n| {
                        let c = view.cell(n);
                        (c.electrical_tilt, c.max_tx_power_dbm) != (k.tilt.0, k.power.0)
                    })
            })
            .map(|(_, k)| k.cell.clone())
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
        let mut further: Vec<Vec<Proposal>> = Vec::new();
        for (failed, list) in &mut self.cells {
            let active = view
                .index
                .get(failed.as_str())
                .is_some_and(|c| outage.contains(c));
            if !active && !settled {
                // Not known to be back yet (this node just started): wait.
                continue;
            }
            let watching = if active {
                self.ended_ms.remove(failed);
                false
            } else {
                let ended = *self.ended_ms.entry(failed.clone()).or_insert(now_ms);
                now_ms < ended.saturating_add(view.pending_ttl_ms)
            };
            let mut withdrawn = Vec::new();
            list.retain_mut(|k| {
                let Some(&n) = view.index.get(k.cell.as_str()) else {
                    return false;
                };
                let cell = view.cell(n);
                // A compensating cell that filled up goes back, and stays out of this outage.
                if active && !k.withdrawn && load(n).is_some_and(|l| l >= withdraw_pct) {
                    k.withdrawn = true;
                    withdrawn.push(k.cell.clone());
                }
                let compensating = active && !k.withdrawn;
                // Each parameter on its own: done, to write, or someone else's now. Compensation
                // goes one step a period; a revert goes all the way in this period, in change
                // sets of one step each.
                let mut live = false;
                let (mut tilts, mut powers) = (Vec::new(), Vec::new());
                for ((before, during), now, step, path) in [
                    (k.tilt, cell.electrical_tilt, UPTILT, &mut tilts),
                    (k.power, cell.max_tx_power_dbm, POWER_UP_DB, &mut powers),
                ] {
                    let to = if compensating { during } else { before };
                    if now == to {
                        live |= compensating;
                        continue;
                    }
                    *path = steps_towards(before, during, step, now, to);
                    if compensating {
                        path.truncate(1);
                    }
                    live |= !path.is_empty();
                }
                let mut from = (cell.electrical_tilt, cell.max_tx_power_dbm);
                for i in 0..tilts.len().max(powers.len()) {
                    let next = (
                        tilts.get(i).copied().unwrap_or(from.0),
                        powers.get(i).copied().unwrap_or(from.1),
                    );
                    let mut writes = Vec::new();
                    if next.0 != from.0 {
                        writes.push(write(&k.cell, Param::ElectricalTilt, next.0));
                    }
                    if next.1 != from.1 {
                        writes.push(write(&k.cell, Param::MaxTxPowerDbm, next.1));
                    }
                    let what = format!(
                        "{}: tilt {:.1} -> {:.1}°, power {} -> {} dBm (towards {:.1}°, {} dBm)",
                        k.cell,
                        f64::from(from.0) / 10.0,
                        f64::from(next.0) / 10.0,
                        from.1,
                        next.1,
                        f64::from(if compensating { k.tilt.1 } else { k.tilt.0 }) / 10.0,
                        if compensating { k.power.1 } else { k.power.0 }
                    );
                    let (function, reason) = if compensating {
                        (
                            Function::OutageCompensation,
                            format!("compensating {failed} (in outage): {what}"),
                        )
                    } else if active {
                        (
                            Function::Fallback,
                            format!(
                                "{} reached {:.0} % compensating {failed} (withdrawn at {withdraw_pct:.0} %): {what}",
                                k.cell,
                                load(n).unwrap_or(0.0)
                            ),
                        )
                    } else {
                        (
                            Function::Fallback,
                            format!("{failed} is back: reverting its compensation: {what}"),
                        )
                    };
                    // Each further step reads the version the one before it produces: it
                    // applies right after that one, or not at all (and is proposed again).
                    let mut read = view.read_cell(n);
                    read.version += i as u64;
                    let proposal = Proposal {
                        change_set: ChangeSet {
                            origin: Origin { node, function },
                            reason,
                            read_set: vec![read],
                            writes,
                            proposed_at_ms: now_ms,
                        },
                        cells: if cell.own {
                            vec![k.cell.clone()]
                        } else {
                            Vec::new()
                        },
                    };
                    if i == 0 {
                        out.push(proposal);
                    } else {
                        if further.len() < i {
                            further.resize_with(i, Vec::new);
                        }
                        further[i - 1].push(proposal);
                    }
                    from = next;
                }
                // Kept while something is left to do, a withdrawn one for the rest of its
                // outage (so it is not chosen again), and every one while a late approval of
                // its compensation may still land.
                live || (active && k.withdrawn) || watching
            });
            if !withdrawn.is_empty() {
                tracing::info!(failed = %failed, cells = ?withdrawn, "outage compensation withdrawn from full cells");
            }
            if list.is_empty() && !active {
                finished.push(failed.clone());
            }
        }
        self.further = further;
        for f in finished {
            self.cells.remove(&f);
            self.ended_ms.remove(&f);
        }
        if (&self.cells, &self.ended_ms) != (&before.0, &before.1) {
            self.save();
        }
        out
    }
}

/// The values a parameter compensated from `before` to `during` in steps of at most `step`
/// takes from `now` to `to` (one of the two), a step at a time along the path
/// `before, before ± step, …, during`. Empty when `now` is `to`, or is not on the path: the
/// value is someone else's.
fn steps_towards(before: i16, during: i16, step: i16, now: i16, to: i16) -> Vec<i16> {
    let dir = (during - before).signum();
    let mut path = vec![before];
    let mut v = before;
    while dir != 0 && (during - v) * dir > step {
        v += dir * step;
        path.push(v);
    }
    if during != before {
        path.push(during);
    }
    let Some(i) = path.iter().position(|v| *v == now) else {
        return Vec::new();
    };
    if to == during {
        path.split_off(i + 1)
    } else {
        path.truncate(i);
        path.reverse();
        path
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
/// not in outage, under the tuning's `max_compensator_load_pct` (or of unknown load); those with
/// something left to give, at most `max_compensators` (the most room first, then those facing `c`'s
/// site most directly, then the least loaded), with their values now and compensated.
fn compensators(
    view: &RadioView,
    c: u32,
    outage: &HashSet<u32>,
    load: &impl Fn(u32) -> Option<f64>,
) -> Vec<Compensator> {
    let CompensationTuning {
        max_compensators,
        max_compensator_load_pct,
        ..
    } = view.tuning.outage_compensation;
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
                && !cell.compensating
                && !outage.contains(&n)
                && load(n).is_none_or(|l| l < f64::from(max_compensator_load_pct))
        })
        .filter_map(|n| {
            let cell = view.cell(n);
            let tilt = (cell.electrical_tilt - STEPS * UPTILT).max(cell.tilt_min);
            let power = (cell.max_tx_power_dbm + STEPS * POWER_UP_DB).min(MAX_POWER_DBM);
            let room =
                (cell.electrical_tilt - tilt).max(0) + (power - cell.max_tx_power_dbm).max(0);
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
            .get(k.cell.as_str())
            .and_then(|n| load(*n))
            .unwrap_or(0.0)
    };
    // Whole degrees off, so that the load decides between cells facing the area alike.
    let off_of = |k: &Compensator| {
        view.index
            .get(k.cell.as_str())
            .map_or(180, |n| off_boresight(view, *n, c).round() as i64)
    };
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| off_of(&a.1).cmp(&off_of(&b.1)))
            .then_with(|| load_of(&a.1).total_cmp(&load_of(&b.1)))
            .then_with(|| a.1.cell.cmp(&b.1.cell))
    });
    out.dedup_by(|a, b| a.1.cell == b.1.cell);
    out.into_iter()
        .take(usize::from(max_compensators))
        .map(|(_, k)| k)
        .collect()
}

/// How far off its boresight cell `n` sees the site of cell `c`, degrees (0..=180): a
/// neighbour facing the outage area reaches its far side with the main lobe, one facing
/// half away loses up to 12 dB of its horizontal pattern there.
fn off_boresight(view: &RadioView, n: u32, c: u32) -> f64 {
    let (here, there) = (
        view.site_xy[view.cell(n).cell_site as usize],
        view.site_xy[view.cell(c).cell_site as usize],
    );
    let bearing = (there.0 - here.0)
        .atan2(there.1 - here.1)
        .to_degrees()
        .rem_euclid(360.0);
    let off = (bearing - f64::from(view.cell(n).azimuth)).rem_euclid(360.0);
    off.min(360.0 - off)
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

    fn up(cells: &HashSet<u32>) -> Outage<'_> {
        Outage {
            cells,
            settled: true,
        }
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
        let ps = ledger.propose(&v, &up(&outage), |_| None, 1, 0);
        assert_eq!(ps.len(), 2, "one change set per compensating cell");
        assert!(
            ps.iter()
                .all(|p| p.change_set.origin.function == Function::OutageCompensation)
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
            writes(&ledger.propose(&v, &up(&outage), |_| None, 1, 0)).len(),
            4
        );
        // Applied: the second degree of uptilt (power is at the radio's 49 dBm already).
        set(&mut img, "Z1", 30, 49);
        set(&mut img, "Z2", 30, 49);
        let v = view(&img);
        assert_eq!(
            writes(&ledger.propose(&v, &up(&outage), |_| None, 1, 0)),
            [
                ("cell/Z1".into(), "electrical_tilt".into(), 20),
                ("cell/Z2".into(), "electrical_tilt".into(), 20),
            ]
        );
        // Applied: nothing more while the outage lasts.
        set(&mut img, "Z1", 20, 49);
        set(&mut img, "Z2", 20, 49);
        let v = view(&img);
        assert!(ledger.propose(&v, &up(&outage), |_| None, 1, 0).is_empty());
        // Back: both revert a step at a time, except Z2's tilt, which someone else set
        // meanwhile.
        set(&mut img, "Z2", 35, 49);
        let v = view(&img);
        let ps = ledger.propose(&v, &up(&HashSet::new()), |_| None, 1, 0);
        assert_eq!(
            writes(&ps),
            [
                ("cell/Z1".into(), "electrical_tilt".into(), 30),
                ("cell/Z1".into(), "max_tx_power_dbm".into(), 46),
                ("cell/Z2".into(), "max_tx_power_dbm".into(), 46),
            ]
        );
        assert!(ps[0].change_set.reason.starts_with("A1 is back"));
        // A revert restores what a SON function changed: a fallback, which the operator's
        // controls for outage compensation (off, excluded, a closed window) do not hold back.
        assert_eq!(ps[0].change_set.origin.function, Function::Fallback);
        set(&mut img, "Z1", 30, 46);
        set(&mut img, "Z2", 35, 46);
        let v = view(&img);
        assert_eq!(
            writes(&ledger.propose(&v, &up(&HashSet::new()), |_| None, 1, 0)),
            [("cell/Z1".into(), "electrical_tilt".into(), 40)],
            "the revert's second step"
        );
        set(&mut img, "Z1", 40, 46);
        let v = view(&img);
        assert!(
            ledger
                .propose(&v, &up(&HashSet::new()), |_| None, 1, 0)
                .is_empty()
        );
        // Watched while a late approval could land, then gone.
        assert!(!ledger.cells.is_empty());
        let later = v.pending_ttl_ms + 1;
        assert!(
            ledger
                .propose(&v, &up(&HashSet::new()), |_| None, 1, later)
                .is_empty()
        );
        assert!(
            ledger.cells.is_empty(),
            "finished compensations leave the ledger"
        );
    }

    /// Applies `proposals` in order as the log would, through the change-set rules (from log
    /// index `*index` on); returns how many applied.
    fn apply(img: &mut NetworkImage, index: &mut u64, proposals: &[Proposal]) -> usize {
        use sonraft_raft::changeset::Outcome;
        use sonraft_raft::command::{Command, Response};
        use sonraft_raft::model::image::Changes;
        let mut applied = 0;
        for p in proposals {
            *index += 1;
            let command = Command::ChangeSet(p.change_set.clone());
            match img.apply(*index, &command, &mut Changes::default()) {
                Response::ChangeSet(Outcome::Applied { .. }) => applied += 1,
                other => panic!("{:?} not applied: {other:?}", p.change_set),
            }
        }
        applied
    }

    #[test]
    fn a_revert_is_done_in_the_period_the_cell_returns_in_steps_the_rules_allow() {
        // Z1 and Z2 run at 43 dBm and 4°: compensation takes them to 49 dBm and 2° in two
        // periods. The revert must be done within two periods of A1's return, the first of
        // which A1's first report closes: all of it in that period.
        let mut img = img(40);
        for z in ["Z1", "Z2"] {
            img.cells.get_mut(z).unwrap().max_tx_power_dbm = 43;
        }
        let mut index = 10;
        let mut ledger = Ledger::default();
        let outage = HashSet::from([view(&img).index["A1"]]);
        for _ in 0..2 {
            let ps = ledger.propose(&view(&img), &up(&outage), |_| None, 1, 0);
            assert_eq!(apply(&mut img, &mut index, &ps), 2);
            assert!(
                ledger.take_further_steps().is_empty(),
                "compensation steps once a period"
            );
        }
        let during = |img: &NetworkImage, z: &str| {
            let c = &img.cells[z];
            (c.electrical_tilt, c.max_tx_power_dbm)
        };
        assert_eq!(during(&img, "Z1"), (20, 49));
        // A1 is back: this period's proposals, then the further steps round by round.
        let ps = ledger.propose(&view(&img), &up(&HashSet::new()), |_| None, 1, 0);
        assert_eq!(apply(&mut img, &mut index, &ps), 2);
        for round in ledger.take_further_steps() {
            assert_eq!(apply(&mut img, &mut index, &round), 2);
        }
        assert_eq!(during(&img, "Z1"), (40, 43));
        assert_eq!(during(&img, "Z2"), (40, 43));
        assert!(
            ledger
                .propose(&view(&img), &up(&HashSet::new()), |_| None, 1, 0)
                .is_empty(),
            "nothing left to revert the period after"
        );
    }

    #[test]
    fn a_further_revert_step_does_not_apply_when_another_change_came_in_between() {
        let mut img = img(40);
        let mut index = 10;
        let mut ledger = Ledger::default();
        let outage = HashSet::from([view(&img).index["A1"]]);
        for _ in 0..2 {
            let ps = ledger.propose(&view(&img), &up(&outage), |_| None, 1, 0);
            apply(&mut img, &mut index, &ps);
        }
        assert_eq!(img.cells["Z1"].electrical_tilt, 20);
        let ps = ledger.propose(&view(&img), &up(&HashSet::new()), |_| None, 1, 0);
        apply(&mut img, &mut index, &ps);
        // Someone changes Z1 between the first step and the second: the second reads a stale
        // version and conflicts (it is proposed again next period, from what Z1 has then).
        img.cells.get_mut("Z1").unwrap().version += 1;
        let further = ledger.take_further_steps();
        let z1: Vec<&Proposal> = further
            .iter()
            .flatten()
            .filter(|p| p.change_set.writes[0].entity == EntityRef::cell("Z1"))
            .collect();
        assert_eq!(z1.len(), 1, "{further:?}");
        let r = img.apply(
            index + 1,
            &sonraft_raft::command::Command::ChangeSet(z1[0].change_set.clone()),
            &mut sonraft_raft::model::image::Changes::default(),
        );
        assert!(
            matches!(
                r,
                sonraft_raft::command::Response::ChangeSet(
                    sonraft_raft::changeset::Outcome::Conflict { .. }
                )
            ),
            "{r:?}"
        );
    }

    #[test]
    fn power_configured_below_the_radio_rises_in_steps_the_rules_allow_and_comes_back_the_same_way()
    {
        // Z1 runs at 43 dBm on a 49 dBm radio: 6 dB of headroom, two 3 dB steps up, two down.
        let mut img = img(40);
        img.cells.get_mut("Z1").unwrap().max_tx_power_dbm = 43;
        img.cells.get_mut("Z2").unwrap().max_tx_power_dbm = 43;
        let v = view(&img);
        let mut ledger = Ledger::default();
        let outage = HashSet::from([v.index["A1"]]);
        let z1 = |ps: &[Proposal]| -> Vec<(String, String, i64)> {
            writes(ps)
                .into_iter()
                .filter(|w| w.0 == "cell/Z1")
                .collect()
        };
        let mut seen = Vec::new();
        for (tilt, power) in [(30, 46), (20, 49)] {
            let ps = ledger.propose(&view(&img), &up(&outage), |_| None, 1, 0);
            seen.push(z1(&ps));
            set(&mut img, "Z1", tilt, power);
            set(&mut img, "Z2", tilt, power);
        }
        assert!(
            ledger
                .propose(&view(&img), &up(&outage), |_| None, 1, 0)
                .is_empty()
        );
        for (tilt, power) in [(30, 46), (40, 43)] {
            let ps = ledger.propose(&view(&img), &up(&HashSet::new()), |_| None, 1, 0);
            seen.push(z1(&ps));
            set(&mut img, "Z1", tilt, power);
            set(&mut img, "Z2", tilt, power);
        }
        let step = |t: i64, p: i64| {
            vec![
                ("cell/Z1".to_string(), "electrical_tilt".to_string(), t),
                ("cell/Z1".to_string(), "max_tx_power_dbm".to_string(), p),
            ]
        };
        assert_eq!(
            seen,
            [step(30, 46), step(20, 49), step(30, 46), step(40, 43)]
        );
        assert!(
            ledger
                .propose(&view(&img), &up(&HashSet::new()), |_| None, 1, 0)
                .is_empty(),
            "back to its own values"
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
        let ps =
            Ledger::default().propose(&v, &up(&HashSet::from([v.index["A1"]])), |_| None, 1, 0);
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
        let ps = ledger.propose(&v, &up(&outage), busy, 1, 0);
        assert!(
            writes(&ps).iter().all(|w| w.0 == "cell/Z1"),
            "{:?}",
            writes(&ps)
        );
        set(&mut img, "Z1", 30, 49);
        let v = view(&img);
        // Z1 fills up with the outage's users: it goes back, and is not chosen again.
        let full = move |n: u32| Some(if n == z1 { 90.0 } else { 40.0 });
        let ps = ledger.propose(&v, &up(&outage), full, 1, 0);
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
        assert!(ledger.propose(&v, &up(&outage), full, 1, 0).is_empty());
    }

    #[test]
    fn the_neighbours_facing_the_failed_cell_compensate_before_less_loaded_ones_facing_away() {
        // Site Z lies north-east of A: A is at about 214° from it. Z1 faces away (30°) and is
        // nearly idle; Z2 to Z5 face A (210°) at 50 %. Four compensate: those facing A.
        let mut cells = vec![cell("A1", 1, 1300)];
        let mut relations = Vec::new();
        for (i, az) in [30, 210, 210, 210, 210].into_iter().enumerate() {
            let id = format!("Z{}", i + 1);
            let mut z = cell(&id, 11 + i as u16, 1300);
            z["azimuth"] = json!(az);
            cells.push(z);
            relations.push(relation(&id, "A1"));
        }
        let img = image(cells, relations);
        let v = view(&img);
        let z1 = v.index["Z1"];
        let load = move |n: u32| Some(if n == z1 { 5.0 } else { 50.0 });
        let ps = Ledger::default().propose(&v, &up(&HashSet::from([v.index["A1"]])), load, 1, 0);
        let mut chosen: Vec<String> = writes(&ps).into_iter().map(|w| w.0).collect();
        chosen.dedup();
        assert_eq!(chosen, ["cell/Z2", "cell/Z3", "cell/Z4", "cell/Z5"]);
    }

    #[test]
    fn a_parameter_someone_else_changed_is_theirs_and_the_other_still_goes_back() {
        let mut img = img(40);
        let v = view(&img);
        let mut ledger = Ledger::default();
        let outage = HashSet::from([v.index["A1"]]);
        ledger.propose(&v, &up(&outage), |_| None, 1, 0);
        set(&mut img, "Z1", 30, 49);
        set(&mut img, "Z2", 30, 49);
        // The operator sets Z1's tilt during the outage; its power is still compensation's.
        set(&mut img, "Z1", 35, 49);
        let v = view(&img);
        assert_eq!(
            writes(&ledger.propose(&v, &up(&outage), |_| None, 1, 0)),
            [("cell/Z2".into(), "electrical_tilt".into(), 20)],
            "Z1's tilt is the operator's: only Z2 goes on uptilting"
        );
        let ps = ledger.propose(&v, &up(&HashSet::new()), |_| None, 1, 0);
        let mut w = writes(&ps);
        w.sort();
        assert_eq!(
            w,
            [
                ("cell/Z1".into(), "max_tx_power_dbm".into(), 46),
                ("cell/Z2".into(), "electrical_tilt".into(), 40),
                ("cell/Z2".into(), "max_tx_power_dbm".into(), 46),
            ]
        );
    }

    #[test]
    fn nothing_is_reverted_until_detection_has_settled_after_a_restart() {
        let img = img(40);
        let v = view(&img);
        let mut ledger = Ledger::default();
        ledger.propose(&v, &up(&HashSet::from([v.index["A1"]])), |_| None, 1, 0);
        let mut img = img;
        set(&mut img, "Z1", 30, 49);
        set(&mut img, "Z2", 30, 49);
        let v = view(&img);
        let none = HashSet::new();
        let fresh = Outage {
            cells: &none,
            settled: false,
        };
        assert!(ledger.propose(&v, &fresh, |_| None, 1, 0).is_empty());
        assert_eq!(ledger.cells["A1"].len(), 2, "kept until known to be back");
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
        let ps = ledger.propose(&v, &up(&both), |_| None, 1, 0);
        assert_eq!(ps.len(), 1, "{ps:?}");
        let users: Vec<usize> = ["A1", "A2"]
            .iter()
            .map(|c| ledger.cells.get(*c).map_or(0, Vec::len))
            .collect();
        assert_eq!(users.iter().sum::<usize>(), 1, "{:?}", ledger.cells);
    }

    /// `cell`'s tilt and power as outage compensation set them (at log index `index`).
    fn compensated_by_another_site(img: &mut NetworkImage, cell: &str, tilt: i16, power: i16) {
        use sonraft_raft::model::Stamp;
        set(img, cell, tilt, power);
        let c = img.cells.get_mut(cell).unwrap();
        for p in [Param::ElectricalTilt, Param::MaxTxPowerDbm] {
            c.last_change.insert(
                p,
                Stamp {
                    by: Function::OutageCompensation,
                    at_ms: 1,
                    index: 7,
                },
            );
        }
    }

    #[test]
    fn a_cell_another_site_compensates_with_is_not_chosen_again() {
        // Z1 already compensates an outage of another site's cell (its values are not its
        // own): were it chosen for A1 too, the two reverts would leave it uptilted for good.
        let mut img = img(40);
        compensated_by_another_site(&mut img, "Z1", 30, 49);
        let v = view(&img);
        let ps =
            Ledger::default().propose(&v, &up(&HashSet::from([v.index["A1"]])), |_| None, 1, 0);
        assert!(
            writes(&ps).iter().all(|w| w.0 == "cell/Z2"),
            "{:?}",
            writes(&ps)
        );
        // Once the other site reverted it (a fallback wrote last), it may compensate again.
        set(&mut img, "Z1", 40, 46);
        for p in [Param::ElectricalTilt, Param::MaxTxPowerDbm] {
            img.cells
                .get_mut("Z1")
                .unwrap()
                .last_change
                .get_mut(&p)
                .unwrap()
                .by = Function::Fallback;
        }
        let v = view(&img);
        let ps =
            Ledger::default().propose(&v, &up(&HashSet::from([v.index["A1"]])), |_| None, 1, 0);
        assert!(
            writes(&ps).iter().any(|w| w.0 == "cell/Z1"),
            "{:?}",
            writes(&ps)
        );
    }

    #[test]
    fn a_compensation_approved_after_the_outage_ended_is_reverted() {
        // Open loop: the compensation waits for the operator, the cell comes back first, and the
        // operator approves the stale proposal afterwards. The ledger still watches until no
        // pending proposal can land any more, and puts the cell back.
        let mut img = img(40);
        let v = view(&img);
        let mut ledger = Ledger::default();
        let outage = HashSet::from([v.index["A1"]]);
        assert_eq!(
            ledger.propose(&v, &up(&outage), |_| None, 1, 1_000).len(),
            2
        );
        // Back before anything was approved: nothing to revert yet.
        assert!(
            ledger
                .propose(&v, &up(&HashSet::new()), |_| None, 1, 2_000)
                .is_empty()
        );
        // The approval lands an hour later.
        set(&mut img, "Z1", 30, 49);
        let v = view(&img);
        let ps = ledger.propose(&v, &up(&HashSet::new()), |_| None, 1, 3_600_000);
        assert_eq!(
            writes(&ps),
            [
                ("cell/Z1".into(), "electrical_tilt".into(), 40),
                ("cell/Z1".into(), "max_tx_power_dbm".into(), 46),
            ]
        );
        // Past the longest a proposal may wait, the outage leaves the ledger.
        set(&mut img, "Z1", 40, 46);
        let v = view(&img);
        let late = 2_000 + v.pending_ttl_ms + 1;
        assert!(
            ledger
                .propose(&v, &up(&HashSet::new()), |_| None, 1, late)
                .is_empty()
        );
        assert!(ledger.cells.is_empty(), "{:?}", ledger.cells);
    }

    #[test]
    fn the_ledger_survives_a_restart_and_a_damaged_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let img = img(40);
        let v = view(&img);
        let mut ledger = Ledger::load(dir.path());
        ledger.propose(&v, &up(&HashSet::from([v.index["A1"]])), |_| None, 1, 0);
        let again = Ledger::load(dir.path());
        assert_eq!(again.cells, ledger.cells);
        assert_eq!(again.cells["A1"].len(), 2);
        std::fs::write(dir.path().join("son-compensations.json"), b"{not json").unwrap();
        assert!(Ledger::load(dir.path()).cells.is_empty());
        assert!(dir.path().join("son-compensations.json.damaged").exists());
    }
}
