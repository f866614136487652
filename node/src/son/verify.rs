//! Verification of SON changes: each site judges the trials of its own cells from the raw
//! counters it received, and proposes the verdict ([`sonraft_raft::son`] says what a verdict
//! does when it is applied).
//!
//! The scope of a trial is the cells it reconfigured and their first-order neighbours that
//! this site has counters of. Its KPIs are summed over the scope and over
//! [`Verification::periods`] closed periods before the change (the baseline) and as many
//! periods that started after it; a verdict is due once the later ones closed. A change fails
//! when a KPI its function targets, or a guard KPI, got worse beyond the policy's threshold:
//!
//! | KPI | meaning | worse when | judged for |
//! | --- | --- | --- | --- |
//! | `ho_success_permille` | `HO.ExeSucc / HO.ExeAtt` | lower | every function (guard; for coverage and capacity over the whole scope, else over the changed cells) |
//! | `ho_failure_permille` | `(HO.IntraSys.TooEarly + HO.IntraSys.TooLate + HO.IntraSys.ToWrongCell) / HO.ExeAtt` | higher | mobility robustness |
//! | `ping_pong_permille` | `HO.PingPong / HO.ExeAtt` | higher | mobility robustness |
//! | `prb_max_permille` | highest mean `RRU.PrbUsedDl / RRU.PrbAvailDl` of a cell | higher | load balancing |
//! | `prb_max_permille` | the same, against an absolute ceiling (the tuned wake ceiling + 10 points: 75 % by default, see [`super::energy_saving::partner_peak_pct`]) | above it | energy saving (instead of throughput) |
//! | `rlf_coverage_permille` | `RLF.Coverage / RRC.ConnMean` over the scope: users whose link failed for coverage | higher | coverage and capacity |
//! | `thp_dl_kbps` | `DRB.UEThpDl`, mean per user (cells weighted by `RRC.ConnMean`) | lower, relatively | every function (guard) |
//!
//! Rates count only with at least [`Verification::min_attempts`] handover attempts a period
//! on both sides: too few events say nothing. Without a baseline (the node started after the
//! change, a new cell) the verdict keeps the change and records no KPI. When another change
//! (any function's, the operator's, a fallback's) applied to the trial's cells or their
//! relations inside the periods that judge it, the verdict keeps the change with its KPIs but
//! no blame: the counters moved for both, and an undo would hold the function off the cells
//! for the policy's hold for what may be the other's doing.

use std::collections::{BTreeSet, HashMap, VecDeque};

use sonraft_protocol::{ReportView, cell_counter as cc, relation_counter as rc};
use sonraft_raft::changeset::Function;
use sonraft_raft::model::{EntityRef, Param};
use sonraft_raft::rules;
use sonraft_raft::son::{EnergySavingTuning, KpiDelta, Trial, Verdict, Verification};

use sonraft_raft::model::image::NetworkImage;

use super::view::RadioView;
use crate::antennas::counters::ClosedPeriod;

/// What verification judges by: the operator's verification policy, and from the SON tuning the
/// peak load energy saving's partners must stay under after a sleep.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub policy: Verification,
    pub partner_peak_pct: f64,
}

impl Bounds {
    /// The bounds the image's policy and tuning set.
    pub fn of(image: &NetworkImage) -> Bounds {
        Bounds {
            policy: image.son.policy.verification.clone(),
            partner_peak_pct: super::energy_saving::partner_peak_pct(
                &image.son.tuning.energy_saving,
            ),
        }
    }
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            policy: Verification::default(),
            partner_peak_pct: super::energy_saving::partner_peak_pct(&EnergySavingTuning::default()),
        }
    }
}

/// Most periods kept per cell: a baseline and a verification window of the longest allowed
/// verification (96 periods each), and a little slack.
pub const MAX_PERIODS: usize = 2 * 96 + 4;

/// One own cell's counters of one closed period (relations summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CellPeriod {
    pub end_ms: u64,
    pub period_ms: u32,
    pub ho_att: u64,
    pub ho_succ: u64,
    pub too_early: u64,
    pub too_late: u64,
    pub wrong_cell: u64,
    pub ping_pong: u64,
    pub thp_dl_kbps: u64,
    /// `RRC.ConnMean`: the weight of the cell's throughput.
    pub users: u64,
    pub prb_used: u64,
    pub prb_avail: u64,
    /// `RLF.Coverage`: users whose radio link failed for coverage (0 from antennas that do
    /// not count it).
    pub rlf_coverage: u64,
}

impl CellPeriod {
    /// The counters of one validated report.
    pub fn of(report: &ReportView<'_>) -> CellPeriod {
        let mut p = CellPeriod {
            end_ms: report.period_end_ms,
            period_ms: report.period_ms,
            thp_dl_kbps: report.cell[cc::THP_DL],
            users: report.cell[cc::CONN_MEAN],
            prb_used: report.cell[cc::PRB_USED_DL],
            prb_avail: report.cell[cc::PRB_AVAIL_DL],
            rlf_coverage: report.cell[cc::RLF_COVERAGE],
            ..CellPeriod::default()
        };
        for (_, v) in report.relations() {
            p.ho_att = p.ho_att.saturating_add(v[rc::ATT]);
            p.ho_succ = p.ho_succ.saturating_add(v[rc::SUCC]);
            p.too_early = p.too_early.saturating_add(v[rc::TOO_EARLY]);
            p.too_late = p.too_late.saturating_add(v[rc::TOO_LATE]);
            p.wrong_cell = p.wrong_cell.saturating_add(v[rc::WRONG_CELL]);
            p.ping_pong = p.ping_pong.saturating_add(v[rc::PING_PONG]);
        }
        p
    }

    fn start_ms(&self) -> u64 {
        self.end_ms.saturating_sub(u64::from(self.period_ms))
    }
}

/// The last periods of every own cell: as many as verification needs (see
/// [`KpiRing::keep_for`]), at most [`MAX_PERIODS`] each.
#[derive(Debug, Default)]
pub struct KpiRing {
    cells: HashMap<String, VecDeque<CellPeriod>>,
    /// Periods kept per cell; 0 means [`MAX_PERIODS`].
    keep: usize,
}

impl KpiRing {
    /// Keeps what verifying over `periods` periods needs: the baseline before a change, the
    /// periods after it, and a few more for a verdict proposed a little late.
    pub fn keep_for(&mut self, periods: u32) {
        self.keep = (2 * periods as usize + 4).min(MAX_PERIODS);
    }

    fn capacity(&self) -> usize {
        if self.keep == 0 {
            MAX_PERIODS
        } else {
            self.keep
        }
    }

    /// Records a closed period's reports (unparsable ones were refused when received).
    pub fn record(&mut self, period: &ClosedPeriod) {
        for (cell, body) in &period.reports {
            if let Ok(report) = ReportView::parse(body) {
                self.record_cell(cell, CellPeriod::of(&report));
            }
        }
    }

    /// Records one cell's period; a period already recorded (same end) is replaced.
    pub fn record_cell(&mut self, cell: &str, period: CellPeriod) {
        let capacity = self.capacity();
        // Looked up before an owned key is made: every own cell is recorded every period.
        if !self.cells.contains_key(cell) {
            self.cells.insert(cell.to_string(), VecDeque::new());
        }
        let Some(ring) = self.cells.get_mut(cell) else {
            return;
        };
        if let Some(last) = ring.back_mut()
            && last.end_ms == period.end_ms
        {
            *last = period;
            return;
        }
        ring.push_back(period);
        while ring.len() > capacity {
            ring.pop_front();
        }
    }

    /// Forgets the cells that are not in `keep` (cells removed from the image or moved away).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.cells.retain(|c, _| keep(c));
    }

    pub fn has(&self, cell: &str) -> bool {
        self.cells.contains_key(cell)
    }

    /// The `n` newest periods of `cell` that ended at or before `before_ms`, if there are `n`.
    fn baseline(&self, cell: &str, before_ms: u64, n: usize) -> Option<Vec<CellPeriod>> {
        let ring = self.cells.get(cell)?;
        let found: Vec<CellPeriod> = ring
            .iter()
            .rev()
            .filter(|p| p.end_ms <= before_ms)
            .take(n)
            .copied()
            .collect();
        (found.len() == n).then_some(found)
    }

    /// The `n` oldest periods of `cell` that started at or after `after_ms`, if there are `n`.
    fn after(&self, cell: &str, after_ms: u64, n: usize) -> Option<Vec<CellPeriod>> {
        let ring = self.cells.get(cell)?;
        let found: Vec<CellPeriod> = ring
            .iter()
            .filter(|p| p.start_ms() >= after_ms)
            .take(n)
            .copied()
            .collect();
        (found.len() == n).then_some(found)
    }
}

/// Sums over cells and periods.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    periods: u64,
    cells: u64,
    ho_att: u64,
    ho_succ: u64,
    failures: u64,
    ping_pong: u64,
    /// `DRB.UEThpDl` times the cell's users (at least 1), summed, and those weights.
    thp_user_kbps: f64,
    users: f64,
    /// Highest mean PRB load of one cell, per mille.
    prb_max_permille: u64,
    /// `RLF.Coverage` and `RRC.ConnMean`, summed.
    rlf_coverage: u64,
    connected: u64,
}

impl Sums {
    fn add_cell(&mut self, periods: &[CellPeriod]) {
        let n = periods.len() as u64;
        self.periods = self.periods.max(n);
        self.cells += 1;
        let (mut used, mut tot) = (0u64, 0u64);
        for p in periods {
            self.ho_att = self.ho_att.saturating_add(p.ho_att);
            self.ho_succ = self.ho_succ.saturating_add(p.ho_succ);
            self.failures = self
                .failures
                .saturating_add(p.too_early + p.too_late + p.wrong_cell);
            self.ping_pong = self.ping_pong.saturating_add(p.ping_pong);
            self.rlf_coverage = self.rlf_coverage.saturating_add(p.rlf_coverage);
            self.connected = self.connected.saturating_add(p.users);
            let weight = p.users.max(1) as f64;
            self.thp_user_kbps += p.thp_dl_kbps as f64 * weight;
            self.users += weight;
            used = used.saturating_add(p.prb_used);
            tot = tot.saturating_add(p.prb_avail);
        }
        if let Some(load) = used.saturating_mul(1000).checked_div(tot) {
            self.prb_max_permille = self.prb_max_permille.max(load);
        }
    }

    fn permille(part: u64, whole: u64) -> f64 {
        part as f64 * 1000.0 / whole as f64
    }

    /// Mean throughput per user: each cell's `DRB.UEThpDl` weighted by its `RRC.ConnMean`.
    /// (A plain mean of the cells counts a congested cell's gain once however many users it
    /// has, so moving users out of it looked like a loss.)
    fn mean_thp(&self) -> f64 {
        if self.users > 0.0 {
            self.thp_user_kbps / self.users
        } else {
            0.0
        }
    }
}

/// What verifying a trial came to this period.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Its later periods have not all closed yet.
    NotYet,
    /// Not this site's to judge: none of its reconfigured cells is one of this site's.
    NotOurs,
    Verdict(Verdict),
}

/// Judges `trial`: `own` says which cells are this site's, `neighbours` lists the targets of a
/// cell's relations, `others` the other changes applied to the trial's cells (see
/// [`OpenTrials`]). One of them inside the periods that judge the trial makes the verdict keep
/// it without blame: what the counters saw is no longer this change's alone.
pub fn judge(
    trial: &Trial,
    others: &[OtherChange],
    own: impl Fn(&str) -> bool,
    neighbours: impl Fn(&str) -> Vec<String>,
    ring: &KpiRing,
    bounds: &Bounds,
) -> Judgement {
    if !trial.cells.iter().any(|c| own(c)) {
        return Judgement::NotOurs;
    }
    let n = bounds.policy.periods.max(1) as usize;
    let mut scope: BTreeSet<String> = trial
        .cells
        .iter()
        .filter(|c| own(c))
        .map(|c| c.to_string())
        .collect();
    for c in &trial.cells {
        scope.extend(neighbours(c).into_iter().filter(|t| own(t) && ring.has(t)));
    }
    // Due once every reconfigured own cell has its later periods. Handover rates are judged on
    // the reconfigured cells (their outgoing handovers are what the change configures: summed
    // with the neighbours' they would be diluted), load and throughput over the whole scope.
    let changed: BTreeSet<String> = trial
        .cells
        .iter()
        .filter(|c| own(c))
        .map(|c| c.to_string())
        .collect();
    let mut cells = Window::default();
    let mut area = Window::default();
    let mut baseline = true;
    // From the start of the earliest period judged to the end of the latest.
    let mut span = (u64::MAX, 0u64);
    for cell in &scope {
        let reconfigured = changed.contains(cell);
        let Some(later) = ring.after(cell, trial.applied_at_ms, n) else {
            if reconfigured {
                return Judgement::NotYet;
            }
            continue;
        };
        let Some(earlier) = ring.baseline(cell, trial.applied_at_ms, n) else {
            baseline = false;
            continue;
        };
        for p in earlier.iter().chain(&later) {
            span = (span.0.min(p.start_ms()), span.1.max(p.end_ms));
        }
        area.add(&earlier, &later);
        if reconfigured {
            cells.add(&earlier, &later);
        }
    }
    if !baseline || cells.before.cells == 0 {
        return Judgement::Verdict(Verdict {
            trial: trial.index,
            kpis: Vec::new(),
            degraded: None,
        });
    }
    let (kpis, degraded) = compare(trial.function, &cells, &area, bounds);
    // Waking a capacity cell answers a load its partners could not carry: judged by their
    // peak load it would look degraded (they were full), and undoing it would put the cell
    // back to sleep when it is needed most. Only sleeping is an experiment.
    let waking = trial.function == Function::EnergySaving
        && trial
            .writes
            .iter()
            .all(|(w, _)| matches!(&w.value, sonraft_raft::model::Value::Text(t) if t == "normal"));
    let degraded = degraded.filter(|_| !waking);
    // Another change inside the windows (mobility robustness stepping an offset of the cell
    // load balancing just offloaded, a fallback undoing a third change): the KPIs moved for
    // both, and undoing this one would blame it, and hold its function off the cells for
    // hours, for what may be the other's doing. Kept, with its KPIs recorded.
    let shared = others.iter().find(|o| o.at_ms > span.0 && o.at_ms < span.1);
    let degraded = match (degraded, shared) {
        (Some(why), Some(other)) => {
            tracing::info!(
                trial = trial.index,
                function = %trial.function,
                other = %other.function,
                other_at_ms = other.at_ms,
                would_be = %why.0,
                "SON change kept unjudged: another change on its cells falls inside its verification periods"
            );
            None
        }
        (degraded, _) => degraded,
    };
    let degraded = degraded.map(|(why, on_area)| {
        let over = if on_area { &scope } else { &changed };
        format!("{why} over cells {}", list(over))
    });
    Judgement::Verdict(Verdict {
        trial: trial.index,
        kpis,
        degraded,
    })
}

/// Sums before and after a change over some cells.
#[derive(Debug, Default)]
struct Window {
    before: Sums,
    after: Sums,
}

impl Window {
    fn add(&mut self, before: &[CellPeriod], after: &[CellPeriod]) {
        self.before.add_cell(before);
        self.after.add_cell(after);
    }
}

fn list(cells: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = cells.iter().take(8).map(String::as_str).collect();
    let more = cells.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The KPIs of `function`'s change, before and after, and the first that got worse beyond the
/// policy's thresholds (with whether it was judged over the whole area, or on the reconfigured
/// cells).
fn compare(
    function: Function,
    cells: &Window,
    area: &Window,
    bounds: &Bounds,
) -> (Vec<KpiDelta>, Option<(String, bool)>) {
    let policy = &bounds.policy;
    let limit = f64::from(policy.degrade_permille);
    let mut kpis = Vec::new();
    let mut degraded = None;
    let mut judge =
        |kpi: &str, b: f64, a: f64, worse: f64, limit: f64, unit: &str, on_area: bool| {
            kpis.push(KpiDelta {
                kpi: kpi.into(),
                before: b,
                after: a,
            });
            if degraded.is_none() && worse > limit {
                degraded = Some((
                    format!(
                        "{kpi} {b:.1} -> {a:.1} (worse by {worse:.1}{unit}, limit {limit:.0}{unit})"
                    ),
                    on_area,
                ));
            }
        };
    let floor = u64::from(policy.min_attempts);
    // A coverage change moves handovers between the cell and its neighbours (a downtilted
    // overshooter stops handing its far users over, its neighbours take them): its handover
    // success is judged over the area they share, not on the changed cell alone.
    let (window, on_area) = if function == Function::CoverageCapacity {
        (area, true)
    } else {
        (cells, false)
    };
    let (before, after) = (&window.before, &window.after);
    let rates = before.ho_att >= floor * before.periods * before.cells
        && after.ho_att >= floor * after.periods * after.cells;
    const PM: &str = " per mille";
    if rates {
        let (b, a) = (
            Sums::permille(before.ho_succ, before.ho_att),
            Sums::permille(after.ho_succ, after.ho_att),
        );
        judge("ho_success_permille", b, a, b - a, limit, PM, on_area);
        if function == Function::MobilityRobustness {
            let (b, a) = (
                Sums::permille(before.failures, before.ho_att),
                Sums::permille(after.failures, after.ho_att),
            );
            judge("ho_failure_permille", b, a, a - b, limit, PM, false);
            let (b, a) = (
                Sums::permille(before.ping_pong, before.ho_att),
                Sums::permille(after.ping_pong, after.ho_att),
            );
            judge("ping_pong_permille", b, a, a - b, limit, PM, false);
        }
    }
    let (before, after) = (&area.before, &area.after);
    // What coverage optimisation must not do: leave users without coverage. Users that drop
    // count in neither handovers nor throughput; their radio link failure reports do.
    if function == Function::CoverageCapacity && before.connected > 0 && after.connected > 0 {
        let (b, a) = (
            Sums::permille(before.rlf_coverage, before.connected),
            Sums::permille(after.rlf_coverage, after.connected),
        );
        judge("rlf_coverage_permille", b, a, a - b, limit, PM, true);
    }
    if function == Function::LoadBalancing {
        let (b, a) = (
            before.prb_max_permille as f64,
            after.prb_max_permille as f64,
        );
        judge("prb_max_permille", b, a, a - b, limit, PM, true);
    }
    if function == Function::EnergySaving {
        // A sleeping capacity layer lowers per-user throughput by design; what it must not do
        // is leave its partners short of capacity.
        let (b, a) = (
            before.prb_max_permille as f64,
            after.prb_max_permille as f64,
        );
        let ceiling = bounds.partner_peak_pct * 10.0;
        judge("prb_max_permille", b, a, a, ceiling, PM, true);
        return (kpis, degraded);
    }
    let (b, a) = (before.mean_thp(), after.mean_thp());
    if b > 0.0 {
        let drop = (b - a) * 1000.0 / b;
        let limit = f64::from(policy.throughput_drop_permille);
        judge(
            "thp_dl_kbps",
            b,
            a,
            drop,
            limit,
            " per mille of the value",
            true,
        );
    }
    (kpis, degraded)
}

/// Whether `cell` is one of this site's cells in `view`.
pub fn is_own(view: &RadioView, cell: &str) -> bool {
    view.index.get(cell).is_some_and(|&c| view.cell(c).own)
}

/// The ids of the cells around `cell` in `view`: targets of its relations and sources of
/// relations to it.
fn neighbours_in(view: &RadioView, cell: &str) -> Vec<String> {
    view.index
        .get(cell)
        .map(|&c| {
            view.neighbours(c)
                .into_iter()
                .map(|n| view.id(n).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A write applied to a cell, or to one of its relations, by some writer at some log time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OtherChange {
    pub at_ms: u64,
    pub function: Function,
    pub param: Param,
}

/// The open trials with a cell of this site, each with the other changes applied to its cells
/// that the image still knows of and that act on what the trial changed, in log time order.
///
/// The image keeps, per cell and per relation, the last writer of each parameter and when
/// (which covers the operator and the fallbacks that undo a change), and the trials open and
/// closed (which cover a change that a later one overwrote). A change of the trial's own
/// function at the trial's log time is the trial's: a function does not step again on a cell
/// before its verdict. Only a parameter the trial wrote, or one the rules couple with it
/// ([`rules::coupled`]: the handover decision, the cell's border), acts on it: a relation ANR
/// added beside a hysteresis change does not excuse that change.
#[derive(Debug, Default)]
pub struct OpenTrials {
    trials: Vec<(Trial, Vec<OtherChange>)>,
}

/// The open trials with a cell of this site (see [`OpenTrials`]).
pub fn open_trials(image: &NetworkImage, view: &RadioView) -> OpenTrials {
    let trials: Vec<&Trial> = image
        .son
        .trials
        .values()
        .filter(|t| t.cells.iter().any(|c| is_own(view, c)))
        .collect();
    let mut changes: HashMap<&str, BTreeSet<OtherChange>> = trials
        .iter()
        .flat_map(|t| &t.cells)
        .map(|c| (c.as_str(), BTreeSet::new()))
        .collect();
    for (cell, found) in changes.iter_mut() {
        let stamps = image
            .cells
            .get(*cell)
            .into_iter()
            .flat_map(|c| &c.last_change)
            .chain(image.relations_from(cell).flat_map(|r| &r.last_change));
        found.extend(stamps.map(|(param, s)| OtherChange {
            at_ms: s.at_ms,
            function: s.by,
            param: *param,
        }));
    }
    let recorded = image
        .son
        .trials
        .values()
        .chain(image.son.journal.values().map(|r| &r.trial));
    for t in recorded {
        for (w, _) in &t.writes {
            let cell = match &w.entity {
                EntityRef::Cell(c) | EntityRef::Relation(c, _) => c.as_str(),
            };
            if let Some(found) = changes.get_mut(cell) {
                found.insert(OtherChange {
                    at_ms: t.applied_at_ms,
                    function: t.function,
                    param: w.param,
                });
            }
        }
    }
    let trials = trials
        .into_iter()
        .map(|t| {
            let mine = |o: &OtherChange| o.function == t.function && o.at_ms == t.applied_at_ms;
            let acting: BTreeSet<Param> = t
                .writes
                .iter()
                .flat_map(|(w, _)| std::iter::once(w.param).chain(rules::coupled(w.param)))
                .collect();
            let mut others: Vec<OtherChange> = t
                .cells
                .iter()
                .filter_map(|c| changes.get(c.as_str()))
                .flatten()
                .filter(|o| !mine(o) && acting.contains(&o.param))
                .copied()
                .collect();
            others.sort();
            others.dedup();
            (t.clone(), others)
        })
        .collect();
    OpenTrials { trials }
}

/// The verdicts due this period on `trials` (this site's open ones), each proposed once.
pub fn due(
    trials: &OpenTrials,
    view: &RadioView,
    ring: &KpiRing,
    proposed: &mut Proposed,
    bounds: &Bounds,
) -> Vec<Verdict> {
    let open: std::collections::HashSet<u64> = trials.trials.iter().map(|t| t.0.index).collect();
    proposed.retain_open(|t| open.contains(&t));
    trials
        .trials
        .iter()
        .filter_map(|(t, others)| {
            match judge(
                t,
                others,
                |c| is_own(view, c),
                |c| neighbours_in(view, c),
                ring,
                bounds,
            ) {
                Judgement::Verdict(v) if proposed.insert(v.trial) => Some(v),
                _ => None,
            }
        })
        .collect()
}

/// The trials this site has proposed a verdict for, so that each is proposed once (until it
/// closes, or the proposal failed).
#[derive(Debug, Default)]
pub struct Proposed(BTreeSet<u64>);

impl Proposed {
    /// True the first time.
    pub fn insert(&mut self, trial: u64) -> bool {
        self.0.insert(trial)
    }

    pub fn forget(&mut self, trial: u64) {
        self.0.remove(&trial);
    }

    /// Keeps only the trials still open.
    pub fn retain_open(&mut self, open: impl Fn(u64) -> bool) {
        self.0.retain(|t| open(*t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonraft_raft::changeset::Write;
    use sonraft_raft::model::{EntityRef, Param, Value};

    const PERIOD: u64 = 1000;

    fn trial(function: Function, at_ms: u64) -> Trial {
        Trial {
            index: 9,
            function,
            applied_at_ms: at_ms,
            writes: vec![(
                Write {
                    entity: EntityRef::cell("A-1"),
                    param: Param::Hysteresis,
                    value: Value::Int(1),
                },
                Value::Int(4),
            )],
            cells: vec!["A-1".into()],
            removed: vec![],
        }
    }

    fn period(end_ms: u64, att: u64, late: u64, thp: u64, prb: u64) -> CellPeriod {
        CellPeriod {
            end_ms,
            period_ms: PERIOD as u32,
            ho_att: att,
            ho_succ: att - late,
            too_late: late,
            thp_dl_kbps: thp,
            prb_used: prb,
            prb_avail: 100,
            ..CellPeriod::default()
        }
    }

    /// Cells A-1 (changed) and A-2 (its neighbour), `n` periods ending at 1 s, 2 s, ...: the
    /// first half before the change at `at`, the rest with `late_after` too-late handovers.
    fn ring(at: u64, n: u64, late_after: u64) -> KpiRing {
        let mut r = KpiRing::default();
        for i in 1..=n {
            let end = i * PERIOD;
            let late = if end > at { late_after } else { 10 };
            r.record_cell("A-1", period(end, 1000, late, 20_000, 50));
            r.record_cell("A-2", period(end, 1000, 10, 20_000, 40));
        }
        r
    }

    fn own(c: &str) -> bool {
        c.starts_with('A')
    }

    fn neighbours(_: &str) -> Vec<String> {
        vec!["A-2".into(), "Z-1".into()]
    }

    #[test]
    fn a_change_that_raised_too_late_handovers_is_judged_degraded() {
        let t = trial(Function::MobilityRobustness, 4 * PERIOD);
        let j = judge(
            &t,
            &[],
            own,
            neighbours,
            &ring(4 * PERIOD, 6, 80),
            &Bounds::default(),
        );
        let Judgement::Verdict(v) = j else {
            panic!("{j:?}")
        };
        let why = v.degraded.expect("degraded");
        assert!(
            why.starts_with("ho_success_permille 990.0 -> 920.0"),
            "{why}"
        );
        assert!(why.ends_with("per mille) over cells A-1"), "{why}");
        let failure = v
            .kpis
            .iter()
            .find(|k| k.kpi == "ho_failure_permille")
            .unwrap();
        assert_eq!((failure.before, failure.after), (10.0, 80.0));
    }

    #[test]
    fn a_coverage_change_is_judged_by_the_handover_success_of_its_whole_scope() {
        let mut t = trial(Function::CoverageCapacity, 4 * PERIOD);
        t.writes[0].0.param = Param::ElectricalTilt;
        // A-1's success falls by 40 per mille, its neighbour's holds: the area's by 20.
        let verdict = |late_after| {
            let j = judge(
                &t,
                &[],
                own,
                neighbours,
                &ring(4 * PERIOD, 6, late_after),
                &Bounds::default(),
            );
            let Judgement::Verdict(v) = j else {
                panic!("{j:?}")
            };
            v
        };
        let v = verdict(50);
        assert_eq!(v.degraded, None, "{:?}", v.kpis);
        let ho = v
            .kpis
            .iter()
            .find(|k| k.kpi == "ho_success_permille")
            .unwrap();
        assert_eq!((ho.before, ho.after), (990.0, 970.0));
        // The same change judged as mobility robustness's is undone.
        let mut mro = t.clone();
        mro.function = Function::MobilityRobustness;
        let j = judge(
            &mro,
            &[],
            own,
            neighbours,
            &ring(4 * PERIOD, 6, 50),
            &Bounds::default(),
        );
        assert!(
            matches!(
                j,
                Judgement::Verdict(Verdict {
                    degraded: Some(_),
                    ..
                })
            ),
            "{j:?}"
        );
        // A fall the area feels is undone for coverage too, named over the area.
        let why = verdict(80).degraded.expect("degraded");
        assert!(
            why.starts_with("ho_success_permille 990.0 -> 955.0"),
            "{why}"
        );
        assert!(why.ends_with("over cells A-1, A-2"), "{why}");
    }

    #[test]
    fn a_coverage_change_that_drops_users_for_coverage_is_undone() {
        // A downtilt that shrinks a hole-free area into one with holes: handovers and
        // throughput hold (the users that drop are not counted in either), but the share of
        // users whose radio link fails for coverage (`RLF.Coverage` per `RRC.ConnMean`) rises
        // from 10 to 45 per mille over the scope.
        let mut t = trial(Function::CoverageCapacity, 4 * PERIOD);
        t.writes[0].0.param = Param::ElectricalTilt;
        let mut r = KpiRing::default();
        for i in 1..=6 {
            let end = i * PERIOD;
            let rlf = if end > 4 * PERIOD { 16 } else { 2 };
            for cell in ["A-1", "A-2"] {
                let mut p = period(end, 1000, 10, 20_000, 50);
                p.users = 200;
                p.rlf_coverage = if cell == "A-1" { rlf } else { 2 };
                r.record_cell(cell, p);
            }
        }
        let j = judge(&t, &[], own, neighbours, &r, &Bounds::default());
        let Judgement::Verdict(v) = j else {
            panic!("{j:?}")
        };
        let why = v.degraded.expect("degraded");
        assert!(
            why.starts_with("rlf_coverage_permille 10.0 -> 45.0"),
            "{why}"
        );
        assert!(why.ends_with("over cells A-1, A-2"), "{why}");
        // Another function's change is not judged on it (its counters say nothing of coverage
        // it did not touch).
        let mut mlb = t.clone();
        mlb.function = Function::LoadBalancing;
        let Judgement::Verdict(v) = judge(&mlb, &[], own, neighbours, &r, &Bounds::default())
        else {
            panic!()
        };
        assert!(v.kpis.iter().all(|k| k.kpi != "rlf_coverage_permille"));
    }

    #[test]
    fn a_change_whose_kpis_held_within_noise_is_kept() {
        let t = trial(Function::MobilityRobustness, 4 * PERIOD);
        let j = judge(
            &t,
            &[],
            own,
            neighbours,
            &ring(4 * PERIOD, 6, 12),
            &Bounds::default(),
        );
        let Judgement::Verdict(v) = j else {
            panic!("{j:?}")
        };
        assert_eq!(v.degraded, None, "{:?}", v.kpis);
        assert_eq!(v.kpis.len(), 4);
    }

    #[test]
    fn a_verdict_waits_for_the_periods_after_the_change() {
        let t = trial(Function::MobilityRobustness, 4 * PERIOD);
        let j = judge(
            &t,
            &[],
            own,
            neighbours,
            &ring(4 * PERIOD, 5, 80),
            &Bounds::default(),
        );
        assert_eq!(j, Judgement::NotYet);
    }

    #[test]
    fn another_sites_change_is_not_ours_and_no_baseline_keeps_the_change() {
        let mut t = trial(Function::MobilityRobustness, 4 * PERIOD);
        t.cells = vec!["Z-1".into()];
        let j = judge(
            &t,
            &[],
            own,
            neighbours,
            &ring(4 * PERIOD, 6, 80),
            &Bounds::default(),
        );
        assert_eq!(j, Judgement::NotOurs);
        // The node started after the change: no baseline.
        let t = trial(Function::MobilityRobustness, 0);
        let j = judge(
            &t,
            &[],
            own,
            neighbours,
            &ring(0, 3, 80),
            &Bounds::default(),
        );
        let Judgement::Verdict(v) = j else {
            panic!("{j:?}")
        };
        assert_eq!((v.degraded, v.kpis.len()), (None, 0));
    }

    #[test]
    fn rates_from_too_few_handovers_do_not_count() {
        let mut r = KpiRing::default();
        for i in 1..=6 {
            let late = if i > 4 { 9 } else { 1 };
            r.record_cell("A-1", period(i * PERIOD, 10, late, 20_000, 50));
        }
        let t = trial(Function::MobilityRobustness, 4 * PERIOD);
        let Judgement::Verdict(v) = judge(&t, &[], own, |_| vec![], &r, &Bounds::default()) else {
            panic!()
        };
        assert_eq!(v.degraded, None);
        assert!(
            v.kpis.iter().all(|k| k.kpi == "thp_dl_kbps"),
            "{:?}",
            v.kpis
        );
    }

    #[test]
    fn a_load_balancing_change_that_overloads_a_neighbour_is_degraded() {
        let mut r = KpiRing::default();
        for i in 1..=6 {
            let prb = if i > 4 { 95 } else { 60 };
            r.record_cell("A-1", period(i * PERIOD, 1000, 10, 20_000, 50));
            r.record_cell("A-2", period(i * PERIOD, 1000, 10, 20_000, prb));
        }
        let t = trial(Function::LoadBalancing, 4 * PERIOD);
        let Judgement::Verdict(v) = judge(&t, &[], own, neighbours, &r, &Bounds::default()) else {
            panic!()
        };
        assert!(
            v.degraded
                .unwrap()
                .starts_with("prb_max_permille 600.0 -> 950.0")
        );
    }

    #[test]
    fn a_throughput_drop_within_ten_percent_is_noise() {
        let mut r = KpiRing::default();
        for i in 1..=6 {
            let thp = if i > 4 { 18_500 } else { 20_000 };
            r.record_cell("A-1", period(i * PERIOD, 1000, 10, thp, 50));
        }
        let t = trial(Function::PciConflict, 4 * PERIOD);
        let v = |r: &KpiRing| match judge(&t, &[], own, |_| vec![], r, &Bounds::default()) {
            Judgement::Verdict(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(v(&r).degraded, None);
        r.record_cell("A-1", period(6 * PERIOD, 1000, 10, 15_000, 50));
        assert!(v(&r).degraded.unwrap().starts_with("thp_dl_kbps"));
    }

    #[test]
    fn users_moved_out_of_a_congested_cell_count_as_the_gain_they_are() {
        // A-1 is congested (300 users at 1 Mbit/s); load balancing moves 60 of them to A-2
        // (300 users at 30 Mbit/s). Per user, the mean falls 5 % (15.5 -> 14.75 Mbit/s),
        // within noise; the plain mean of the two cells falls 12 % (15.5 -> 13.6), because
        // A-1's gain counts once however many users it has. The user-weighted mean is what
        // the users saw.
        let mut r = KpiRing::default();
        for i in 1..=6 {
            let after = i > 4;
            let cell = |thp: u64, users: u64| CellPeriod {
                users,
                ..period(i * PERIOD, 1000, 10, thp, 50)
            };
            r.record_cell(
                "A-1",
                if after {
                    cell(8_000, 240)
                } else {
                    cell(1_000, 300)
                },
            );
            r.record_cell(
                "A-2",
                if after {
                    cell(19_250, 360)
                } else {
                    cell(30_000, 300)
                },
            );
        }
        let t = trial(Function::LoadBalancing, 4 * PERIOD);
        let Judgement::Verdict(v) = judge(&t, &[], own, neighbours, &r, &Bounds::default()) else {
            panic!()
        };
        let thp = v.kpis.iter().find(|k| k.kpi == "thp_dl_kbps").unwrap();
        assert_eq!((thp.before, thp.after), (15_500.0, 14_750.0));
        assert_eq!(v.degraded, None, "{:?}", v.kpis);
    }

    #[test]
    fn energy_saving_is_judged_by_its_partners_peak_load_not_by_throughput() {
        // A-1 goes dormant; its partner A-2 takes its users: A-2's load rises and the
        // per-user throughput falls (the capacity layer sleeps), which is the trade.
        let ring = |partner_after: u64| {
            let mut r = KpiRing::default();
            for i in 1..=6 {
                let after = i > 4;
                r.record_cell(
                    "A-1",
                    period(
                        i * PERIOD,
                        0,
                        0,
                        if after { 0 } else { 60_000 },
                        if after { 0 } else { 5 },
                    ),
                );
                r.record_cell(
                    "A-2",
                    period(
                        i * PERIOD,
                        1000,
                        10,
                        if after { 30_000 } else { 40_000 },
                        if after { partner_after } else { 20 },
                    ),
                );
            }
            r
        };
        let t = trial(Function::EnergySaving, 4 * PERIOD);
        let verdict = |r: &KpiRing| match judge(&t, &[], own, neighbours, r, &Bounds::default()) {
            Judgement::Verdict(v) => v,
            other => panic!("{other:?}"),
        };
        let v = verdict(&ring(45));
        assert_eq!(v.degraded, None, "{:?}", v.kpis);
        let v = verdict(&ring(80));
        let why = v.degraded.expect("a partner above its ceiling");
        assert!(why.starts_with("prb_max_permille 200.0 -> 800.0"), "{why}");
        // The ceiling follows the tuned wake ceiling: at 80 % energy saving keeps the cell
        // asleep with a partner at 80 %, and verification does not undo what it keeps.
        let tuning = EnergySavingTuning {
            wake_ceiling_pct: 80,
            ..EnergySavingTuning::default()
        };
        let bounds = Bounds {
            partner_peak_pct: super::super::energy_saving::partner_peak_pct(&tuning),
            ..Bounds::default()
        };
        let Judgement::Verdict(v) = judge(&t, &[], own, neighbours, &ring(80), &bounds) else {
            panic!("due")
        };
        assert_eq!(v.degraded, None, "{:?}", v.kpis);
    }

    #[test]
    fn waking_a_capacity_cell_is_never_undone() {
        let mut r = KpiRing::default();
        for i in 1..=6 {
            r.record_cell(
                "A-1",
                period(i * PERIOD, 0, 0, 20_000, if i > 4 { 30 } else { 0 }),
            );
            r.record_cell("A-2", period(i * PERIOD, 1000, 10, 20_000, 90));
        }
        let mut t = trial(Function::EnergySaving, 4 * PERIOD);
        t.writes = vec![(
            sonraft_raft::changeset::Write {
                entity: sonraft_raft::model::EntityRef::cell("A-1"),
                param: sonraft_raft::model::Param::EnergySaving,
                value: sonraft_raft::model::Value::Text("normal".into()),
            },
            sonraft_raft::model::Value::Text("dormant".into()),
        )];
        let Judgement::Verdict(v) = judge(&t, &[], own, neighbours, &r, &Bounds::default()) else {
            panic!()
        };
        assert_eq!(v.degraded, None, "{:?}", v.kpis);
    }

    /// A1's relations to A2 and Z1, load balancing's trial 9 on A1 (CIO A1 -> Z1 0 -> 2 dB at
    /// 4 s), and a ring in which A1's handover success falls from 990 to 920 per mille after
    /// it.
    fn load_balancing_trial_on_a1() -> (NetworkImage, KpiRing) {
        use super::super::testing::{cell, image, relation};
        use sonraft_raft::model::Stamp;
        let mut img = image(
            vec![
                cell("A1", 1, 1300),
                cell("A2", 2, 1300),
                cell("Z1", 3, 1300),
            ],
            vec![relation("A1", "A2"), relation("A1", "Z1")],
        );
        let write = Write {
            entity: EntityRef::relation("A1", "Z1"),
            param: Param::CioDb,
            value: Value::Int(2),
        };
        img.son.trials.insert(
            9,
            Trial {
                index: 9,
                function: Function::LoadBalancing,
                applied_at_ms: 4 * PERIOD,
                writes: vec![(write, Value::Int(0))],
                cells: vec!["A1".into()],
                removed: vec![],
            },
        );
        let rel = img.relations.get_mut(&("A1".into(), "Z1".into())).unwrap();
        rel.cio_db = 2;
        rel.last_change.insert(
            Param::CioDb,
            Stamp {
                by: Function::LoadBalancing,
                at_ms: 4 * PERIOD,
                index: 9,
            },
        );
        let mut r = KpiRing::default();
        for i in 1..=6 {
            let late = if i > 4 { 80 } else { 10 };
            r.record_cell("A1", period(i * PERIOD, 1000, late, 20_000, 50));
            r.record_cell("A2", period(i * PERIOD, 1000, 10, 20_000, 40));
        }
        (img, r)
    }

    fn verdicts(img: &NetworkImage, r: &KpiRing) -> Vec<Verdict> {
        let view = super::super::testing::view(img);
        let trials = open_trials(img, &view);
        due(
            &trials,
            &view,
            r,
            &mut Proposed::default(),
            &Bounds::default(),
        )
    }

    #[test]
    fn a_change_is_not_blamed_for_another_functions_change_inside_its_windows() {
        let (mut img, r) = load_balancing_trial_on_a1();
        // Alone on A1, the fall is load balancing's: undone.
        let alone = verdicts(&img, &r);
        assert_eq!(alone.len(), 1, "{alone:?}");
        assert!(alone[0].degraded.is_some(), "{alone:?}");
        // Mobility robustness stepped A1 -> A2 before the baseline began: no excuse.
        let mro_at = |img: &mut NetworkImage, at_ms: u64| {
            let rel = img.relations.get_mut(&("A1".into(), "A2".into())).unwrap();
            rel.cio_db = -1;
            rel.last_change.insert(
                Param::CioDb,
                sonraft_raft::model::Stamp {
                    by: Function::MobilityRobustness,
                    at_ms,
                    index: 10,
                },
            );
        };
        mro_at(&mut img, 2 * PERIOD - PERIOD / 2);
        assert!(verdicts(&img, &r)[0].degraded.is_some());
        // A relation added beside it does not act on the offset: no excuse either.
        img.relations
            .get_mut(&("A1".into(), "A2".into()))
            .unwrap()
            .last_change
            .insert(
                Param::Exists,
                sonraft_raft::model::Stamp {
                    by: Function::AnrAdd,
                    at_ms: 4 * PERIOD + PERIOD / 2,
                    index: 11,
                },
            );
        assert!(verdicts(&img, &r)[0].degraded.is_some());
        // ... half a period after it: the fall may be either change's, and neither is undone
        // for it.
        mro_at(&mut img, 4 * PERIOD + PERIOD / 2);
        let shared = verdicts(&img, &r);
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert_eq!(shared[0].trial, 9);
        assert_eq!(shared[0].degraded, None, "{shared:?}");
    }

    #[test]
    fn the_ring_keeps_a_bounded_number_of_periods_and_replaces_a_repeated_one() {
        let mut r = KpiRing::default();
        for i in 1..=(MAX_PERIODS as u64 + 10) {
            r.record_cell("A-1", period(i * PERIOD, 1, 0, 1, 1));
        }
        r.record_cell(
            "A-1",
            period((MAX_PERIODS as u64 + 10) * PERIOD, 5, 0, 1, 1),
        );
        let ring = &r.cells["A-1"];
        assert_eq!(ring.len(), MAX_PERIODS);
        assert_eq!(ring.back().unwrap().ho_att, 5);
        // Only what verification over 2 periods needs, once the policy is known.
        r.keep_for(2);
        r.record_cell(
            "A-1",
            period((MAX_PERIODS as u64 + 11) * PERIOD, 5, 0, 1, 1),
        );
        assert_eq!(r.cells["A-1"].len(), 8);
        r.retain(|c| c != "A-1");
        assert!(!r.has("A-1"));
    }
}
