//! Fencing at the antenna: the ownership epochs a cell has seen, and who applied at which.
//!
//! Control of a cell moves between nodes, and each move raises the cell's ownership epoch (0:
//! the home node, by default). The antenna is the one place every controller's commands pass
//! through, so it is where two controllers are kept from both controlling a cell:
//!
//! - a plain `HELLO` is epoch 0, a `HELLO_FENCED` carries its epoch. One older than the newest
//!   epoch the cell has seen is refused (`ERROR STALE_EPOCH`, the session closes:
//!   `stale_hellos`). A newer one raises the newest epoch, and every open session of the cell
//!   at an older epoch is sent `STALE_EPOCH` and closed (`superseded_sessions`). Sessions of
//!   equal epochs coexist, as sessions did before fencing;
//! - a plain `CONFIG_SET` is at its session's epoch, a `CONFIG_SET_FENCED` at its own. One
//!   older than the newest epoch is refused and its session closed, nothing applied
//!   (`stale_refused`); a newer one raises the newest epoch (superseding as a hello does) and
//!   is applied.
//!
//! The refusal and the apply happen under the cell's own lock, so a hello that raises the
//! epoch cannot slip between a configuration's check and its apply. What was applied is then
//! checked again against a separate record, the highest epoch applied and the controller that
//! applied at it: an apply below it (`stale_applied`) or one at it from another controller
//! (`epoch_conflicts`) is a fencing failure, and tests require both counters to stay 0.
//!
//! A station session (one connection for every cell of a cell site) stands at one epoch for
//! all its cells: its hello and each of its configurations are checked against the newest
//! epoch of every cell of the station and raise them all together, under all their locks
//! (taken in ascending cell order, the only place more than one is held, so no deadlock). It
//! is superseded when any of its cells sees a newer epoch, by a station or a cell session, and
//! a newer station hello or configuration supersedes the older sessions of each of its cells.
//!
//! The memory is the antenna's, not a session's: it outlives sessions (a controller that
//! reconnects at an old epoch is refused), but not the simulator process.
//!
//! Nothing here is on the report path: a session learns that it was superseded from its cell's
//! [`Notify`], and reads the newest epoch from an atomic, without a lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::lock;

/// Controllers whose applies are counted one by one; more (only a misbehaving peer sends that
/// many node ids) are counted together, so the map stays bounded.
const MAX_CONTROLLERS: usize = 64;

/// The fencing memory of every cell, and its counters.
pub(super) struct Fences {
    cells: Vec<CellFence>,
    /// Per cell, its cell site (station).
    site_of: Vec<usize>,
    /// Per cell site: woken when the newest epoch of any of its cells rises.
    sites: Vec<Notify>,
    stale_hellos: AtomicU64,
    stale_refused: AtomicU64,
    superseded_sessions: AtomicU64,
    stale_applied: AtomicU64,
    epoch_conflicts: AtomicU64,
    /// Applies per controller node id (at most [`MAX_CONTROLLERS`] of them).
    applied_by: Mutex<HashMap<u64, u64>>,
    applied_by_others: AtomicU64,
}

/// One cell's fencing memory.
#[derive(Default)]
struct CellFence {
    /// The newest epoch seen. Written only under `applied`'s lock; read without it.
    newest: AtomicU64,
    /// The highest epoch applied at and the controller that applied at it (none yet: `None`).
    applied: Mutex<Option<(u64, u64)>>,
    /// Woken when `newest` rises.
    raised: Notify,
}

/// Where a session stands: its cell, its controller and the epoch it presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Standing {
    pub cell: usize,
    pub controller: u64,
    pub epoch: u64,
}

/// Where a station session stands: its cells (ascending), its controller and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StationStanding {
    pub site: usize,
    cells: Vec<usize>,
    pub controller: u64,
    pub epoch: u64,
}

impl StationStanding {
    /// The station's cells, in ascending order.
    pub fn cells(&self) -> &[usize] {
        &self.cells
    }
}

/// A hello or configuration refused: its epoch is older than `newest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stale {
    pub epoch: u64,
    pub newest: u64,
}

impl Stale {
    /// The `ERROR` frame that says so.
    pub fn frame(self) -> sonraft_protocol::Frame {
        sonraft_protocol::stale_epoch(self.epoch, self.newest)
    }
}

impl Fences {
    /// The fences of `sites` cell sites' cells, whose sites are `site_of` (one entry per
    /// cell; a site without cells still has its station).
    pub fn new(site_of: Vec<usize>, sites: usize) -> Fences {
        let sites = site_of.iter().map(|s| s + 1).fold(sites, usize::max);
        Fences {
            cells: (0..site_of.len()).map(|_| CellFence::default()).collect(),
            site_of,
            sites: (0..sites).map(|_| Notify::new()).collect(),
            stale_hellos: AtomicU64::new(0),
            stale_refused: AtomicU64::new(0),
            superseded_sessions: AtomicU64::new(0),
            stale_applied: AtomicU64::new(0),
            epoch_conflicts: AtomicU64::new(0),
            applied_by: Mutex::new(HashMap::new()),
            applied_by_others: AtomicU64::new(0),
        }
    }

    /// A controller says hello to `cell` at `epoch`: its standing, or why it is refused.
    pub fn hello(&self, cell: usize, controller: u64, epoch: u64) -> Result<Standing, Stale> {
        let fence = &self.cells[cell];
        // Not read: held so that no configuration is between its check and its apply while
        // the epoch rises.
        let _applied = lock(&fence.applied);
        if let Err(stale) = self.admit(cell, epoch) {
            self.stale_hellos.fetch_add(1, Ordering::Relaxed);
            return Err(stale);
        }
        Ok(Standing {
            cell,
            controller,
            epoch,
        })
    }

    /// The newest epoch of the session's cell, if it is newer than the session's: the session
    /// was superseded and must close.
    pub fn superseded(&self, standing: &Standing) -> Option<Stale> {
        let newest = self.newest_epoch(standing.cell);
        (newest > standing.epoch).then_some(Stale {
            epoch: standing.epoch,
            newest,
        })
    }

    /// Counts a session closed because it was superseded.
    pub fn count_superseded(&self) {
        self.superseded_sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Completes when the newest epoch of `cell` rises after this call (it is registered on
    /// creation, before it is polled, so a rise between this call and the wait is not missed).
    pub fn raised(&self, cell: usize) -> Notified<'_> {
        self.cells[cell].raised.notified()
    }

    /// The newest epoch `cell` has seen.
    pub fn newest_epoch(&self, cell: usize) -> u64 {
        self.cells[cell].newest.load(Ordering::Acquire)
    }

    /// A configuration at `epoch` from the session at `standing`: refused if stale, else
    /// `apply` runs (under the cell's lock) and the session now stands at `epoch`.
    pub fn apply<T>(
        &self,
        standing: &mut Standing,
        epoch: u64,
        apply: impl FnOnce() -> T,
    ) -> Result<T, Stale> {
        let fence = &self.cells[standing.cell];
        let mut applied = lock(&fence.applied);
        if let Err(stale) = self.admit(standing.cell, epoch) {
            self.stale_refused.fetch_add(1, Ordering::Relaxed);
            return Err(stale);
        }
        standing.epoch = standing.epoch.max(epoch);
        let out = apply();
        self.check_applied(&mut applied, standing.cell, epoch, standing.controller);
        drop(applied);
        self.count_apply(standing.controller);
        Ok(out)
    }

    /// A controller says hello to the station of `site`, whose cells are `cells`, at `epoch`:
    /// admitted only if no cell of it has seen a newer epoch, and then it raises them all.
    pub fn hello_station(
        &self,
        site: usize,
        cells: &[usize],
        controller: u64,
        epoch: u64,
    ) -> Result<StationStanding, Stale> {
        let mut cells = cells.to_vec();
        cells.sort_unstable();
        cells.dedup();
        let _applied = self.lock_all(&cells);
        if let Err(stale) = self.admit_all(&cells, epoch) {
            self.stale_hellos.fetch_add(1, Ordering::Relaxed);
            return Err(stale);
        }
        Ok(StationStanding {
            site,
            cells,
            controller,
            epoch,
        })
    }

    /// The newest epoch of the station's cells, if one is newer than the session's: it was
    /// superseded (by a station or a cell session) and must close.
    pub fn station_superseded(&self, standing: &StationStanding) -> Option<Stale> {
        let newest = self.newest_of(&standing.cells);
        (newest > standing.epoch).then_some(Stale {
            epoch: standing.epoch,
            newest,
        })
    }

    /// Completes when the newest epoch of any cell of `site` rises after this call (registered
    /// on creation, as [`Fences::raised`]).
    pub fn station_raised(&self, site: usize) -> Notified<'_> {
        self.sites[site].notified()
    }

    /// A configuration of `cell` at `epoch` from the station session at `standing`: refused if
    /// any cell of the station has seen a newer epoch; else every cell of it is raised to
    /// `epoch`, `apply` runs (under their locks) and the session now stands at `epoch`.
    pub fn apply_station<T>(
        &self,
        standing: &mut StationStanding,
        cell: usize,
        epoch: u64,
        apply: impl FnOnce() -> T,
    ) -> Result<T, Stale> {
        let mut applied = self.lock_all(&standing.cells);
        if let Err(stale) = self.admit_all(&standing.cells, epoch) {
            self.stale_refused.fetch_add(1, Ordering::Relaxed);
            return Err(stale);
        }
        standing.epoch = standing.epoch.max(epoch);
        let out = apply();
        if let Some(k) = standing.cells.iter().position(|c| *c == cell) {
            self.check_applied(&mut applied[k], cell, epoch, standing.controller);
        }
        drop(applied);
        self.count_apply(standing.controller);
        Ok(out)
    }

    /// The `applied` locks of `cells` (ascending: see the module doc).
    fn lock_all(&self, cells: &[usize]) -> Vec<std::sync::MutexGuard<'_, Option<(u64, u64)>>> {
        debug_assert!(cells.is_sorted());
        cells
            .iter()
            .map(|c| lock(&self.cells[*c].applied))
            .collect()
    }

    /// The newest epoch any of `cells` has seen.
    fn newest_of(&self, cells: &[usize]) -> u64 {
        cells
            .iter()
            .map(|c| self.newest_epoch(*c))
            .max()
            .unwrap_or(0)
    }

    /// Admits `epoch` on all of `cells` or none: refused if any has seen a newer one, else
    /// each is raised to it. The caller holds their `applied` locks.
    fn admit_all(&self, cells: &[usize], epoch: u64) -> Result<(), Stale> {
        let newest = self.newest_of(cells);
        if epoch < newest {
            return Err(Stale { epoch, newest });
        }
        for &c in cells {
            // Cannot fail: no cell is newer than `epoch`, and their locks are held.
            let _ = self.admit(c, epoch);
        }
        Ok(())
    }

    /// Admits `epoch` at `cell` if it is not older than the newest, raising the newest (and
    /// waking the cell's sessions and its station's) if it is newer. The caller holds the
    /// cell's `applied` lock.
    fn admit(&self, cell: usize, epoch: u64) -> Result<(), Stale> {
        let raised = self.cells[cell].admit(epoch)?;
        if raised {
            self.sites[self.site_of[cell]].notify_waiters();
        }
        Ok(())
    }

    /// Records an apply at `epoch` by `controller` against the highest applied at `cell`,
    /// counting what fencing should have prevented.
    fn check_applied(
        &self,
        applied: &mut Option<(u64, u64)>,
        cell: usize,
        epoch: u64,
        controller: u64,
    ) {
        match *applied {
            Some((highest, _)) if epoch < highest => {
                self.stale_applied.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    cell_index = cell,
                    epoch,
                    highest,
                    "applied below the highest epoch applied"
                );
            }
            Some((highest, by)) if epoch == highest && by != controller => {
                self.epoch_conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    cell_index = cell,
                    epoch,
                    controller,
                    other = by,
                    "two controllers applied at the same epoch"
                );
            }
            _ => *applied = Some((epoch, controller)),
        }
    }

    fn count_apply(&self, controller: u64) {
        let mut by = lock(&self.applied_by);
        let tracked = by.len() < MAX_CONTROLLERS || by.contains_key(&controller);
        if tracked {
            *by.entry(controller).or_default() += 1;
        } else {
            self.applied_by_others.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What `GET /state` shows as `"fencing"`.
    pub fn status(&self) -> Value {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by: serde_json::Map<String, Value> = lock(&self.applied_by)
            .iter()
            .map(|(node, n)| (node.to_string(), json!(n)))
            .collect();
        let fenced = (0..self.cells.len())
            .filter(|c| self.newest_epoch(*c) > 0)
            .count();
        json!({
            "stale_hellos": count(&self.stale_hellos),
            "stale_refused": count(&self.stale_refused),
            "superseded_sessions": count(&self.superseded_sessions),
            "stale_applied": count(&self.stale_applied),
            "epoch_conflicts": count(&self.epoch_conflicts),
            "applied_by_controller": by,
            "applied_by_other_controllers": count(&self.applied_by_others),
            "cells_fenced": fenced,
        })
    }
}

impl CellFence {
    /// Admits `epoch` if it is not older than the newest, raising the newest (and waking the
    /// cell's sessions) if it is newer; whether it rose. The caller holds `applied`'s lock.
    fn admit(&self, epoch: u64) -> Result<bool, Stale> {
        let newest = self.newest.load(Ordering::Acquire);
        if epoch < newest {
            return Err(Stale { epoch, newest });
        }
        if epoch > newest {
            self.newest.store(epoch, Ordering::Release);
            self.raised.notify_waiters();
        }
        Ok(epoch > newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(f: &Fences, name: &str) -> u64 {
        f.status()[name].as_u64().unwrap()
    }

    #[test]
    fn a_newer_hello_raises_the_epoch_and_supersedes_older_sessions_only() {
        let f = Fences::new(vec![0, 1], 2);
        let old = f.hello(0, 1, 0).unwrap();
        let same = f.hello(0, 2, 0).unwrap();
        let other_cell = f.hello(1, 1, 0).unwrap();
        let new = f.hello(0, 2, 5).unwrap();
        assert_eq!(
            f.superseded(&old),
            Some(Stale {
                epoch: 0,
                newest: 5
            })
        );
        assert!(f.superseded(&same).is_some());
        assert_eq!(f.superseded(&new), None);
        assert_eq!(f.superseded(&other_cell), None);
        assert_eq!((f.newest_epoch(0), f.newest_epoch(1)), (5, 0));
        assert_eq!(counter(&f, "cells_fenced"), 1);
    }

    #[test]
    fn a_hello_older_than_the_newest_epoch_is_refused_and_counted() {
        let f = Fences::new(vec![0], 1);
        f.hello(0, 2, 5).unwrap();
        assert_eq!(
            f.hello(0, 1, 4),
            Err(Stale {
                epoch: 4,
                newest: 5
            })
        );
        assert!(f.hello(0, 1, 0).is_err());
        assert!(f.hello(0, 3, 5).is_ok(), "an equal epoch is admitted");
        assert_eq!(counter(&f, "stale_hellos"), 2);
    }

    #[test]
    fn a_stale_configuration_is_not_applied_and_a_newer_one_raises_the_epoch() {
        let f = Fences::new(vec![0], 1);
        let mut old = f.hello(0, 1, 0).unwrap();
        let mut new = f.hello(0, 2, 5).unwrap();
        let mut ran = false;
        assert!(f.apply(&mut old, 0, || ran = true).is_err());
        assert!(!ran, "a stale configuration reached the cell");
        assert_eq!(f.apply(&mut new, 7, || 42), Ok(42));
        assert_eq!((new.epoch, f.newest_epoch(0)), (7, 7));
        assert!(f.apply(&mut new, 5, || ()).is_err());
        assert_eq!(counter(&f, "stale_refused"), 2);
        assert_eq!(f.status()["applied_by_controller"], json!({"2": 1}));
        assert_eq!(
            (counter(&f, "stale_applied"), counter(&f, "epoch_conflicts")),
            (0, 0)
        );
    }

    #[test]
    fn two_controllers_applying_at_one_epoch_are_counted_as_a_conflict() {
        let f = Fences::new(vec![0], 1);
        let mut a = f.hello(0, 1, 3).unwrap();
        let mut b = f.hello(0, 2, 3).unwrap();
        f.apply(&mut a, 3, || ()).unwrap();
        f.apply(&mut a, 3, || ()).unwrap();
        assert_eq!(counter(&f, "epoch_conflicts"), 0);
        f.apply(&mut b, 3, || ()).unwrap();
        assert_eq!(counter(&f, "epoch_conflicts"), 1);
        assert_eq!(f.status()["applied_by_controller"], json!({"1": 2, "2": 1}));
    }

    #[test]
    fn applies_are_counted_per_controller_up_to_a_bound() {
        let f = Fences::new(vec![0], 1);
        for node in 0..MAX_CONTROLLERS as u64 + 3 {
            let mut s = f.hello(0, node, 0).unwrap();
            f.apply(&mut s, 0, || ()).unwrap();
        }
        let by = f.status()["applied_by_controller"]
            .as_object()
            .unwrap()
            .len();
        assert_eq!(by, MAX_CONTROLLERS);
        assert_eq!(counter(&f, "applied_by_other_controllers"), 3);
    }

    /// Takeovers race with configurations of the controllers they supersede: what reaches the
    /// cell, in the order it reaches it, never goes back in epoch.
    #[test]
    fn under_racing_takeovers_applies_reach_the_cell_in_epoch_order() {
        let f = Fences::new(vec![0], 1);
        let reached = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for controller in 0..4u64 {
                let (f, reached) = (&f, &reached);
                scope.spawn(move || {
                    for round in 0..300u64 {
                        let Ok(mut s) = f.hello(0, controller, round * 4 + controller % 2) else {
                            continue;
                        };
                        for _ in 0..3 {
                            let epoch = s.epoch;
                            let _ = f.apply(&mut s, epoch, || lock(reached).push(epoch));
                        }
                    }
                });
            }
        });
        let reached = reached.into_inner().unwrap();
        assert!(reached.len() > 300, "only {} applies", reached.len());
        assert!(
            reached.windows(2).all(|w| w[0] <= w[1]),
            "an older epoch reached the cell after a newer one"
        );
        assert_eq!(counter(&f, "stale_applied"), 0);
    }

    #[test]
    fn a_station_hello_is_refused_if_any_of_its_cells_is_newer_and_raises_them_all_otherwise() {
        let f = Fences::new(vec![0, 0, 0, 1], 2);
        let cell_session = f.hello(1, 1, 0).unwrap();
        let other_site = f.hello(3, 1, 0).unwrap();
        f.hello(2, 2, 4).unwrap();
        assert_eq!(
            f.hello_station(0, &[0, 1, 2], 1, 3),
            Err(Stale {
                epoch: 3,
                newest: 4
            })
        );
        assert_eq!(
            f.newest_epoch(0),
            0,
            "a refused station hello raised a cell"
        );

        let station = f.hello_station(0, &[2, 1, 0], 1, 5).unwrap();

        assert_eq!(station.cells(), &[0, 1, 2]);
        assert_eq!(
            (0..4).map(|c| f.newest_epoch(c)).collect::<Vec<_>>(),
            [5, 5, 5, 0]
        );
        assert!(f.superseded(&cell_session).is_some());
        assert_eq!(f.superseded(&other_site), None);
        assert_eq!(f.station_superseded(&station), None);
        assert_eq!(counter(&f, "stale_hellos"), 1);
    }

    #[test]
    fn a_newer_cell_epoch_supersedes_its_station_session() {
        let f = Fences::new(vec![0, 0], 1);
        let station = f.hello_station(0, &[0, 1], 1, 2).unwrap();
        f.hello(1, 2, 3).unwrap();
        assert_eq!(
            f.station_superseded(&station),
            Some(Stale {
                epoch: 2,
                newest: 3
            })
        );
    }

    #[test]
    fn a_station_configuration_is_fenced_by_every_cell_and_raises_them_all() {
        let f = Fences::new(vec![0, 0], 1);
        let mut station = f.hello_station(0, &[0, 1], 1, 2).unwrap();
        assert_eq!(f.apply_station(&mut station, 0, 4, || 7), Ok(7));
        assert_eq!(
            (station.epoch, f.newest_epoch(0), f.newest_epoch(1)),
            (4, 4, 4)
        );
        f.hello(1, 2, 6).unwrap();
        let mut ran = false;
        assert!(f.apply_station(&mut station, 0, 4, || ran = true).is_err());
        assert!(!ran, "a stale configuration reached the cell");
        assert_eq!(counter(&f, "stale_refused"), 1);
        assert_eq!(f.status()["applied_by_controller"], json!({"1": 1}));
    }

    #[tokio::test]
    async fn a_raise_of_any_cell_wakes_its_station_session() {
        let f = Fences::new(vec![0, 0, 1], 2);
        let waiting = f.station_raised(0);
        f.hello(1, 2, 1).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("the raise was missed");
    }

    #[tokio::test]
    async fn a_raise_wakes_a_waiting_session() {
        let f = Fences::new(vec![0], 1);
        let waiting = f.raised(0);
        f.hello(0, 2, 1).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("the raise was missed");
    }
}
