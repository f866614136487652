//! SON functions: each closed counter period, a site summarises its cells' KPIs into the
//! replicated image, then runs its functions over a view of the image and proposes change sets.
//!
//! - [`view`]: the compact view the functions read;
//! - [`pci`]: PCI collision and confusion resolution;
//! - [`load_balancing`]: mobility load balancing through CIO;
//! - [`robustness`]: mobility robustness through hysteresis and time-to-trigger;
//! - [`anr`]: pruning of dead and failing relations;
//! - [`anr_add`]: relations to the neighbours the users measure but the cell does not know;
//! - [`energy_saving`]: capacity cells dormant while their coverage partners can carry
//!   their users;
//! - [`outage`]: detection of hard outages and sleeping cells, which the others leave alone;
//! - [`compensation`]: neighbours of a cell in outage cover for it until it returns;
//! - [`coverage`]: coverage and capacity optimisation, tilt and power against overshooting
//!   cells and coverage holes.
//!
//! Functions coordinate through the log, not with each other or with other sites: every
//! proposal carries its read set and is judged by the apply-time rules (cool-downs, priorities,
//! step limits). A `conflict` means the view was stale: the site re-captures it and recomputes,
//! once per period; a `rejected` proposal is left for a later period. One exception, as 3GPP's
//! MRO/MLB coordination has it: mobility robustness does not step back the offsets load
//! balancing holds for a cell still above its release threshold (`robustness`), or the two
//! would take turns on one offset.

pub mod anr;
pub mod anr_add;
pub mod compensation;
pub mod coverage;
pub mod energy_saving;
pub mod load_balancing;
pub mod outage;
pub mod pci;
mod priority;
pub mod robustness;
#[cfg(test)]
mod testing;
pub mod verify;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use sonraft_protocol::{RELATION_COUNTERS, ReportView, cell_counter as cc, relation_counter as rc};
use sonraft_raft::changeset::{ChangeSet, Function, Outcome};
use sonraft_raft::command::{Command, KpiBatch, Response};
use sonraft_raft::model::KpiSummary;
use sonraft_raft::model::{CellId, RelationKey};
use sonraft_raft::rules::TRIAL_IDS_FORMAT;
use sonraft_storage::AppliedChanges;

use futures_lite_stream::buffer_unordered;
use tokio::sync::mpsc;

use crate::Node;
use crate::antennas::awaiting::Closing;
use crate::antennas::counters::ClosedPeriod;
use crate::antennas::fleet::Fleet;
use crate::propose::now_ms;
use view::{FastMap, RadioView};

/// A change set and the own cells whose antennas it reconfigures.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub change_set: ChangeSet,
    pub cells: Vec<String>,
}

/// One closed period's counters of this site's cells, indexed like the view, in maps hashed
/// with FNV ([`FastMap`]): 100,000 cells' worth of inserts and lookups each period.
#[derive(Debug, Default, Clone)]
pub struct PeriodInput {
    pub prb_pct: FastMap<u32, f64>,
    /// `RRU.PrbAvailDl` of each reporting cell.
    pub prb_avail: FastMap<u32, u64>,
    /// `RRC.ConnMean` of each reporting cell.
    pub conn: FastMap<u32, u64>,
    /// Own cells in outage ([`outage`]): the functions leave them and their relations alone.
    pub outage: HashSet<u32>,
    /// Own cells missing from this period whose antenna session is up and reported the
    /// period before or later: their reports arrive after the period closed (late, not out).
    pub late: HashSet<u32>,
    pub relations: FastMap<u32, Vec<(u32, [u64; RELATION_COUNTERS.len()])>>,
    /// The coverage counters of each reporting cell ([`coverage`]).
    pub coverage: FastMap<u32, coverage::Sample>,
    /// Neighbours the users of each own cell measured that it has no relation to, with their
    /// measurement reports, from the report's `/PCI/ARFCN[/CELL]` entries ([`anr_add`]).
    pub unknown: FastMap<u32, Vec<anr_add::Sighting>>,
    /// The period's end (ms since the Unix epoch) and length.
    pub end_ms: u64,
    pub period_ms: u32,
}

impl PeriodInput {
    pub fn new(view: &RadioView, period: &ClosedPeriod) -> PeriodInput {
        let mut input = PeriodInput {
            end_ms: period.end_ms,
            period_ms: period.period_ms,
            ..PeriodInput::default()
        };
        for (cell, body) in &period.reports {
            let (Some(&c), Ok(r)) = (view.index.get(&**cell), ReportView::parse(body)) else {
                continue;
            };
            let tot = r.cell[cc::PRB_AVAIL_DL].max(1) as f64;
            input
                .prb_pct
                .insert(c, r.cell[cc::PRB_USED_DL] as f64 * 100.0 / tot);
            input.prb_avail.insert(c, r.cell[cc::PRB_AVAIL_DL]);
            input.conn.insert(c, r.cell[cc::CONN_MEAN]);
            input.coverage.insert(c, coverage::Sample::of(&r));
            // One pass over the report's relations: known targets by their index, measured
            // unknown ones (`/PCI/ARFCN[/CELL]`) for ANR.
            let mut rels = Vec::new();
            let mut unknown: Vec<anr_add::Sighting> = Vec::new();
            for (target, values) in r.relations() {
                if let Some(&t) = view.index.get(target) {
                    rels.push((t, values));
                }
                if let Some(m) = anr_add::parse_unknown(target) {
                    unknown.push((m, values[rc::ATT]));
                }
            }
            input.relations.insert(c, rels);
            if !unknown.is_empty() {
                input.unknown.insert(c, unknown);
            }
        }
        input
    }

    /// A cell's load: this period's report for own cells, the replicated summary otherwise.
    pub fn prb_pct(&self, view: &RadioView, c: u32) -> Option<f64> {
        self.prb_pct
            .get(&c)
            .copied()
            .or_else(|| view.cell(c).prb_permille.map(|p| f64::from(p) / 10.0))
    }

    /// Handover success ratio of relation `source -> target` this period.
    pub fn ho_success(&self, source: u32, target: u32) -> Option<f64> {
        let v = self
            .relations
            .get(&source)?
            .iter()
            .find(|(t, _)| *t == target)?
            .1;
        (v[rc::ATT] > 0).then(|| v[rc::SUCC] as f64 / v[rc::ATT] as f64)
    }
}

/// Own cells missing from `input` whose sessions are `reporting` (see [`PeriodInput::late`]).
fn late_cells(view: &RadioView, input: &PeriodInput, reporting: &HashSet<String>) -> HashSet<u32> {
    reporting
        .iter()
        .filter_map(|id| view.index.get(id.as_str()).copied())
        .filter(|c| !input.prb_pct.contains_key(c))
        .collect()
}

/// KPI summaries of a closed period, for replication.
pub fn summaries(period: &ClosedPeriod) -> Vec<KpiSummary> {
    let mut out: Vec<KpiSummary> = period
        .reports
        .iter()
        .filter_map(|(cell, body)| Some((cell, ReportView::parse(body).ok()?)))
        .map(|(cell, r)| KpiSummary {
            cell: CellId::from(&**cell),
            period_end_ms: period.end_ms,
            prb_dl_permille: (r.cell[cc::PRB_USED_DL] * 1000 / r.cell[cc::PRB_AVAIL_DL].max(1))
                .min(1000) as u16,
            rrc_conn_mean: r.cell[cc::CONN_MEAN].min(u64::from(u32::MAX)) as u32,
            thp_dl_kbps: r.cell[cc::THP_DL].min(u64::from(u32::MAX)) as u32,
            ho_att: r.cell[cc::HO_ATT].min(u64::from(u32::MAX)) as u32,
            ho_succ: r.cell[cc::HO_SUCC].min(u64::from(u32::MAX)) as u32,
        })
        .collect();
    out.sort_by(|a, b| a.cell.cmp(&b.cell));
    out
}

/// Summaries per replicated command: with a cell id of up to 24 characters, at most ~7 KB a
/// log entry (a test holds it under 8 KiB). Large sled values are the problem: pages of
/// values past ~10 KB are written as blob files, and sled 0.34 does not always delete the blob
/// of a page it replaced. With 5 000 summaries an entry (27 KB for a 1 000-cell site) the log's
/// blob files leaked ~1-5 MB a minute per node at the 500 ms demo period.
pub const SUMMARIES_PER_ENTRY: usize = 128;
/// Verdicts in flight at once, and change sets while the cluster names trials by their entry's
/// index (before command format 10): each is an entry of its own, so how many the leader can
/// append, sync and apply together is how many are in flight. At 100,000 cells a period
/// brings thousands.
const CONCURRENCY: usize = 128;
/// Change sets in one entry once the cluster names trials by id (command format 10): at most
/// ~300 B each, so an entry stays under ~80 KB.
const CHANGE_SETS_PER_ENTRY: usize = 256;
/// Such entries in flight at once.
const ENTRIES_IN_FLIGHT: usize = 8;

/// Where one analysis spent its time, for the cycle's debug log: wall time of each step, and
/// the analysing thread's time on a CPU and waiting for one (`/proc/thread-self/schedstat`;
/// the scoped helper threads not counted).
#[derive(Debug)]
struct Steps {
    lap: std::time::Instant,
    start: Option<(u64, u64)>,
    view_ms: u64,
    analyse_ms: u64,
    controls_ms: u64,
    verify_ms: u64,
}

impl Default for Steps {
    fn default() -> Steps {
        Steps {
            lap: std::time::Instant::now(),
            start: thread_schedstat(),
            view_ms: 0,
            analyse_ms: 0,
            controls_ms: 0,
            verify_ms: 0,
        }
    }
}

impl Steps {
    /// Milliseconds since the last lap.
    fn lap(&mut self) -> u64 {
        let ms = self.lap.elapsed().as_millis() as u64;
        self.lap = std::time::Instant::now();
        ms
    }

    /// Milliseconds this thread ran, and waited to run, since the steps began.
    fn cpu_and_wait_ms(&self) -> (u64, u64) {
        match (self.start, thread_schedstat()) {
            (Some((r0, w0)), Some((r1, w1))) => (
                r1.saturating_sub(r0) / 1_000_000,
                w1.saturating_sub(w0) / 1_000_000,
            ),
            _ => (0, 0),
        }
    }
}

/// The calling thread's nanoseconds on a CPU and waiting on a run queue (Linux).
fn thread_schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// What the cycle keeps between periods.
#[derive(Default)]
struct Cycle {
    view: Option<RadioView>,
    /// What applied entries changed since the view was brought up to date.
    changed: Changed,
    memory: Memory,
    /// This site's cells' recent counters, for verifying SON changes.
    ring: verify::KpiRing,
    /// Trials whose verdict this site proposed.
    proposed: verify::Proposed,
    /// A PCI proposal was held back (outside its window, refused, not submitted): search
    /// again next period even if the configuration did not change.
    pci_unresolved: bool,
    /// Periods since the last PCI search.
    since_pci: u32,
}

/// The cells and relations applied entries changed since the view was last brought up to
/// date, or that only a full capture will do.
#[derive(Default)]
struct Changed {
    full: bool,
    cells: HashSet<CellId>,
    relations: HashSet<RelationKey>,
}

/// Changed entities beyond which a full capture is cheaper than updating them one by one.
const MAX_CHANGED: usize = 20_000;

impl Changed {
    fn full() -> Changed {
        Changed {
            full: true,
            ..Changed::default()
        }
    }

    fn add(&mut self, applied: &AppliedChanges) {
        if self.full {
            return;
        }
        // A site's position is in every distance the view keeps (and its typical spacing).
        if applied.reset || !applied.control.is_empty() || !applied.sites.is_empty() {
            *self = Changed::full();
            return;
        }
        self.cells.extend(applied.cells.iter().cloned());
        self.relations.extend(applied.relations.iter().cloned());
        if self.cells.len() + self.relations.len() > MAX_CHANGED {
            *self = Changed::full();
        }
    }
}

/// Periods after which the PCI search runs even without a configuration change: a safety
/// net for a problem whose fix was held back in a way this cycle did not see.
const PCI_SEARCH_EVERY: u32 = 30;

impl Cycle {
    /// After an analysis task failed: the cycle went with it, so the view is captured whole
    /// next period and the compensation ledger comes back from its file (the rest of the
    /// memory is rebuilt from the next periods).
    fn recover(&mut self, data_dir: &std::path::Path) {
        self.changed = Changed::full();
        self.memory.compensation = compensation::Ledger::load(data_dir);
    }

    /// Brings the view up to date with what applied entries changed since: updated in place,
    /// or captured whole when a site, control or everything changed (or there is none yet).
    /// Whether it was captured whole, and whether PCI inputs changed.
    fn refresh_view(&mut self, node: &Node) -> (bool, bool) {
        let changed = std::mem::take(&mut self.changed);
        node.store().with_image(|image| {
            let updated = match (&mut self.view, changed.full) {
                (Some(v), false) => {
                    v.update(image, node.site(), &changed.cells, &changed.relations)
                }
                _ => None,
            };
            match updated {
                Some(pci_inputs) => (false, pci_inputs),
                None => {
                    self.view = Some(RadioView::capture(image, node.site()));
                    (true, true)
                }
            }
        })
    }

    /// Takes in what applied entries changed, as the feed has them now.
    fn follow(&mut self, feed: &mut tokio::sync::broadcast::Receiver<Arc<AppliedChanges>>) {
        loop {
            match feed.try_recv() {
                Ok(applied) => self.changed.add(&applied),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    self.changed = Changed::full()
                }
                Err(_) => break,
            }
        }
    }

    /// Whether this period runs the PCI search: PCIs only change with the configuration, so
    /// it is skipped unless the view was recaptured, a PCI fix is still outstanding, or it has
    /// not run for [`PCI_SEARCH_EVERY`] periods.
    fn pci_search_due(&mut self, full: bool) -> bool {
        let due = full || self.pci_unresolved || self.since_pci + 1 >= PCI_SEARCH_EVERY;
        self.since_pci = if due { 0 } else { self.since_pci + 1 };
        due
    }
}

/// Runs the SON cycle of this site for the life of the node.
pub async fn run(
    node: Arc<Node>,
    fleet: Arc<Fleet>,
    mut closed: mpsc::Receiver<Arc<ClosedPeriod>>,
) {
    let mut feed = node.store().subscribe();
    let mut cycle = Cycle {
        changed: Changed::full(),
        ..Cycle::default()
    };
    cycle.memory.compensation = compensation::Ledger::load(&node.config().data_dir);
    while let Some(period) = closed.recv().await {
        // Skip to the newest period if we fell behind.
        let mut period = period;
        while let Ok(newer) = closed.try_recv() {
            period = newer;
        }
        cycle.follow(&mut feed);
        let started = std::time::Instant::now();
        let waited_ms = crate::propose::now_ms().saturating_sub(period.end_ms);
        // KPI summaries replicate beside the analysis: this site's functions read its own
        // cells' counters directly, other sites read them from the image next period.
        let kpis = tokio::spawn({
            let (node, period) = (node.clone(), period.clone());
            async move { replicate_kpis(&node, &period).await }
        });
        let data_dir = node.config().data_dir.clone();
        // "Reported the period before" with half a period to spare: the antennas' period
        // ends jitter by milliseconds, and a late cell must not look silent for that.
        let horizon = period.period_ms.saturating_add(period.period_ms / 2);
        let reporting = Arc::new(fleet.reporting(period.end_ms, horizon));
        let (proposals, verdicts, c) = {
            let node = node.clone();
            let reporting = reporting.clone();
            let period = period.clone();
            let mut c = std::mem::take(&mut cycle);
            let result = tokio::task::spawn_blocking(move || {
                let raised = priority::Raised::now();
                let mut steps = Steps::default();
                let (full, pci_inputs) = c.refresh_view(&node);
                steps.view_ms = steps.lap();
                let with_pci = c.pci_search_due(pci_inputs);
                let (proposals, verdicts) = {
                    let Cycle {
                        view,
                        memory,
                        ring,
                        proposed,
                        pci_unresolved,
                        ..
                    } = &mut c;
                    let view = view.as_ref().expect("captured above");
                    let bounds = node.store().with_image(verify::Bounds::of);
                    // The verification ring records the period while the functions analyse
                    // it: each reads every report, and at 100,000 cells one after the other
                    // they held the cycle back on a machine with a core to spare.
                    let mut proposals = std::thread::scope(|s| {
                        let recording = s.spawn(|| {
                            ring.keep_for(bounds.policy.periods);
                            ring.record(&period);
                            if full {
                                ring.retain(|cell| verify::is_own(view, cell));
                            }
                        });
                        let mut input = PeriodInput::new(view, &period);
                        input.late = late_cells(view, &input, &reporting);
                        let proposals = analyse(view, &mut input, memory, node.id(), with_pci);
                        joined(recording);
                        proposals
                    });
                    steps.analyse_ms = steps.lap();
                    let voters = node.voters();
                    let trials = node.store().with_image(|image| {
                        let format = image.effective_format(voters.iter().copied());
                        let now = now_ms().max(image.log_time_ms);
                        let skipped = skip_refused(image, &mut proposals, now, format);
                        if with_pci {
                            *pci_unresolved = skipped.contains(&Function::PciConflict);
                        }
                        hold_back_beyond_wave(&mut proposals, view.own.len());
                        verify::open_trials(image, view)
                    });
                    steps.controls_ms = steps.lap();
                    let verdicts = verify::due(&trials, view, ring, proposed, &bounds);
                    steps.verify_ms = steps.lap();
                    let (on_cpu_ms, runnable_ms) = steps.cpu_and_wait_ms();
                    tracing::debug!(
                        view_ms = steps.view_ms,
                        analyse_ms = steps.analyse_ms,
                        controls_ms = steps.controls_ms,
                        verify_ms = steps.verify_ms,
                        on_cpu_ms,
                        runnable_ms,
                        raised = raised.raised(),
                        "SON analysis"
                    );
                    (proposals, verdicts)
                };
                (proposals, verdicts, c)
            })
            .await;
            match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "SON analysis failed");
                    cycle.recover(&data_dir);
                    continue;
                }
            }
        };
        cycle = c;
        let analysed = started.elapsed();
        let count = proposals.len();
        let (conflicted, unapplied) = submit_all(&node, &fleet, &period, proposals).await;
        // A revert of outage compensation goes all its steps this period, a round at a time.
        for round in cycle.memory.compensation.take_further_steps() {
            submit_all(&node, &fleet, &period, round).await;
        }
        cycle.pci_unresolved |= unapplied.contains(&Function::PciConflict);
        let count_verdicts = verdicts.len();
        for trial in submit_verdicts(&node, verdicts).await {
            cycle.proposed.forget(trial);
        }
        tracing::debug!(
            period_end_ms = period.end_ms,
            waited_ms,
            analysed_ms = analysed.as_millis() as u64,
            submitted_ms = started.elapsed().as_millis() as u64,
            proposals = count,
            verdicts = count_verdicts,
            conflicts = conflicted.len(),
            "SON cycle"
        );
        // Recompute what conflicted with a fresh view, unless the next period has closed
        // already: its cycle recomputes everything from a fresh view at once, and a second
        // analysis now would only hold it back (at 100,000 cells a conflict or two a period
        // made every cycle analyse twice).
        if !conflicted.is_empty() && closed.is_empty() {
            // This period is in the smoothed loads already, and must not count twice in the
            // ANR streaks or sightings either.
            let mut memory = Memory {
                streaks: anr::Streaks::default(),
                load: cycle.memory.load.frozen(),
                energy: cycle.memory.energy.frozen(),
                outages: cycle.memory.outages.frozen(),
                compensation: cycle.memory.compensation.frozen(),
                coverage: cycle.memory.coverage.frozen(),
                // ANR's additions wait for the next period (their evidence carries on).
                sightings: anr_add::Sightings::default(),
            };
            // What conflicted was changed by entries the feed brings into the view.
            cycle.follow(&mut feed);
            let (node2, period2, reporting2) = (node.clone(), period.clone(), reporting.clone());
            let mut c = std::mem::take(&mut cycle);
            let retry = tokio::task::spawn_blocking(move || {
                let _raised = priority::Raised::now();
                // What changed PCI inputs must still bring the next period's PCI search.
                let (_, pci_inputs) = c.refresh_view(&node2);
                c.pci_unresolved |= pci_inputs;
                let view = c.view.as_ref().expect("refreshed above");
                let mut input = PeriodInput::new(view, &period2);
                input.late = late_cells(view, &input, &reporting2);
                let retry = analyse(view, &mut input, &mut memory, node2.id(), true)
                    .into_iter()
                    .filter(|p| {
                        p.change_set
                            .writes
                            .iter()
                            .any(|w| conflicted.contains(&w.entity.to_string()))
                    })
                    .collect::<Vec<_>>();
                (retry, c)
            })
            .await;
            match retry {
                Ok((retry, c)) => {
                    cycle = c;
                    submit_all(&node, &fleet, &period, retry).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "SON recomputation failed");
                    cycle.recover(&node.config().data_dir);
                }
            }
        }
        let _ = kpis.await;
        metrics::histogram!("sonraft_son_cycle_seconds").record(started.elapsed().as_secs_f64());
    }
}

/// Drops the proposals the operator's SON controls would refuse (a function switched off,
/// outside its window, an excluded cell, a cell under verification or held after an undo): they
/// would only fill the history with refusals, every period. Returns the functions whose
/// proposals it dropped.
fn skip_refused(
    image: &sonraft_raft::model::image::NetworkImage,
    proposals: &mut Vec<Proposal>,
    now_ms: u64,
    format: u16,
) -> BTreeSet<Function> {
    use sonraft_raft::rules::{CONTROLS_FORMAT, controls_refusal, reconfigured_cells};
    let mut skipped = BTreeSet::new();
    // A function newer than the cluster's format waits (a rolling upgrade in progress): not
    // every voter could apply its change sets.
    proposals.retain(|p| {
        let function = p.change_set.origin.function;
        let fits = Command::ChangeSet(p.change_set.clone()).format() <= format;
        if !fits {
            tracing::trace!(%function, format, "SON proposal waits for a newer command format");
            skipped.insert(function);
        }
        fits
    });
    if format < CONTROLS_FORMAT {
        return skipped;
    }
    // A function steps once on a cell until that change has its verdict: of two proposals of
    // one function on one cell this period, the second would only be refused.
    let mut claimed = std::collections::HashSet::new();
    proposals.retain_mut(|p| {
        let function = p.change_set.origin.function;
        // ANR's additions to one cell are independent: one into an excluded cell is left out
        // rather than holding back the others (every period, for as long as it is reported).
        if function == Function::AnrAdd && p.change_set.writes.len() > 1 {
            let writes = &mut p.change_set.writes;
            let kept: Vec<_> = writes
                .iter()
                .filter(|w| sonraft_raft::rules::excluded(image, function, &w.entity).is_none())
                .cloned()
                .collect();
            if !kept.is_empty() {
                *writes = kept;
            }
        }
        // Load balancing's moves the rules would refuse on their own are left out, so that
        // one blocked relation does not take the cell's free ones down with it.
        if function == Function::LoadBalancing {
            let left_out = load_balancing::leave_out_refused(image, p, now_ms, format);
            if !left_out.is_empty() {
                tracing::trace!(?left_out, "load balancing moves left out");
            }
        }
        let cells = reconfigured_cells(&p.change_set);
        let refusal = controls_refusal(image, &p.change_set, now_ms, format);
        // Waking a dormant cell undoes energy saving's change: when the function's controls
        // hold it back (switched off, the cell excluded, outside its window, its sleep still
        // under verification), the site wakes it as a fallback (format 6), or the cell would
        // stay dark with nothing to wake it.
        if let Some(why) = &refusal
            && format >= 6
            && is_wake(&p.change_set)
        {
            p.change_set.origin.function = Function::Fallback;
            p.change_set.reason = format!(
                "energy saving may not wake the cell itself ({why}); waking it as a fallback: {}",
                p.change_set.reason
            );
            return true;
        }
        let refusal = refusal.or_else(|| {
            cells
                .iter()
                .any(|c| claimed.contains(&(function, c.clone())))
                .then(|| "another of its proposals this period changes the same cell".to_string())
        });
        match &refusal {
            Some(why) => {
                metrics::counter!("sonraft_son_proposals_skipped_total", "function" => function.name()).increment(1);
                tracing::trace!(reason = %why, "SON proposal skipped");
                skipped.insert(function);
            }
            None => claimed.extend(cells.into_iter().map(|c| (function, c))),
        }
        refusal.is_none()
    });
    skipped
}

/// Change sets one function proposes in one period at most (see [`hold_back_beyond_wave`]):
/// a fiftieth of the site's own cells, and never fewer than this.
const MIN_WAVE: usize = 100;

/// Holds back the proposals of each function beyond its wave for this period: a fiftieth of
/// the site's `own_cells` (at least [`MIN_WAVE`]), in the function's own order. What is held
/// back is proposed again next period if it still holds: the functions keep no memory of what
/// they proposed. Returns how many were held back.
///
/// A SON change is an experiment on a live network, and a function should not change a large
/// part of it at once: energy saving sent 28,000 of 100,000 cells to sleep in one period (each
/// judged against partners' loads measured before any of the others slept), and the wave took
/// 2.4 s to commit and push, holding every other function's changes back behind it. In waves,
/// each next one is decided on the loads the one before left. Waking cells, outage
/// compensation and its reverts, and the site's fallbacks are never held back.
fn hold_back_beyond_wave(proposals: &mut Vec<Proposal>, own_cells: usize) -> usize {
    let wave = (own_cells / 50).max(MIN_WAVE);
    let mut sent: BTreeMap<Function, usize> = BTreeMap::new();
    let mut held: BTreeMap<Function, usize> = BTreeMap::new();
    proposals.retain(|p| {
        let function = p.change_set.origin.function;
        let urgent = matches!(
            function,
            Function::OutageCompensation | Function::Fallback | Function::Operator
        ) || is_wake(&p.change_set);
        if urgent {
            return true;
        }
        let n = sent.entry(function).or_default();
        if *n < wave {
            *n += 1;
            return true;
        }
        *held.entry(function).or_default() += 1;
        false
    });
    for (function, n) in &held {
        metrics::counter!("sonraft_son_proposals_held_total", "function" => function.name())
            .increment(*n as u64);
        tracing::debug!(%function, held = n, wave, "SON proposals beyond the wave wait for the next period");
    }
    held.values().sum()
}

/// Whether `cs` is energy saving waking cells (every write sets `energy_saving` to `normal`).
fn is_wake(cs: &ChangeSet) -> bool {
    cs.origin.function == Function::EnergySaving
        && !cs.writes.is_empty()
        && cs.writes.iter().all(|w| {
            w.param == sonraft_raft::model::Param::EnergySaving
                && matches!(&w.value, sonraft_raft::model::Value::Text(t) if t == "normal")
        })
}

/// `items` grouped into log entries, and how many entries go at once: [`CHANGE_SETS_PER_ENTRY`]
/// to an entry, [`ENTRIES_IN_FLIGHT`] at once, when the cluster applies them `together`
/// (command format 10); otherwise one an entry, [`CONCURRENCY`] at once.
fn into_entries<T>(items: Vec<T>, together: bool) -> (Vec<Vec<T>>, usize) {
    if !together {
        return (items.into_iter().map(|i| vec![i]).collect(), CONCURRENCY);
    }
    let mut entries = Vec::with_capacity(items.len().div_ceil(CHANGE_SETS_PER_ENTRY));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        entries.push(items.by_ref().take(CHANGE_SETS_PER_ENTRY).collect());
    }
    (entries, ENTRIES_IN_FLIGHT)
}

/// Proposes verdicts; returns the trials of those that did not get through (they are
/// proposed again next period). Thousands fall due a period at 100,000 cells: one entry each
/// they held the next period back for seconds, so once every voter applies command format 10
/// they go [`CHANGE_SETS_PER_ENTRY`] to an entry.
async fn submit_verdicts(node: &Arc<Node>, verdicts: Vec<sonraft_raft::son::Verdict>) -> Vec<u64> {
    let together =
        node.store().effective_format(&node.voters()) >= Command::Verdicts(Vec::new()).format();
    let (entries, in_flight) = into_entries(verdicts, together);
    let failed = buffer_unordered(entries, in_flight, |entry| {
        let node = node.clone();
        async move {
            let command = match entry.as_slice() {
                [one] => Command::Verdict(one.clone()),
                _ => Command::Verdicts(entry.clone()),
            };
            let results = match node.submit(&command).await {
                Ok((_, Response::Trial(r))) if entry.len() == 1 => vec![r],
                Ok((_, Response::Trials(rs))) if rs.len() == entry.len() => rs,
                Ok((_, other)) => {
                    tracing::warn!(?other, "unexpected answer to verdicts");
                    return Vec::new();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "verdicts not proposed; again next period");
                    return entry.iter().map(|v| v.trial).collect();
                }
            };
            for (v, r) in entry.iter().zip(results) {
                record_verdict(v.trial, v.degraded.is_some(), r);
            }
            Vec::new()
        }
    })
    .await;
    failed.into_iter().flatten().collect()
}

/// Counts how a verdict's trial ended.
fn record_verdict(trial: u64, degraded: bool, r: Result<sonraft_raft::son::TrialEnd, String>) {
    match r {
        Ok(end) => {
            let outcome = match end {
                sonraft_raft::son::TrialEnd::Kept => "kept",
                sonraft_raft::son::TrialEnd::Undone { .. } => "undone",
                sonraft_raft::son::TrialEnd::Unverified => "unverified",
            };
            metrics::counter!("sonraft_son_verdicts_total", "outcome" => outcome).increment(1);
            if degraded {
                tracing::info!(trial, "SON change undone: it degraded a KPI");
            }
        }
        // Closed meanwhile (expired, or another verdict): nothing more to do.
        Err(reason) => tracing::debug!(trial, %reason, "verdict not needed"),
    }
}

/// What the functions remember between periods: ANR's streaks of idle and failing relations,
/// MLB's smoothed loads, energy saving's recent demand per capacity cell, coverage
/// optimisation's last hole steps.
#[derive(Debug, Default)]
pub struct Memory {
    pub streaks: anr::Streaks,
    pub load: load_balancing::Smoothed,
    pub energy: energy_saving::Demand,
    pub outages: outage::Outages,
    pub compensation: compensation::Ledger,
    pub coverage: coverage::Steps,
    pub sightings: anr_add::Sightings,
}

/// Runs every function over one view (`with_pci`: also the PCI search, which only needs to
/// run when the configuration changed).
pub fn analyse(
    view: &RadioView,
    input: &mut PeriodInput,
    memory: &mut Memory,
    node: u64,
    with_pci: bool,
) -> Vec<Proposal> {
    let now = now_ms();
    input.outage = memory.outages.update(view, input);
    let input = &*input;
    let Memory {
        streaks,
        load: smoothed,
        energy,
        outages,
        compensation: ledger,
        coverage: steps,
        sightings,
    } = memory;
    // ANR pruning judges every reported relation (930,000 at 100,000 cells), the largest part
    // of an analysis: it runs on a thread of its own beside the other functions, which keep
    // other memory. The proposals keep the order of one function after the other.
    std::thread::scope(|s| {
        let pruning = s.spawn(|| streaks.propose(view, input, node, now));
        let mut out = if with_pci {
            pci::propose(view, node, now)
        } else {
            Vec::new()
        };
        out.extend(robustness::propose(view, input, node, now));
        let load = smoothed.update(view, input);
        out.extend(load_balancing::propose(view, input, &load, node, now));
        let mut rest = sightings.propose(view, input, node, now);
        rest.extend(energy.propose(view, input, node, now));
        rest.extend(ledger.propose(
            view,
            &compensation::Outage {
                cells: &input.outage,
                settled: outages.settled(),
            },
            |c| input.prb_pct(view, c),
            node,
            now,
        ));
        rest.extend(steps.propose(view, input, node, now));
        out.extend(joined(pruning));
        out.extend(rest);
        out
    })
}

/// What a scoped thread returned; its panic goes on in the thread that joins it (the SON
/// cycle's blocking task, which recovers from a failed analysis).
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn replicate_kpis(node: &Node, period: &ClosedPeriod) {
    let all = summaries(period);
    for chunk in all.chunks(SUMMARIES_PER_ENTRY) {
        let cmd = Command::Kpis(KpiBatch {
            site: node.site().to_string(),
            summaries: chunk.to_vec(),
        });
        if let Err(e) = node.submit(&cmd).await {
            tracing::debug!(error = %e, "KPI summaries not replicated this period");
            return;
        }
    }
}

/// Submits proposals a few entries at a time; returns the entities of those that conflicted,
/// and the functions of those that did not apply (refused, conflicted or not submitted).
///
/// Once every voter applies command format 10 ([`TRIAL_IDS_FORMAT`]) the change sets go up to
/// [`CHANGE_SETS_PER_ENTRY`] to an entry, each still judged on its own: the period in which
/// energy saving sends half of 100,000 cells to sleep brings tens of thousands, and one entry
/// each committed them at 4,000–6,000 a second. Before, a trial was named by its entry's
/// index, so each went alone.
async fn submit_all(
    node: &Arc<Node>,
    fleet: &Arc<Fleet>,
    period: &ClosedPeriod,
    proposals: Vec<Proposal>,
) -> (Vec<String>, BTreeSet<Function>) {
    let closing = Closing {
        end_ms: period.end_ms,
        closed_ms: now_ms().saturating_sub(period.closed_at.elapsed().as_millis() as u64),
    };
    let together = node.store().effective_format(&node.voters()) >= TRIAL_IDS_FORMAT;
    let (entries, in_flight) = into_entries(proposals, together);
    let results = buffer_unordered(entries, in_flight, |entry| {
        let node = node.clone();
        async move {
            let outcomes = submit_entry(&node, &entry).await;
            entry.into_iter().zip(outcomes).collect::<Vec<_>>()
        }
    })
    .await;
    let mut conflicted = Vec::new();
    let mut unapplied = BTreeSet::new();
    for (p, r) in results.into_iter().flatten() {
        let function = p.change_set.origin.function;
        match r {
            Ok((index, Outcome::Applied { .. })) => {
                metrics::counter!("sonraft_son_proposals_total", "function" => function.name(), "outcome" => "applied").increment(1);
                fleet.await_acks(index, closing, p.cells);
            }
            Ok((_, o)) => {
                metrics::counter!("sonraft_son_proposals_total", "function" => function.name(), "outcome" => o.kind()).increment(1);
                match o {
                    Outcome::Conflict { .. } => {
                        conflicted.extend(p.change_set.writes.iter().map(|w| w.entity.to_string()))
                    }
                    // Waiting for an operator: proposing it again finds it pending.
                    Outcome::Pending { .. } => continue,
                    _ => {}
                }
                unapplied.insert(function);
            }
            Err(e) => {
                tracing::debug!(error = %e, "change set not submitted");
                unapplied.insert(function);
            }
        }
    }
    (conflicted, unapplied)
}

/// Commits `entry`'s change sets in one entry (one alone as `ChangeSet`); the entry's index
/// and each one's outcome, in order, or why none is known.
async fn submit_entry(node: &Node, entry: &[Proposal]) -> Vec<Result<(u64, Outcome), String>> {
    let command = match entry {
        [one] => Command::ChangeSet(one.change_set.clone()),
        _ => Command::ChangeSets(entry.iter().map(|p| p.change_set.clone()).collect()),
    };
    let failed = |why: String| entry.iter().map(|_| Err(why.clone())).collect();
    match node.submit(&command).await {
        Ok((index, Response::ChangeSet(o))) if entry.len() == 1 => vec![Ok((index, o))],
        Ok((index, Response::ChangeSets(outcomes))) if outcomes.len() == entry.len() => {
            outcomes.into_iter().map(|o| Ok((index, o))).collect()
        }
        Ok((_, other)) => {
            tracing::warn!(?other, "unexpected answer to change sets");
            failed(format!("unexpected answer {other:?}"))
        }
        Err(e) => failed(e.to_string()),
    }
}

/// A tiny bounded-concurrency map, to avoid a dependency for two loops.
mod futures_lite_stream {
    use std::future::Future;

    pub async fn buffer_unordered<T, F, Fut, R>(items: Vec<T>, limit: usize, f: F) -> Vec<R>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if set.len() >= limit
                && let Some(Ok(r)) = set.join_next().await
            {
                out.push(r);
            }
            set.spawn(f(item));
        }
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonraft_raft::changeset::{Function, Origin, Write};
    use sonraft_raft::model::{EntityRef, Param, Value};

    #[test]
    fn the_view_is_recaptured_when_a_site_control_or_everything_changed_and_updated_otherwise() {
        let applied = |f: fn(&mut AppliedChanges)| {
            let mut a = AppliedChanges {
                cells: vec!["C1".into()],
                relations: vec![("C1".into(), "C2".into())],
                ..AppliedChanges::default()
            };
            f(&mut a);
            let mut changed = Changed::default();
            changed.add(&a);
            changed
        };
        let updated = applied(|_| {});
        assert!(!updated.full);
        assert!(updated.cells.contains("C1") && updated.relations.len() == 1);
        assert!(applied(|a| a.sites = vec!["S1".into()]).full);
        assert!(applied(|a| a.control = vec!["S1".into()]).full);
        assert!(applied(|a| a.reset = true).full);
    }

    fn cio(source: &str, target: &str) -> Proposal {
        Proposal {
            change_set: ChangeSet {
                origin: Origin {
                    node: 1,
                    function: Function::LoadBalancing,
                },
                reason: "test".into(),
                read_set: vec![],
                writes: vec![Write {
                    entity: EntityRef::relation(source, target),
                    param: Param::CioDb,
                    value: Value::Int(2),
                }],
                proposed_at_ms: 0,
            },
            cells: vec![source.into()],
        }
    }

    fn proposal(function: Function, cell: &str, param: Param, value: &str) -> Proposal {
        Proposal {
            change_set: ChangeSet {
                origin: Origin { node: 1, function },
                reason: "test".into(),
                read_set: vec![],
                writes: vec![Write {
                    entity: EntityRef::cell(cell),
                    param,
                    value: Value::Text(value.into()),
                }],
                proposed_at_ms: 0,
            },
            cells: vec![cell.into()],
        }
    }

    #[test]
    fn a_function_changes_at_most_a_wave_of_cells_a_period_but_wakes_and_compensation_all_go() {
        let es = |i: usize, to: &str| {
            proposal(
                Function::EnergySaving,
                &format!("C{i}"),
                Param::EnergySaving,
                to,
            )
        };
        let mut proposals: Vec<Proposal> = (0..300).map(|i| es(i, "dormant")).collect();
        proposals.extend((300..450).map(|i| es(i, "normal")));
        proposals.extend((0..150).map(|i| {
            proposal(
                Function::OutageCompensation,
                &format!("N{i}"),
                Param::AdminState,
                "x",
            )
        }));
        proposals.extend(
            (0..150).map(|i| proposal(Function::AnrAdd, &format!("A{i}"), Param::AdminState, "x")),
        );
        // 10,000 own cells: a wave of 200.
        let held = hold_back_beyond_wave(&mut proposals, 10_000);
        let count = |f: Function, to: Option<&str>| {
            proposals
                .iter()
                .filter(|p| p.change_set.origin.function == f)
                .filter(|p| {
                    to.is_none_or(|t| p.change_set.writes[0].value == Value::Text(t.into()))
                })
                .count()
        };
        assert_eq!(count(Function::EnergySaving, Some("dormant")), 200);
        assert_eq!(
            count(Function::EnergySaving, Some("normal")),
            150,
            "every wake goes"
        );
        assert_eq!(count(Function::OutageCompensation, None), 150);
        assert_eq!(count(Function::AnrAdd, None), 150, "under its wave");
        assert_eq!(held, 100);
        // The first of the function's own order go: C0..C199.
        assert_eq!(proposals[199].cells, vec!["C199".to_string()]);
        // A small site still gets the minimum wave.
        let mut small: Vec<Proposal> = (0..150).map(|i| es(i, "dormant")).collect();
        assert_eq!(hold_back_beyond_wave(&mut small, 300), 50);
        assert_eq!(small.len(), MIN_WAVE);
    }

    #[test]
    fn of_two_proposals_of_one_function_on_one_cell_only_the_first_is_sent() {
        let img = testing::image(
            vec![
                testing::cell("A1", 1, 100),
                testing::cell("A2", 2, 100),
                testing::cell("A3", 3, 100),
            ],
            vec![
                testing::relation("A1", "A2"),
                testing::relation("A1", "A3"),
                testing::relation("A2", "A3"),
            ],
        );
        let all = || vec![cio("A1", "A2"), cio("A1", "A3"), cio("A2", "A3")];
        let mut proposals = all();
        skip_refused(&img, &mut proposals, 1_000, 4);
        let kept: Vec<String> = proposals
            .iter()
            .map(|p| p.change_set.writes[0].entity.to_string())
            .collect();
        assert_eq!(kept, ["relation/A1/A2", "relation/A2/A3"]);
        // Before format 4 a function may step on a cell every period: nothing is skipped.
        let mut proposals = all();
        skip_refused(&img, &mut proposals, 1_000, 3);
        assert_eq!(proposals.len(), 3);
    }

    #[test]
    fn a_wake_the_energy_saving_controls_hold_back_goes_out_as_a_fallback_from_format_6() {
        use sonraft_raft::son::{Controls, Mode};
        let mut dormant = testing::cell("A4", 504, 636_666);
        dormant["energy_saving"] = serde_json::json!("dormant");
        let mut img = testing::image(vec![testing::cell("A1", 1, 100), dormant], vec![]);
        img.son.policy.functions.insert(
            Function::EnergySaving,
            Controls {
                mode: Mode::Off,
                ..Controls::default()
            },
        );
        let v = testing::view(&img);
        let wake = |to: &str| Proposal {
            change_set: ChangeSet {
                origin: Origin {
                    node: 1,
                    function: Function::EnergySaving,
                },
                reason: "test".into(),
                read_set: vec![v.read_cell(v.index["A4"])],
                writes: vec![Write {
                    entity: EntityRef::cell("A4"),
                    param: Param::EnergySaving,
                    value: Value::Text(to.into()),
                }],
                proposed_at_ms: 0,
            },
            cells: vec!["A4".into()],
        };
        let mut proposals = vec![wake("normal"), wake("dormant")];
        skip_refused(&img, &mut proposals, 1_000, 6);
        assert_eq!(proposals.len(), 1, "the sleep is refused, the wake goes on");
        assert_eq!(proposals[0].change_set.origin.function, Function::Fallback);
        assert!(proposals[0].change_set.reason.contains("switched off"));
        let mut proposals = vec![wake("normal")];
        skip_refused(&img, &mut proposals, 1_000, 5);
        assert!(
            proposals.is_empty(),
            "before format 6 nobody proposes fallbacks"
        );
    }

    #[test]
    fn outage_compensation_waits_until_every_voter_applies_format_6() {
        let img = testing::image(
            vec![testing::cell("A1", 1, 100), testing::cell("A2", 2, 100)],
            vec![testing::relation("A2", "A1")],
        );
        let v = testing::view(&img);
        let oc = || {
            compensation::Ledger::default().propose(
                &v,
                &compensation::Outage {
                    cells: &std::collections::HashSet::from([v.index["A1"]]),
                    settled: true,
                },
                |_| None,
                1,
                0,
            )
        };
        // A2 is co-site with A1 in this image: use a foreign neighbour instead.
        let img = testing::image(
            vec![testing::cell("A1", 1, 100), testing::cell("Z1", 2, 100)],
            vec![testing::relation("Z1", "A1")],
        );
        let v2 = testing::view(&img);
        let oc2 = || {
            compensation::Ledger::default().propose(
                &v2,
                &compensation::Outage {
                    cells: &std::collections::HashSet::from([v2.index["A1"]]),
                    settled: true,
                },
                |_| None,
                1,
                0,
            )
        };
        assert!(oc().is_empty(), "a co-site cell does not compensate");
        let mut proposals = oc2();
        assert_eq!(proposals.len(), 1);
        let skipped = skip_refused(&img, &mut proposals, 1_000, 5);
        assert!(proposals.is_empty());
        assert!(skipped.contains(&Function::OutageCompensation));
        let mut proposals = oc2();
        skip_refused(&img, &mut proposals, 1_000, 6);
        assert_eq!(proposals.len(), 1);
    }

    /// An overloaded cell next to an early-handover-prone relation: load balancing wants to
    /// raise the relation's offset, mobility robustness to hand over later — by the cell's
    /// hysteresis when the relation is all it has, by the relation's own offset when a clean
    /// relation carries most handovers. Both propose in the same period; whichever applies
    /// first wins and the other is refused with a reason naming it, in either order.
    #[test]
    fn load_balancing_and_robustness_on_one_relation_do_not_both_apply() {
        use sonraft_raft::command::Envelope;
        use sonraft_raft::model::image::Changes;

        // 100 handovers A1 -> A2, 96 succeed, 4 too early: 4 % early (robustness: later)
        // and 96 % success (load balancing: a good target).
        let early = testing::counters(100, 96, 4, 0, 0);
        let clean = testing::counters(200, 200, 0, 0, 0);
        for (with_z1, mro_writes) in [(false, Param::Hysteresis), (true, Param::CioDb)] {
            let mut cells = vec![testing::cell("A1", 1, 1300), testing::cell("A2", 2, 1300)];
            let mut relations = vec![testing::relation("A1", "A2"), testing::relation("A2", "A1")];
            let mut reports = vec![("A1", "A2", early)];
            if with_z1 {
                cells.push(testing::cell("Z1", 3, 1300));
                relations.push(testing::relation("A1", "Z1"));
                reports.push(("A1", "Z1", clean));
            }
            let img = testing::image(cells, relations);
            let v = testing::view(&img);
            let mut input = testing::period(&v, &reports);
            input.prb_pct.insert(v.index["A1"], 95.0);
            input.prb_pct.insert(v.index["A2"], 30.0);
            if with_z1 {
                input.prb_pct.insert(v.index["Z1"], 30.0);
            }
            let proposals = analyse(&v, &mut input, &mut Memory::default(), 1, false);
            let by = |f: Function| {
                proposals
                    .iter()
                    .find(|p| p.change_set.origin.function == f)
                    .unwrap_or_else(|| panic!("no {f} proposal in {proposals:?}"))
                    .change_set
                    .clone()
            };
            let (mro, mlb) = (
                by(Function::MobilityRobustness),
                by(Function::LoadBalancing),
            );
            assert_eq!(mro.writes[0].param, mro_writes, "{mro:?}");
            assert!(
                mlb.writes
                    .iter()
                    .any(|w| w.entity == EntityRef::relation("A1", "A2")),
                "{mlb:?}"
            );
            let now = 1_764_000_000_000;
            for order in [[&mro, &mlb], [&mlb, &mro]] {
                let mut img = img.clone();
                let outcomes: Vec<Outcome> = order
                    .iter()
                    .enumerate()
                    .map(|(i, cs)| {
                        let env = Envelope::in_format(&Command::ChangeSet((*cs).clone()), now, 5)
                            .expect("encodes");
                        match img.apply_entry(10 + i as u64, &env, &mut Changes::default()) {
                            Ok(Response::ChangeSet(o)) => o,
                            other => panic!("{other:?}"),
                        }
                    })
                    .collect();
                assert!(
                    matches!(outcomes[0], Outcome::Applied { .. }),
                    "{outcomes:?}"
                );
                // The second read what the first changed: a conflict, and recomputed from the
                // new image it is refused.
                let reason = match &outcomes[1] {
                    Outcome::Rejected { reason } => reason.clone(),
                    Outcome::Conflict { .. } => {
                        let v = testing::view(&img);
                        let again =
                            analyse(&v, &mut input.clone(), &mut Memory::default(), 1, false);
                        let second = order[1].origin.function;
                        let Some(p) = again
                            .iter()
                            .find(|p| p.change_set.origin.function == second)
                        else {
                            // Recomputed after load balancing raised the offset, mobility
                            // robustness leaves alone what load balancing holds for the loaded
                            // cell (`robustness::load_balancing_holds`): nothing to apply.
                            assert_eq!(
                                second,
                                Function::MobilityRobustness,
                                "{second} no longer proposes: {again:?}"
                            );
                            continue;
                        };
                        let env =
                            Envelope::in_format(&Command::ChangeSet(p.change_set.clone()), now, 5)
                                .expect("encodes");
                        match img.apply_entry(12, &env, &mut Changes::default()) {
                            Ok(Response::ChangeSet(Outcome::Rejected { reason })) => reason,
                            other => panic!("recomputed, the second applied: {other:?}"),
                        }
                    }
                    other => panic!("the second applied too: {other:?}"),
                };
                assert!(
                    reason.contains(order[0].origin.function.name()),
                    "the refusal names the function that changed it: {reason}"
                );
            }
        }
    }

    /// A PCI fix held back while its change window is closed is searched for again next
    /// period, though the configuration did not change (the search runs only on a change
    /// otherwise): found by the acceptance benchmark, where planted PCI problems stayed
    /// unfixed after the window opened.
    #[test]
    fn a_pci_fix_held_back_by_its_window_is_searched_for_again_next_period() {
        use sonraft_raft::son::{Controls, Window};

        let mut img = testing::image(
            vec![testing::cell("A1", 5, 1300), testing::cell("A2", 5, 1300)],
            vec![testing::relation("A1", "A2")],
        );
        // 01:00-05:00 UTC; `now` is 12:00.
        img.son.policy.functions.insert(
            Function::PciConflict,
            Controls {
                window: Some(Window {
                    from_minute: 60,
                    to_minute: 300,
                }),
                ..Controls::default()
            },
        );
        let now = 20_000 * 86_400_000 + 12 * 3_600_000;
        let v = testing::view(&img);
        let mut cycle = Cycle::default();
        assert!(cycle.pci_search_due(true), "a new view is searched");
        let mut proposals = pci::propose(&v, 1, now);
        assert_eq!(proposals.len(), 1, "A2 collides with A1");
        let skipped = skip_refused(&img, &mut proposals, now, 5);
        assert!(proposals.is_empty());
        assert_eq!(skipped, BTreeSet::from([Function::PciConflict]));
        cycle.pci_unresolved = skipped.contains(&Function::PciConflict);
        assert!(cycle.pci_search_due(false), "held back: search again");
        cycle.pci_unresolved = false;
        let quiet: Vec<bool> = (0..PCI_SEARCH_EVERY)
            .map(|_| cycle.pci_search_due(false))
            .collect();
        assert_eq!(
            quiet.iter().filter(|d| **d).count(),
            1,
            "with nothing outstanding, once every {PCI_SEARCH_EVERY} periods: {quiet:?}"
        );
        assert!(quiet[PCI_SEARCH_EVERY as usize - 1]);
    }

    #[test]
    fn a_kpi_entry_stays_small_enough_for_sled_to_keep_it_inline() {
        let summaries: Vec<KpiSummary> = (0..SUMMARIES_PER_ENTRY)
            .map(|i| KpiSummary {
                cell: format!("{:0>24}", i).into(),
                period_end_ms: u64::MAX,
                prb_dl_permille: 1000,
                rrc_conn_mean: u32::MAX,
                thp_dl_kbps: u32::MAX,
                ho_att: u32::MAX,
                ho_succ: u32::MAX,
            })
            .collect();
        let cmd = Command::Kpis(KpiBatch {
            site: "a-site-with-a-long-name".into(),
            summaries,
        });
        let bytes = sonraft_raft::codec::encode(&cmd).unwrap().len();
        // Leaves room for the entry's envelope (log id, leader's clock) below 8 KiB.
        assert!(bytes <= 7 * 1024 + 512, "{bytes} bytes");
    }

    #[test]
    fn an_added_relation_into_an_excluded_cell_does_not_hold_back_the_others_of_its_source() {
        use sonraft_raft::son::Controls;
        let img = testing::image(
            vec![
                testing::cell("A1", 1, 100),
                testing::cell("A2", 2, 100),
                testing::cell("A3", 3, 100),
            ],
            vec![],
        );
        let mut img = img;
        let mut controls = Controls::default();
        controls.exclude.cells.insert("A3".into());
        img.son.policy.functions.insert(Function::AnrAdd, controls);
        let v = testing::view(&img);
        let add = |t: &str| Write {
            entity: EntityRef::relation("A1", t),
            param: Param::Exists,
            value: Value::Bool(true),
        };
        let mut proposals = vec![Proposal {
            change_set: ChangeSet {
                origin: Origin {
                    node: 1,
                    function: Function::AnrAdd,
                },
                reason: "test".into(),
                read_set: vec![v.read_cell(v.index["A1"])],
                writes: vec![add("A2"), add("A3")],
                proposed_at_ms: 0,
            },
            cells: vec!["A1".into()],
        }];
        skip_refused(&img, &mut proposals, 1_000, 7);
        assert_eq!(proposals.len(), 1, "the whole addition was dropped");
        let kept: Vec<String> = proposals[0]
            .change_set
            .writes
            .iter()
            .map(|w| w.entity.to_string())
            .collect();
        assert_eq!(kept, ["relation/A1/A2"]);
    }
}
