//! What a run found, in a form the lead can paste into a closing note: faults by kind,
//! operations by outcome, anomalies by kind with the detail needed to reproduce each, and
//! the seed, duration and command. Written as text to stdout and as `summary.json` in the
//! run directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::api::Digest;

/// Something the cluster did that it must not do (or the campaign could not verify).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// A cell's history is not linearizable; `excerpt` holds the operations around the first
    /// bad one (the whole witness is in `witness_file`).
    NotLinearizable {
        cell: String,
        first_bad: u64,
        at_us: u64,
        excerpt: Vec<String>,
        faults_around: Vec<String>,
        witness_file: String,
    },
    /// An acknowledged change set is not in the final history.
    LostAcknowledgedWrite {
        cell: String,
        token: String,
        index: u64,
        version: u64,
        acknowledged_at_us: u64,
        slot: usize,
        faults_around: Vec<String>,
    },
    /// The final history records an acknowledged change set with another version.
    AcknowledgementDisagrees {
        cell: String,
        token: String,
        acknowledged: u64,
        in_history: Option<u64>,
    },
    /// Two applied change sets were acknowledged with the same new version of one cell.
    VersionAcknowledgedTwice {
        cell: String,
        version: u64,
        tokens: Vec<String>,
    },
    /// One change set (token) applied more than once.
    AppliedTwice { token: String, indexes: Vec<u64> },
    /// The applied change sets of a cell do not form the chain initial+1 .. final version.
    BrokenVersionChain { cell: String, detail: String },
    /// Nodes at the same applied index hold different images.
    DivergedImages { digests: BTreeMap<u64, Digest> },
    /// The nodes did not reach the same applied index after healing.
    NotConverged { detail: String },
    /// A node process exited on its own.
    NodeExited {
        slot: usize,
        node: u64,
        after_fault: u64,
        status: String,
        log_tail: String,
    },
    /// A node could not be started again on its data directory.
    NodeCannotStart {
        slot: usize,
        node: u64,
        after_fault: u64,
        detail: String,
    },
    /// After healing, a change set proposed through this node got no answer (applied or
    /// refused) within the bound: its proposals are stuck.
    NodeStalled {
        slot: usize,
        node: u64,
        after_fault: u64,
        last_error: String,
        log_tail: String,
    },
    /// After healing, the cluster did not become whole (ready, one leader, all voters).
    NotRecovered {
        after_fault: u64,
        detail: String,
        log_tails: String,
    },
    /// A process of the run (a node, or a filesystem) panicked: `log` line `line` says
    /// where; `before` is the log line before it (with the node's time).
    Panicked {
        log: String,
        line: usize,
        message: String,
        before: String,
    },
    /// The search for a linearization ran out of budget: not a finding, but not a proof.
    Undecided { cell: String, steps: u64 },
    /// The campaign itself failed to do something it needed (the run may prove less).
    CampaignError { detail: String },
}

impl Anomaly {
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::NotLinearizable { .. } => "not_linearizable",
            Anomaly::LostAcknowledgedWrite { .. } => "lost_acknowledged_write",
            Anomaly::AcknowledgementDisagrees { .. } => "acknowledgement_disagrees",
            Anomaly::VersionAcknowledgedTwice { .. } => "version_acknowledged_twice",
            Anomaly::AppliedTwice { .. } => "applied_twice",
            Anomaly::BrokenVersionChain { .. } => "broken_version_chain",
            Anomaly::DivergedImages { .. } => "diverged_images",
            Anomaly::NotConverged { .. } => "not_converged",
            Anomaly::NodeExited { .. } => "node_exited",
            Anomaly::NodeCannotStart { .. } => "node_cannot_start",
            Anomaly::NodeStalled { .. } => "node_stalled",
            Anomaly::NotRecovered { .. } => "not_recovered",
            Anomaly::Panicked { .. } => "panicked",
            Anomaly::Undecided { .. } => "undecided",
            Anomaly::CampaignError { .. } => "campaign_error",
        }
    }
}

/// Every panic in the logs under `dir` (`thread '…' panicked at …` and the line after it).
pub fn panics(dir: &std::path::Path) -> Vec<Anomaly> {
    let mut found = Vec::new();
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (n, l) in lines.iter().enumerate() {
            if l.contains("panicked at") {
                found.push(Anomaly::Panicked {
                    log: log.display().to_string(),
                    line: n + 1,
                    message: format!("{l} {}", lines.get(n + 1).unwrap_or(&"")),
                    before: n.checked_sub(1).map_or("", |p| lines[p]).to_string(),
                });
            }
        }
    }
    found
}

/// How many faults of each kind (and variant) were injected.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultCounts {
    pub by_kind: BTreeMap<String, u64>,
    pub by_variant: BTreeMap<String, u64>,
    pub power_loss_of_leader: u64,
    pub power_loss_right_after_election: u64,
    pub power_loss_two_in_a_row: u64,
    pub power_loss_torn: u64,
    /// Faults that could not be carried out as planned (see faults.jsonl).
    pub not_injected: u64,
}

impl FaultCounts {
    pub fn count(&mut self, kind: &str, variant: &str) {
        *self.by_kind.entry(kind.to_string()).or_default() += 1;
        *self
            .by_variant
            .entry(format!("{kind}/{variant}"))
            .or_default() += 1;
    }
}

/// One of the long run's targets (issue 11): at least `want` of something.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub got: u64,
    pub want: u64,
}

impl Target {
    pub fn met(&self) -> bool {
        self.got >= self.want
    }
}

/// The long run's targets: `per_kind` faults of every kind, `leader_power` power losses of
/// the leader, and no anomaly.
pub fn targets(s: &Summary, kinds: &[&str], per_kind: u64, leader_power: u64) -> Vec<Target> {
    let mut t: Vec<Target> = kinds
        .iter()
        .map(|k| Target {
            what: format!("{k} faults"),
            got: s.faults.by_kind.get(*k).copied().unwrap_or(0),
            want: per_kind,
        })
        .collect();
    t.push(Target {
        what: "power losses of the leader".into(),
        got: s.faults.power_loss_of_leader,
        want: leader_power,
    });
    t
}

/// The whole result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub command: String,
    pub seed: u64,
    pub seconds: f64,
    pub run_dir: PathBuf,
    pub fs: String,
    pub faults: FaultCounts,
    pub operations: BTreeMap<String, u64>,
    pub cells_checked: usize,
    pub anomalies: Vec<Anomaly>,
    pub notes: Vec<String>,
    /// The long run's targets, when asked for (`--targets`).
    pub targets: Vec<Target>,
}

impl Summary {
    pub fn anomalies_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for a in &self.anomalies {
            *m.entry(a.kind()).or_default() += 1;
        }
        m
    }

    /// The text summary.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "sonraft fault campaign");
        let _ = writeln!(t, "  command: {}", self.command);
        let _ = writeln!(
            t,
            "  seed {}  duration {:.0} s  filesystem {}  run dir {}",
            self.seed,
            self.seconds,
            self.fs,
            self.run_dir.display()
        );
        let _ = writeln!(t, "faults injected:");
        for (k, n) in &self.faults.by_kind {
            let _ = writeln!(t, "  {k:<12} {n}");
        }
        let _ = writeln!(
            t,
            "  power losses of the leader {}, right after an election {}, two in a row {}, torn {}",
            self.faults.power_loss_of_leader,
            self.faults.power_loss_right_after_election,
            self.faults.power_loss_two_in_a_row,
            self.faults.power_loss_torn
        );
        let _ = writeln!(
            t,
            "  not carried out as planned: {}",
            self.faults.not_injected
        );
        let _ = writeln!(t, "  by variant:");
        for (k, n) in &self.faults.by_variant {
            let _ = writeln!(t, "    {k:<34} {n}");
        }
        let _ = writeln!(t, "operations:");
        for (k, n) in &self.operations {
            let _ = writeln!(t, "  {k:<18} {n}");
        }
        let _ = writeln!(t, "cells checked: {}", self.cells_checked);
        let by_kind = self.anomalies_by_kind();
        let _ = writeln!(t, "anomalies: {}", self.anomalies.len());
        for (k, n) in &by_kind {
            let _ = writeln!(t, "  {k:<28} {n}");
        }
        for a in &self.anomalies {
            let detail = serde_json::to_string_pretty(a).unwrap_or_default();
            let _ = writeln!(t, "--- {}\n{}", a.kind(), truncate(&detail, 6000));
        }
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        if !self.targets.is_empty() {
            let _ = writeln!(t, "targets:");
            for target in &self.targets {
                let _ = writeln!(
                    t,
                    "  {:<30} {:>6} of {:>4}  {}",
                    target.what,
                    target.got,
                    target.want,
                    if target.met() { "met" } else { "NOT MET" }
                );
            }
            let _ = writeln!(
                t,
                "  {:<30} {:>6} of {:>4}  {}",
                "anomalies",
                self.anomalies.len(),
                0,
                if self.anomalies.is_empty() {
                    "met"
                } else {
                    "NOT MET"
                }
            );
        }
        t
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n... ({} more bytes, see summary.json)",
        &s[..end],
        s.len() - end
    )
}
