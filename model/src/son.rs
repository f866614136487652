//! The operator's controls over the SON functions: part of the replicated image since command
//! format 4, so every node enforces the same controls at the same log index.
//!
//! A SON change is an experiment on a live network, so the operator decides, per function:
//! - its **mode**: `closed_loop` (changes apply when the rules accept them), `open_loop` (a
//!   proposal is only recorded as *pending* and applies when an operator approves it, within
//!   [`SonPolicy::pending_ttl_ms`]), or `off`;
//! - **exclusions**: cells, sites or regions it must not touch;
//! - a **change window**: the minutes of the (UTC) log day in which it may change anything,
//!   e.g. PCI changes only 01:00-05:00.
//!
//! Controls bind SON functions only, never the operator, and they are judged at apply time
//! against the log time ([`crate::rules`]), like every other rule.
//!
//! Every SON change that applies opens a **trial** ([`Trial`]): what it wrote, with the values
//! before and after. The site that owns the cells compares their KPIs before and after
//! [`Verification::periods`] counter periods and proposes a [`Verdict`]. A verdict that names a
//! degraded KPI undoes the change when it is applied: every parameter the change wrote that
//! nobody changed since gets its old value back (origin `fallback`), and the function is held
//! off the changed cells for [`Verification::hold_ms`]. Until its trial is closed, a function
//! does not step again on the same cell (the self cool-down); a trial without a verdict within
//! [`Verification::verdict_within_ms`] closes as unverified.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::changeset::{ChangeSet, Function, Write};
use crate::model::{CellId, SiteId, Value};

/// Most proposals waiting for an operator at once; more are refused until some are decided.
pub const MAX_PENDING: usize = 1000;
/// Most entries in one exclusion list.
pub const MAX_EXCLUDED: usize = 100_000;
/// Minutes in a day of log time.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// How a SON function's proposals take effect.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Proposals apply when the rules accept them.
    #[default]
    ClosedLoop,
    /// Proposals wait for an operator's approval.
    OpenLoop,
    /// Proposals are refused.
    Off,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::ClosedLoop => "closed_loop",
            Mode::OpenLoop => "open_loop",
            Mode::Off => "off",
        }
    }
}

/// Cells, sites and regions (a site's `region`) a function must leave alone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default)]
pub struct Exclusions {
    pub cells: BTreeSet<CellId>,
    pub sites: BTreeSet<SiteId>,
    pub regions: BTreeSet<String>,
}

impl Exclusions {
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.sites.is_empty() && self.regions.is_empty()
    }

    fn len(&self) -> usize {
        self.cells.len() + self.sites.len() + self.regions.len()
    }
}

/// The minutes of the log day (UTC) in which a function may change anything: from
/// `from_minute` (inclusive) to `to_minute` (exclusive); a window that ends before it starts
/// spans midnight (22:00-02:00).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from_minute: u16,
    pub to_minute: u16,
}

impl Window {
    /// Whether log time `now_ms` (milliseconds since the Unix epoch) falls inside.
    pub fn contains(&self, now_ms: u64) -> bool {
        let minute = ((now_ms / 60_000) % u64::from(MINUTES_PER_DAY)) as u16;
        if self.from_minute <= self.to_minute {
            (self.from_minute..self.to_minute).contains(&minute)
        } else {
            minute >= self.from_minute || minute < self.to_minute
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{} UTC", hm(self.from_minute), hm(self.to_minute))
    }
}

/// One function's controls. The default leaves the function as it was before format 4.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default)]
pub struct Controls {
    pub mode: Mode,
    pub exclude: Exclusions,
    pub window: Option<Window>,
}

/// How SON changes are verified, and what makes a change fail.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct Verification {
    /// Counter periods after a change (and before it, for the baseline) whose KPIs judge it.
    pub periods: u32,
    /// A trial without a verdict this long after its change applied closes as unverified.
    pub verdict_within_ms: u64,
    /// How long a function leaves the cells of its undone change alone.
    pub hold_ms: u64,
    /// A change fails when the KPI its function targets, or a guard KPI, is worse by more than
    /// this many per mille points: handover success, failure (too early, too late, wrong cell)
    /// and ping-pong rates, the highest PRB load among the cells.
    pub degrade_permille: u32,
    /// ... or when the cells' downlink throughput fell by more than this many per mille of its
    /// value.
    pub throughput_drop_permille: u32,
    /// Fewest handover attempts in each of the periods before and after for a rate to count.
    pub min_attempts: u32,
}

impl Default for Verification {
    fn default() -> Self {
        Verification {
            periods: 2,
            verdict_within_ms: 2 * 60 * 60 * 1000,
            hold_ms: 6 * 60 * 60 * 1000,
            degrade_permille: 30,
            throughput_drop_permille: 100,
            min_attempts: 50,
        }
    }
}

/// The operator's controls of every SON function. A function without an entry runs closed
/// loop everywhere at any time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct SonPolicy {
    pub functions: BTreeMap<Function, Controls>,
    /// An open-loop proposal that no operator decided within this long (log time) expires.
    pub pending_ttl_ms: u64,
    pub verification: Verification,
}

impl Default for SonPolicy {
    fn default() -> Self {
        SonPolicy {
            functions: BTreeMap::new(),
            pending_ttl_ms: 24 * 60 * 60 * 1000,
            verification: Verification::default(),
        }
    }
}

/// The numbers the SON functions decide by, per function: replicated since command format 5
/// (`PUT /son/tuning`), so every site's functions use the same ones. The defaults are what the
/// functions used before they could be tuned.
///
/// Bincode is positional, so the sections added later do not ride in the older encodings:
/// command format 5, `m/tuning` and snapshot formats 4 to 7 carry the [`TuningV1`] part only,
/// and the [`AvailabilityTuning`] part (command format 9) has its own command variant, stored
/// key (`m/tuning/availability`, data format 9) and snapshot format (8). A tuning whose
/// availability part is at its defaults is written the old way, so a cluster mid-upgrade can
/// still be tuned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    pub mobility_robustness: MroTuning,
    pub load_balancing: MlbTuning,
    pub anr: AnrTuning,
    pub pci: PciTuning,
    /// Since command format 9.
    pub outage: OutageTuning,
    /// Since command format 9.
    pub outage_compensation: CompensationTuning,
    /// Since command format 9.
    pub energy_saving: EnergySavingTuning,
}

/// The tuning as command format 5 carries it (and `m/tuning`, snapshot formats 4 to 7): the
/// sections up to PCI. Its encoding never changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TuningV1 {
    pub mobility_robustness: MroTuning,
    pub load_balancing: MlbTuning,
    pub anr: AnrTuning,
    pub pci: PciTuning,
}

/// The sections added with command format 9: the functions that act on cells out of service
/// (failed or asleep). Stored as `m/tuning/availability` and at the end of snapshot format 8.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AvailabilityTuning {
    pub outage: OutageTuning,
    pub outage_compensation: CompensationTuning,
    pub energy_saving: EnergySavingTuning,
}

impl Tuning {
    /// The part older formats carry.
    pub fn v1(&self) -> TuningV1 {
        TuningV1 {
            mobility_robustness: self.mobility_robustness.clone(),
            load_balancing: self.load_balancing.clone(),
            anr: self.anr.clone(),
            pci: self.pci.clone(),
        }
    }

    /// The part command format 9 added.
    pub fn availability(&self) -> AvailabilityTuning {
        AvailabilityTuning {
            outage: self.outage.clone(),
            outage_compensation: self.outage_compensation.clone(),
            energy_saving: self.energy_saving.clone(),
        }
    }

    /// Whether only a format-9 encoding carries this tuning (its availability part is set).
    pub fn needs_format_9(&self) -> bool {
        self.availability() != AvailabilityTuning::default()
    }

    /// The tuning of both parts.
    pub fn from_parts(v1: TuningV1, availability: AvailabilityTuning) -> Tuning {
        Tuning {
            mobility_robustness: v1.mobility_robustness,
            load_balancing: v1.load_balancing,
            anr: v1.anr,
            pci: v1.pci,
            outage: availability.outage,
            outage_compensation: availability.outage_compensation,
            energy_saving: availability.energy_saving,
        }
    }
}

impl From<TuningV1> for Tuning {
    /// A format-5 tuning: the availability sections at their defaults.
    fn from(v1: TuningV1) -> Tuning {
        Tuning::from_parts(v1, AvailabilityTuning::default())
    }
}

/// Outage detection: when a silent or idle cell is in outage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OutageTuning {
    /// Closed periods a cell that reported before may miss before it is in hard outage.
    pub hard_periods: u8,
    /// Periods a cell that carried users may report no users and no load before it is a
    /// sleeping cell.
    pub sleeping_periods: u8,
    /// Share of a site's own cells that must report for a period to count one missing (a
    /// period most cells missed says more about the site's link than about a cell).
    pub min_reporting_pct: u8,
}

impl Default for OutageTuning {
    fn default() -> Self {
        OutageTuning {
            hard_periods: 2,
            sleeping_periods: 2,
            min_reporting_pct: 50,
        }
    }
}

/// Outage compensation: which neighbours cover a cell in outage, and when they stop.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CompensationTuning {
    /// Most neighbours that compensate one cell.
    pub max_compensators: u8,
    /// A neighbour at or above this load (percent of its downlink PRBs) is not chosen.
    pub max_compensator_load_pct: u8,
    /// A compensating neighbour that reaches this load withdraws its compensation.
    pub withdraw_load_pct: u8,
}

impl Default for CompensationTuning {
    fn default() -> Self {
        CompensationTuning {
            max_compensators: 4,
            max_compensator_load_pct: 70,
            withdraw_load_pct: 85,
        }
    }
}

/// Energy saving: when a capacity cell sleeps and wakes (loads: the forecast demand in percent of
/// a partner's downlink PRBs). A partner's own load at the wake ceiling wakes a cell too, and
/// verification judges a sleep harmful when its partners' peak passes the wake ceiling by 10
/// points.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EnergySavingTuning {
    /// A cell sleeps once the forecast stayed under this for `sleep_periods` periods. The
    /// higher, the more hours asleep, and the more of the day's users ride the partner's
    /// narrower carrier: over a simulated day (`sonraft bench energy`) 30 keeps the per-user
    /// throughput within 2 % of a day without energy saving, 50 costs 4.6 %.
    pub sleep_ceiling_pct: u8,
    /// A sleeping cell wakes when the forecast, or a partner's own load, reaches this.
    pub wake_ceiling_pct: u8,
    /// Periods ahead the forecast looks.
    pub lead_periods: u8,
    /// Periods in a row the forecast must stay low before a cell sleeps.
    pub sleep_periods: u8,
    /// Periods in a row a partner may be silent before its sleeping cell wakes.
    pub silent_periods: u8,
}

impl Default for EnergySavingTuning {
    fn default() -> Self {
        EnergySavingTuning {
            sleep_ceiling_pct: 30,
            wake_ceiling_pct: 65,
            lead_periods: 3,
            sleep_periods: 3,
            silent_periods: 2,
        }
    }
}

/// Mobility robustness: when the handover failures of a cell or relation ask for a step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MroTuning {
    /// Too-late handovers above this share of the attempts ask to hand over sooner.
    pub max_late_permille: u16,
    /// Too-early (and wrong-cell) handovers above this share ask to hand over later.
    pub max_early_permille: u16,
    /// Ping-pongs above this share ask to hand over later.
    pub max_ping_pong_permille: u16,
    /// Attempts in a period below which a cell or relation is not judged.
    pub min_attempts: u32,
    /// Failures of the deciding kind below which a ratio is noise.
    pub min_events: u32,
    /// When both sides ask, how many times the other's events one side needs to win.
    pub dominance: u8,
    /// The share of a cell's attempts, on relations leaning the same way, from which the
    /// problem is the cell's (hysteresis, time-to-trigger) rather than its relations' (CIO).
    pub cell_wide_permille: u16,
}

impl Default for MroTuning {
    fn default() -> Self {
        MroTuning {
            max_late_permille: 30,
            max_early_permille: 30,
            max_ping_pong_permille: 50,
            min_attempts: 20,
            min_events: 3,
            dominance: 2,
            cell_wide_permille: 500,
        }
    }
}

/// Mobility load balancing: loads in percent of the available downlink PRBs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MlbTuning {
    /// A cell above this load offloads.
    pub high_pct: u8,
    /// A neighbour takes load while it is (and is expected to stay) below this.
    pub low_pct: u8,
    /// A cell below this load takes its offsets back.
    pub release_pct: u8,
    /// Handover success a neighbour's relation needs to take load.
    pub min_success_permille: u16,
    /// Most neighbours one cell offloads to in a period.
    pub max_targets: u8,
    /// Periods the load is smoothed over.
    pub smoothing_periods: u8,
    /// The share of a source's load one dB of offset is expected to move, for the projection.
    pub shift_permille_per_db: u16,
}

impl Default for MlbTuning {
    fn default() -> Self {
        MlbTuning {
            high_pct: 80,
            low_pct: 60,
            release_pct: 50,
            min_success_permille: 950,
            max_targets: 3,
            smoothing_periods: 3,
            shift_permille_per_db: 30,
        }
    }
}

/// ANR: when relations are pruned or barred.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AnrTuning {
    /// A relation without handover attempts for this long (log time; and at least
    /// `min_idle_periods` periods) is pruned. Days in a live network: traffic is weekly.
    pub idle_prune_ms: u64,
    /// Consecutive idle periods a pruning needs, however short `idle_prune_ms` is.
    pub min_idle_periods: u8,
    /// Consecutive failing periods before a relation's handovers are barred.
    pub failing_periods: u8,
    /// Attempts a period needs before its success ratio says anything.
    pub failing_min_attempts: u32,
    /// A period whose handovers succeed below this share is failing.
    pub failing_success_permille: u16,
}

impl Default for AnrTuning {
    fn default() -> Self {
        AnrTuning {
            idle_prune_ms: 7 * 24 * 60 * 60 * 1000,
            min_idle_periods: 3,
            failing_periods: 3,
            failing_min_attempts: 10,
            failing_success_permille: 500,
        }
    }
}

/// PCI conflict resolution.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PciTuning {
    /// PCIs the function never chooses (kept for planned sites, test cells, borders).
    pub reserved: BTreeSet<u16>,
}

/// Why a tuning cannot be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TuningError {
    #[error("{0}")]
    OutOfRange(String),
}

impl Tuning {
    /// Checks a tuning before it is applied.
    pub fn validate(&self) -> Result<(), TuningError> {
        let bad = |what: &str| Err(TuningError::OutOfRange(what.to_string()));
        let m = &self.mobility_robustness;
        if [
            m.max_late_permille,
            m.max_early_permille,
            m.max_ping_pong_permille,
        ]
        .iter()
        .any(|p| !(1..=1000).contains(p))
        {
            return bad("mobility_robustness: the max_*_permille thresholds run 1 to 1000");
        }
        if m.min_attempts == 0 || m.min_events == 0 || m.dominance == 0 {
            return bad(
                "mobility_robustness: min_attempts, min_events and dominance are at least 1",
            );
        }
        if !(1..=1000).contains(&m.cell_wide_permille) {
            return bad("mobility_robustness: cell_wide_permille runs 1 to 1000");
        }
        let l = &self.load_balancing;
        if !(l.release_pct < l.high_pct && l.low_pct < l.high_pct && l.high_pct <= 100) {
            return bad(
                "load_balancing: release_pct and low_pct are below high_pct, which is at most 100",
            );
        }
        if l.min_success_permille > 1000
            || l.max_targets == 0
            || !(1..=24).contains(&l.smoothing_periods)
            || !(1..=200).contains(&l.shift_permille_per_db)
        {
            return bad(
                "load_balancing: min_success_permille at most 1000, max_targets at least 1, smoothing_periods 1 to 24, shift_permille_per_db 1 to 200",
            );
        }
        let a = &self.anr;
        if a.min_idle_periods == 0 || a.failing_periods == 0 || a.failing_min_attempts == 0 {
            return bad(
                "anr: min_idle_periods, failing_periods and failing_min_attempts are at least 1",
            );
        }
        if a.failing_success_permille > 1000 {
            return bad("anr: failing_success_permille is at most 1000");
        }
        if let Some(p) = self.pci.reserved.iter().find(|p| **p > 1007) {
            return bad(&format!(
                "pci: reserved PCI {p} is above 1007, NR's largest"
            ));
        }
        let o = &self.outage;
        if !(1..=24).contains(&o.hard_periods) || !(1..=24).contains(&o.sleeping_periods) {
            return bad("outage: hard_periods and sleeping_periods run 1 to 24");
        }
        if !(1..=100).contains(&o.min_reporting_pct) {
            return bad("outage: min_reporting_pct runs 1 to 100");
        }
        let c = &self.outage_compensation;
        if !(1..=16).contains(&c.max_compensators) {
            return bad("outage_compensation: max_compensators runs 1 to 16");
        }
        if !(c.max_compensator_load_pct < c.withdraw_load_pct && c.withdraw_load_pct <= 100)
            || c.max_compensator_load_pct == 0
        {
            return bad(
                "outage_compensation: max_compensator_load_pct is at least 1 and below withdraw_load_pct, which is at most 100",
            );
        }
        let e = &self.energy_saving;
        if !(e.sleep_ceiling_pct >= 1
            && e.sleep_ceiling_pct < e.wake_ceiling_pct
            && e.wake_ceiling_pct <= 100)
        {
            return bad(
                "energy_saving: sleep_ceiling_pct is at least 1 and below wake_ceiling_pct, which is at most 100",
            );
        }
        if e.lead_periods > 24
            || !(1..=24).contains(&e.sleep_periods)
            || !(1..=24).contains(&e.silent_periods)
        {
            return bad(
                "energy_saving: lead_periods runs 0 to 24, sleep_periods and silent_periods 1 to 24",
            );
        }
        Ok(())
    }
}

/// Why a SON policy cannot be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{0} is not a SON function: it has no controls")]
    NotSon(Function),
    #[error(
        "verification needs 1 to 96 periods, a verdict deadline of at least a minute and a degradation threshold of 1 to 1000 per mille"
    )]
    BadVerification,
    #[error(
        "{function}'s change window {from}-{to}: minutes of the day run 0..1440 and a window is not empty"
    )]
    BadWindow {
        function: Function,
        from: u16,
        to: u16,
    },
    #[error("{function} excludes {count} entries; at most {MAX_EXCLUDED}")]
    TooManyExcluded { function: Function, count: usize },
    #[error("pending_ttl_ms must be at least one minute")]
    ShortTtl,
}

impl SonPolicy {
    /// The controls of `function` (the defaults when it has none).
    pub fn controls(&self, function: Function) -> Controls {
        self.functions.get(&function).cloned().unwrap_or_default()
    }

    /// Checks a policy before it is applied.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.pending_ttl_ms < 60_000 {
            return Err(PolicyError::ShortTtl);
        }
        let v = &self.verification;
        if !(1..=96).contains(&v.periods)
            || v.verdict_within_ms < 60_000
            || !(1..=1000).contains(&v.degrade_permille)
            || !(1..=1000).contains(&v.throughput_drop_permille)
        {
            return Err(PolicyError::BadVerification);
        }
        for (&function, c) in &self.functions {
            if !function.is_son() {
                return Err(PolicyError::NotSon(function));
            }
            if let Some(w) = c.window
                && (w.from_minute >= MINUTES_PER_DAY
                    || w.to_minute >= MINUTES_PER_DAY
                    || w.from_minute == w.to_minute)
            {
                return Err(PolicyError::BadWindow {
                    function,
                    from: w.from_minute,
                    to: w.to_minute,
                });
            }
            if c.exclude.len() > MAX_EXCLUDED {
                return Err(PolicyError::TooManyExcluded {
                    function,
                    count: c.exclude.len(),
                });
            }
        }
        Ok(())
    }
}

/// A change set of an open-loop function, waiting for an operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Log index of the entry that recorded it; the id operators approve or reject.
    pub id: u64,
    /// Log time it was recorded.
    pub recorded_at_ms: u64,
    /// Log time after which it can no longer be approved.
    pub expires_at_ms: u64,
    pub change_set: ChangeSet,
}

/// An operator's decision on a pending proposal (command format 4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The pending proposal's id.
    pub id: u64,
    pub approve: bool,
    /// Who decided and why, for the history.
    pub note: String,
}

/// A SON change under verification: what it wrote and the values before.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Trial {
    /// The trial's id: the log index of the entry that applied the change, or from command
    /// format 10 the next free id at or above it (several SON change sets of one entry each
    /// open a trial).
    pub index: u64,
    pub function: Function,
    /// Log time the change applied.
    pub applied_at_ms: u64,
    /// Each write with the value it replaced.
    pub writes: Vec<(Write, Value)>,
    /// The cells the change reconfigured (a relation's source cell), sorted.
    pub cells: Vec<CellId>,
    /// The relations it removed, as they were.
    pub removed: Vec<crate::model::Relation>,
}

/// One KPI of the cells a change touched, before and after it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KpiDelta {
    /// The counter-derived KPI, e.g. `ho_too_late_permille`.
    pub kpi: String,
    pub before: f64,
    pub after: f64,
}

/// A site's judgement of a trial (command format 4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The trial's index.
    pub trial: u64,
    /// The KPIs it was judged on.
    pub kpis: Vec<KpiDelta>,
    /// `Some(why)`, naming the KPI, when the change hurt and must be undone.
    pub degraded: Option<String>,
}

/// How a trial ended, for the history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TrialEnd {
    /// The KPIs held: the change stays.
    Kept,
    /// The change hurt: `restored` parameters got their old value back; the others had been
    /// changed since and were left alone.
    Undone { reason: String, restored: usize },
    /// No verdict came in time.
    Unverified,
}

/// A closed trial, as the verification journal keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrialRecord {
    pub trial: Trial,
    pub kpis: Vec<KpiDelta>,
    pub end: TrialEnd,
    /// Log time it closed.
    pub closed_at_ms: u64,
}

/// Most trials open at once; a SON change beyond them is refused until some close.
pub const MAX_TRIALS: usize = 100_000;
/// Closed trials the journal keeps; older ones are dropped.
pub const JOURNAL_KEEP: usize = 10_000;

/// A look at the trials, for [`SonState::closed_since`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrialLook {
    open: BTreeSet<u64>,
    newest: Option<u64>,
}

/// One item of the SON state that a store keeps under a key of its own: pending proposals,
/// open trials and closed ones each count in thousands, so none of them is rewritten when
/// another changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SonItem {
    Pending(u64),
    Trial(u64),
    /// A closed trial in the journal, by its index.
    Closed(u64),
}

/// The small rest of the SON state, stored as one value: the policy, the next pending id and
/// the holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SonMeta {
    pub policy: SonPolicy,
    pub next_id: u64,
    pub holds: BTreeMap<(CellId, Function), u64>,
}

/// What the SON controls keep in the image: the policy, the proposals waiting for an operator,
/// the changes under verification, the holds after undone changes and the journal of closed
/// trials. Stored beside the image's own encoding (it came with format 4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SonState {
    pub policy: SonPolicy,
    pub pending: BTreeMap<u64, Pending>,
    /// The smallest id the next pending proposal may take.
    pub next_id: u64,
    /// Open trials by index.
    pub trials: crate::trials::Trials,
    /// (cell, function) → log time until which the function leaves the cell alone.
    pub holds: BTreeMap<(CellId, Function), u64>,
    /// Closed trials by index, at most [`JOURNAL_KEEP`] (the oldest changes are dropped).
    pub journal: BTreeMap<u64, TrialRecord>,
    /// The functions' thresholds (command format 5). Stored and carried in snapshots apart
    /// (`m/tuning`, snapshot format 4), so format-4 encodings of this state stay as they were.
    #[serde(skip)]
    pub tuning: Tuning,
}

impl SonState {
    /// The part stored as one value.
    pub fn meta(&self) -> SonMeta {
        SonMeta {
            policy: self.policy.clone(),
            next_id: self.next_id,
            holds: self.holds.clone(),
        }
    }

    /// Sets the part stored as one value.
    pub fn set_meta(&mut self, meta: SonMeta) {
        self.policy = meta.policy;
        self.next_id = meta.next_id;
        self.holds = meta.holds;
    }

    /// The open trial of `function` on `cell`, if any.
    pub fn open_trial(&self, function: Function, cell: &str) -> Option<&Trial> {
        self.trials.of(function, cell)
    }

    /// Log time until which `function` leaves `cell` alone, if it is held at `now_ms`.
    pub fn held_until(&self, function: Function, cell: &str, now_ms: u64) -> Option<u64> {
        self.holds
            .get(&(CellId::from(cell), function))
            .copied()
            .filter(|until| *until > now_ms)
    }

    /// Drops the holds that ran out by `now_ms`.
    pub fn prune_holds(&mut self, now_ms: u64) {
        self.holds.retain(|_, until| *until > now_ms);
    }

    /// Moves an open trial's record to the journal, dropping the oldest beyond
    /// [`JOURNAL_KEEP`]; returns the items it changed.
    pub fn close(&mut self, record: TrialRecord) -> Vec<SonItem> {
        let index = record.trial.index;
        let mut touched = vec![SonItem::Trial(index), SonItem::Closed(index)];
        self.trials.remove(&index);
        self.journal.insert(index, record);
        while self.journal.len() > JOURNAL_KEEP {
            if let Some((oldest, _)) = self.journal.pop_first() {
                touched.push(SonItem::Closed(oldest));
            }
        }
        touched
    }

    /// What a reader of closed trials notes at a look, to tell later which trials closed
    /// since: the ids open then and the newest id known.
    pub fn trial_look(&self) -> TrialLook {
        let newest = [
            self.trials.keys().next_back(),
            self.journal.keys().next_back(),
        ]
        .into_iter()
        .flatten()
        .max()
        .copied();
        TrialLook {
            open: self.trials.keys().copied().collect(),
            newest,
        }
    }

    /// The trials in the journal that closed after `look` was taken, oldest id first: those
    /// open at the look, and those opened after it (trial ids only grow, in both id schemes)
    /// and closed before now.
    pub fn closed_since<'a>(&'a self, look: &TrialLook) -> Vec<&'a TrialRecord> {
        let newer = match look.newest {
            Some(n) => self.journal.range(n.saturating_add(1)..),
            None => self.journal.range(..),
        };
        let mut closed: Vec<&TrialRecord> = look
            .open
            .iter()
            .filter_map(|i| self.journal.get(i))
            .chain(newer.map(|(_, r)| r))
            .collect();
        closed.sort_by_key(|r| r.trial.index);
        closed.dedup_by_key(|r| r.trial.index);
        closed
    }

    /// Closes as unverified the trials whose verdict is overdue at `now_ms`; returns the items
    /// it changed. (Trials open in log order, and log time never runs backwards: only the
    /// oldest need a look.)
    pub fn expire_trials(&mut self, now_ms: u64) -> Vec<SonItem> {
        let within = self.policy.verification.verdict_within_ms;
        let overdue: Vec<Trial> = self
            .trials
            .values()
            .take_while(|t| now_ms.saturating_sub(t.applied_at_ms) >= within)
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for trial in overdue {
            touched.extend(self.close(TrialRecord {
                trial,
                kpis: Vec::new(),
                end: TrialEnd::Unverified,
                closed_at_ms: now_ms,
            }));
        }
        touched
    }

    /// Drops the proposals that expired by log time `now_ms`; returns them.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Pending> {
        let expired: Vec<u64> = self
            .pending
            .values()
            .filter(|p| p.expires_at_ms <= now_ms)
            .map(|p| p.id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_window_holds_its_start_and_not_its_end() {
        let w = Window {
            from_minute: 60,
            to_minute: 300,
        };
        assert!(!w.contains(HOUR - 1));
        assert!(w.contains(HOUR));
        assert!(w.contains(5 * HOUR - 1));
        assert!(!w.contains(5 * HOUR));
        // The next day.
        assert!(w.contains(25 * HOUR));
        assert_eq!(w.to_string(), "01:00-05:00 UTC");
    }

    #[test]
    fn a_window_that_ends_before_it_starts_spans_midnight() {
        let w = Window {
            from_minute: 22 * 60,
            to_minute: 2 * 60,
        };
        assert!(w.contains(23 * HOUR));
        assert!(w.contains(24 * HOUR + HOUR));
        assert!(!w.contains(2 * HOUR));
        assert!(!w.contains(12 * HOUR));
    }

    #[test]
    fn a_policy_with_an_empty_or_out_of_range_window_is_refused() {
        for (from, to) in [(60, 60), (0, 1440), (1440, 10)] {
            let mut p = SonPolicy::default();
            p.functions.insert(
                Function::PciConflict,
                Controls {
                    window: Some(Window {
                        from_minute: from,
                        to_minute: to,
                    }),
                    ..Controls::default()
                },
            );
            assert!(
                matches!(p.validate(), Err(PolicyError::BadWindow { .. })),
                "{from}-{to}"
            );
        }
    }

    #[test]
    fn the_operator_has_no_controls() {
        let mut p = SonPolicy::default();
        p.functions.insert(Function::Operator, Controls::default());
        assert_eq!(p.validate(), Err(PolicyError::NotSon(Function::Operator)));
    }

    fn record(index: u64) -> TrialRecord {
        TrialRecord {
            trial: Trial {
                index,
                function: Function::PciConflict,
                applied_at_ms: 0,
                writes: Vec::new(),
                cells: vec![format!("c{index}").into()],
                removed: Vec::new(),
            },
            kpis: Vec::new(),
            end: TrialEnd::Kept,
            closed_at_ms: 0,
        }
    }

    fn open(son: &mut SonState, index: u64) {
        son.trials.insert(index, record(index).trial);
    }

    fn ids(closed: &[&TrialRecord]) -> Vec<u64> {
        closed.iter().map(|r| r.trial.index).collect()
    }

    #[test]
    fn closed_since_a_look_names_the_trials_open_then_and_those_opened_and_closed_after() {
        let mut son = SonState::default();
        son.close(record(1));
        open(&mut son, 4);
        open(&mut son, 6);
        let look = son.trial_look();
        assert!(son.closed_since(&look).is_empty());

        // 6 closes; 9 opens and closes before the next look (one batch of entries); 11 opens
        // and stays open; 2 (an old id, never open at the look) is not new.
        son.close(record(6));
        open(&mut son, 9);
        son.close(record(9));
        open(&mut son, 11);
        son.journal.insert(2, record(2));
        assert_eq!(ids(&son.closed_since(&look)), vec![6, 9]);

        let look = son.trial_look();
        assert!(son.closed_since(&look).is_empty());
        son.close(record(4));
        son.close(record(11));
        assert_eq!(ids(&son.closed_since(&look)), vec![4, 11]);
    }

    #[test]
    fn closed_since_a_look_at_no_trials_names_every_closed_one() {
        let mut son = SonState::default();
        let look = son.trial_look();
        open(&mut son, 3);
        son.close(record(3));
        assert_eq!(ids(&son.closed_since(&look)), vec![3]);
    }
}
