//! Change sets: the optimistic transaction every adjustment of the image travels in.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{EntityRef, Param, Value};

/// Who proposes changes: the operator or one of the SON functions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    Operator,
    PciConflict,
    MobilityRobustness,
    LoadBalancing,
    EnergySaving,
    AnrPruning,
    /// The undoing of a SON change: written by the state machine when a verdict found that the
    /// change hurt (command format 4), and proposed by a site to put back what its outage
    /// compensation changed once the outage is over (format 6).
    Fallback,
    /// Cell outage compensation (command format 6): neighbours of a cell in outage uptilt and
    /// raise power, and go back when it returns. Last, so that the encoding of every other
    /// function stays what it was.
    OutageCompensation,
    /// Coverage and capacity optimisation (command format 7): tilt and power of overshooting
    /// cells and of cells around a coverage hole, inside each cell's tilt box.
    CoverageCapacity,
    /// ANR that adds relations (command format 7): neighbours the users measure but the cell
    /// has no relation to. It only creates relations; removing them is [`Function::AnrPruning`]'s.
    AnrAdd,
}

impl Function {
    /// The functions that propose change sets (all but [`Function::Fallback`]).
    pub const PROPOSERS: [Function; 9] = [
        Function::Operator,
        Function::PciConflict,
        Function::MobilityRobustness,
        Function::LoadBalancing,
        Function::EnergySaving,
        Function::AnrPruning,
        Function::OutageCompensation,
        Function::CoverageCapacity,
        Function::AnrAdd,
    ];

    pub const ALL: [Function; 10] = [
        Function::Operator,
        Function::PciConflict,
        Function::MobilityRobustness,
        Function::LoadBalancing,
        Function::EnergySaving,
        Function::AnrPruning,
        Function::Fallback,
        Function::OutageCompensation,
        Function::CoverageCapacity,
        Function::AnrAdd,
    ];

    /// The command format an entry naming this function needs: nodes of older formats cannot
    /// decode it.
    pub fn format(self) -> u16 {
        match self {
            Function::CoverageCapacity | Function::AnrAdd => 7,
            Function::OutageCompensation => 6,
            Function::Fallback => 4,
            _ => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Operator => "operator",
            Function::PciConflict => "pci_conflict",
            Function::MobilityRobustness => "mobility_robustness",
            Function::LoadBalancing => "load_balancing",
            Function::EnergySaving => "energy_saving",
            Function::AnrPruning => "anr_pruning",
            Function::Fallback => "fallback",
            Function::OutageCompensation => "outage_compensation",
            Function::CoverageCapacity => "coverage_capacity",
            Function::AnrAdd => "anr_add",
        }
    }

    /// A SON function: one whose changes are experiments that are verified (not the operator,
    /// not a fallback).
    pub fn is_son(self) -> bool {
        !matches!(self, Function::Operator | Function::Fallback)
    }

    /// A function that answers a fault rather than optimising: it does not wait for other
    /// functions' cool-downs (nor their parameter groups'), and its changes open no trial —
    /// they are undone when the fault ends, not by verification.
    pub fn is_urgent(self) -> bool {
        self == Function::OutageCompensation
    }

    /// Higher wins. A parameter last written by a higher-priority function is held against
    /// lower-priority ones for `Policy::priority_hold_ms`. Robustness (no dropped calls)
    /// outranks load balancing, as in TS 32.522's MRO/MLB coordination.
    pub fn priority(self) -> u8 {
        match self {
            Function::Operator => 100,
            Function::Fallback => 90,
            // Coverage for users who lost their cell outranks every optimisation.
            Function::OutageCompensation => 60,
            Function::PciConflict => 50,
            Function::MobilityRobustness => 40,
            // Where a cell's coverage ends decides what load balancing can move.
            Function::CoverageCapacity => 35,
            Function::LoadBalancing => 30,
            Function::EnergySaving => 20,
            Function::AnrPruning | Function::AnrAdd => 10,
        }
    }

    /// The parameters a function may write. The operator may write all of them; a fallback
    /// what any SON function may.
    pub fn may_write(self, param: Param) -> bool {
        match self {
            Function::Operator => true,
            Function::Fallback => Function::ALL
                .into_iter()
                .filter(|f| f.is_son())
                .any(|f| f.may_write(param)),
            Function::PciConflict => param == Param::Pci,
            Function::MobilityRobustness => matches!(
                param,
                Param::Hysteresis | Param::TimeToTriggerMs | Param::A3Offset | Param::CioDb
            ),
            Function::LoadBalancing => param == Param::CioDb,
            Function::EnergySaving => {
                matches!(param, Param::EnergySaving | Param::MaxTxPowerDbm)
            }
            Function::AnrPruning => matches!(param, Param::Exists | Param::HoAllowed),
            Function::OutageCompensation | Function::CoverageCapacity => {
                matches!(param, Param::ElectricalTilt | Param::MaxTxPowerDbm)
            }
            Function::AnrAdd => param == Param::Exists,
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the functions that propose change sets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown function {0:?}; expected one of operator, pci_conflict, mobility_robustness, load_balancing, energy_saving, anr_pruning, outage_compensation, coverage_capacity, anr_add"
)]
pub struct UnknownFunction(pub String);

impl FromStr for Function {
    type Err = UnknownFunction;

    /// Parses the name of a function that proposes change sets: `fallback` is not one (only
    /// the state machine writes it, when it applies a verdict).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Function::PROPOSERS
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFunction(s.chars().take(64).collect()))
    }
}

/// Where a change set comes from: the proposing node (0 when unknown) and function.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub node: u64,
    pub function: Function,
}

/// "I read this entity at this version."
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReadVersion {
    pub entity: EntityRef,
    pub version: u64,
}

/// "Set this parameter of this entity to this value."
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub entity: EntityRef,
    pub param: Param,
    pub value: Value,
}

/// A proposal: applied all-or-nothing, and only if every read version is still current.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChangeSet {
    pub origin: Origin,
    pub reason: String,
    pub read_set: Vec<ReadVersion>,
    pub writes: Vec<Write>,
    /// Proposer's wall clock, for the history only; rules use the log time.
    pub proposed_at_ms: u64,
}

/// The result of applying (or dry-running) a change set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every write landed; `versions` are the new versions of the written entities.
    Applied {
        index: u64,
        versions: BTreeMap<String, u64>,
    },
    /// A read version was stale; `current` holds the current version of every entity in the
    /// read set (`None`: the entity no longer exists). Re-read and recompute.
    Conflict {
        current: BTreeMap<String, Option<u64>>,
    },
    /// Coordination refused it (cool-down, priority, removal not allowed, function domain).
    Rejected { reason: String },
    /// An illegal value, an unknown entity or parameter, or a step over the limit.
    Invalid { reason: String },
    /// The function runs open loop: the change set passed every rule and now waits, as
    /// pending proposal `id`, for an operator to approve or reject it (command format 4).
    Pending { id: u64 },
}

impl Outcome {
    /// `applied`, `conflict`, `rejected`, `invalid` or `pending`: the label used in the API
    /// and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Conflict { .. } => "conflict",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Pending { .. } => "pending",
        }
    }
}
