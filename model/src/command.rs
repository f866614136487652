//! The Raft log entry: a versioned envelope around one command, and what applying it answers.
//!
//! The envelope's shape never changes: a command format number, the log time, and the command
//! as bytes. A node can therefore always store and replicate an entry, and when it meets a
//! command newer than it understands it stops with a clear message at apply time instead of
//! misreading it. New command kinds get a new format number and are only proposed once every
//! voter advertises that format (see [`crate::model::image::NetworkImage::effective_format`]).

use serde::{Deserialize, Serialize};

use crate::changeset::{ChangeSet, Outcome};
use crate::codec;
use crate::model::control::ControlMoves;
use crate::model::import::{ImportOutcome, ImportPart};
use crate::model::{Cell, KpiSummary, NodeRelease, Policy, Relation, Site, SiteId};
use crate::son::{Decision, SonPolicy, TrialEnd, Tuning, TuningV1, Verdict};

/// The newest command format this build understands and may propose.
///
/// | format | since | adds |
/// | --- | --- | --- |
/// | 1 | 0.1.0 | `ChangeSet`, `Import`, `Kpis`, `Release` |
/// | 2 | 0.2.0 | `ChangeSets` (several change sets in one entry) |
/// | 3 | 0.2.0 | `ImportPart` (an import staged in parts, applied in one step, in the history) |
/// | 4 | 0.3.0 | `SonPolicy`, `Decide`, `Verdict`; change sets judged with the SON controls, trials and parameter groups |
/// | 5 | 0.3.0 | `SonTuning`: the SON functions' thresholds |
/// | 6 | 0.3.0 | the `outage_compensation` function: change sets, and SON policies, naming it |
/// | 7 | 0.3.0 | the `coverage_capacity` and `anr_add` functions; `exists = true` creates a relation |
/// | 8 | 0.3.0 | `Control`: a cell site's antennas move to another node, with a new fencing epoch |
/// | 9 | 0.3.0 | `SonTuningV2`: the tuning with the outage, compensation and energy-saving sections |
/// | 10 | 0.3.0 | `Verdicts` (several verdicts in one entry); each SON change set of one entry opens its own trial, named by the next free id (see [`crate::rules::TRIAL_IDS_FORMAT`]) |
pub const COMMAND_FORMAT: u16 = 10;

/// The application data of a Raft log entry (openraft's `D`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Format of `body`; see [`COMMAND_FORMAT`].
    pub format: u16,
    /// Log time: the leader's clock when it accepted the command, in milliseconds since the
    /// Unix epoch. Rules use this (made monotonic by the state machine), never the applying
    /// node's clock.
    pub log_time_ms: u64,
    /// The bincode-encoded [`Command`]. (Encoded as bytes, not as a sequence of `u8`: the same
    /// bytes on disk and on the wire, copied in one go.)
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl std::fmt::Display for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command(format {}, {} bytes)",
            self.format,
            self.body.len()
        )
    }
}

/// A command this build cannot apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error(
        "the log holds a command of format {format}, but this sonraft understands formats up to {COMMAND_FORMAT}; upgrade this node to the release the rest of the cluster runs"
    )]
    TooNew { format: u16 },
    #[error("a command of format {format} could not be decoded: {reason}")]
    Undecodable { format: u16, reason: String },
}

impl Envelope {
    /// Wraps a command stamped with the log time, in the oldest format that carries it.
    pub fn new(command: &Command, log_time_ms: u64) -> Result<Self, codec::CodecError> {
        Self::in_format(command, log_time_ms, 1)
    }

    /// Wraps a command in format `effective` (the cluster's effective format: the rules of that
    /// format judge it), or the command's own format when that is newer.
    pub fn in_format(
        command: &Command,
        log_time_ms: u64,
        effective: u16,
    ) -> Result<Self, codec::CodecError> {
        Ok(Envelope {
            format: command.format().max(effective.min(COMMAND_FORMAT)),
            log_time_ms,
            body: codec::encode(command)?,
        })
    }

    /// Decodes the command, refusing formats newer than this build.
    pub fn command(&self) -> Result<Command, CommandError> {
        if self.format > COMMAND_FORMAT {
            return Err(CommandError::TooNew {
                format: self.format,
            });
        }
        codec::decode(&self.body).map_err(|e| CommandError::Undecodable {
            format: self.format,
            reason: e.to_string(),
        })
    }
}

/// Bulk load of sites, cells and relations (upsert). Applied all-or-nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ImageImport {
    #[serde(default)]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub cells: Vec<Cell>,
    #[serde(default)]
    pub relations: Vec<Relation>,
    /// Replaces the coordination policy when present.
    #[serde(default)]
    pub policy: Option<Policy>,
}

impl ImageImport {
    /// Drops the change stamps of the imported cells and relations. Applying an import keeps
    /// the image's own stamps (coordination is about this cluster's changes), so they carry no
    /// meaning; and a stamp naming a function of a newer command format (a backup of an
    /// upgraded cluster, say) would make the entry undecodable by a voter of the previous
    /// release, though an import is a format 1 or 3 command. The API strips them on receipt.
    pub fn strip_stamps(&mut self) {
        for c in &mut self.cells {
            c.last_change.clear();
        }
        for r in &mut self.relations {
            r.last_change.clear();
        }
    }
}

/// One site's KPI summaries for one counter period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KpiBatch {
    pub site: SiteId,
    pub summaries: Vec<KpiSummary>,
}

/// Most change sets one `ChangeSets` entry carries (the leader's batcher never puts more in
/// one). Entity versions rely on it: one entry raises a version by at most this much, so a
/// version issued up to log index `i` is at most `VERSION_SPAN * i` (see
/// [`crate::model::import`]).
pub const MAX_CHANGE_SETS_PER_ENTRY: usize = 1024;

/// Versions one log index spans: an entity created at index `i` by an import of format 3
/// starts at `VERSION_SPAN * i`, above every version any entity had before.
pub const VERSION_SPAN: u64 = MAX_CHANGE_SETS_PER_ENTRY as u64 + 1;

/// What the cluster agrees on, one per log entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Command {
    ChangeSet(ChangeSet),
    Import(ImageImport),
    Kpis(KpiBatch),
    /// A node advertises its release and the newest command format it applies.
    Release(NodeRelease),
    /// Several change sets in one entry, applied in order, each judged on its own (format 2).
    ChangeSets(Vec<ChangeSet>),
    /// One part of an import that becomes visible with its last part (format 3).
    ImportPart(ImportPart),
    /// Replaces the operator's controls of the SON functions (format 4).
    SonPolicy(SonPolicy),
    /// An operator approves or rejects a pending open-loop proposal (format 4).
    Decide(Decision),
    /// A site's verdict on a SON change under verification; a degraded one undoes it (format 4).
    Verdict(Verdict),
    /// Replaces the SON functions' thresholds (format 5); the sections format 9 added take
    /// their defaults.
    SonTuning(TuningV1),
    /// Moves control of cell sites' antennas between nodes (format 8).
    Control(ControlMoves),
    /// Replaces the SON functions' thresholds, all sections (format 9). Appended last: bincode
    /// tags variants by position.
    SonTuningV2(Tuning),
    /// Several verdicts in one entry, applied in order, each on its own (format 10); at most
    /// [`MAX_CHANGE_SETS_PER_ENTRY`] (an undo writes like a change set), the rest refused.
    Verdicts(Vec<Verdict>),
}

impl Command {
    /// The command that sets `tuning` in a cluster whose effective command format is
    /// `effective`: the format-5 one while the sections format 9 added are at their defaults
    /// (every voter since format 5 applies it), the format-9 one otherwise; an error when the
    /// cluster cannot apply that yet.
    pub fn set_tuning(tuning: Tuning, effective: u16) -> Result<Command, TuningTooNew> {
        if !tuning.needs_format_9() {
            Ok(Command::SonTuning(tuning.v1()))
        } else if effective >= 9 {
            Ok(Command::SonTuningV2(tuning))
        } else {
            Err(TuningTooNew { effective })
        }
    }

    /// The command format a node needs to apply this command.
    pub fn format(&self) -> u16 {
        match self {
            Command::ChangeSet(cs) => proposed_format(cs),
            Command::Import(_) | Command::Kpis(_) | Command::Release(_) => 1,
            Command::ChangeSets(list) => list.iter().map(proposed_format).fold(2, u16::max),
            Command::ImportPart(_) => ImportPart::FORMAT,
            Command::SonPolicy(p) => p.functions.keys().map(|f| f.format()).fold(4, u16::max),
            Command::Decide(_) | Command::Verdict(_) => 4,
            Command::SonTuning(_) => 5,
            Command::Control(_) => 8,
            Command::SonTuningV2(_) => 9,
            Command::Verdicts(_) => 10,
        }
    }
}

/// The format a proposed change set needs: its function's, and 6 for a proposed fallback (a
/// site reverting its outage compensation; before format 6 only the state machine wrote them).
pub fn proposed_format(cs: &ChangeSet) -> u16 {
    match cs.origin.function {
        crate::changeset::Function::Fallback => 6,
        f => f.format(),
    }
}

/// A tuning that sets the outage, compensation or energy-saving sections, proposed before
/// every voter applies command format 9.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the outage, outage_compensation and energy_saving sections need command format 9, but the cluster's effective format is {effective}: upgrade every voter first, or leave those sections at their defaults"
)]
pub struct TuningTooNew {
    pub effective: u16,
}

/// What applying one log entry answers (openraft's `R`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub enum Response {
    /// Blank and membership entries answer nothing.
    #[default]
    None,
    ChangeSet(Outcome),
    Imported(Result<ImportCounts, String>),
    Recorded,
    ChangeSets(Vec<Outcome>),
    Import(ImportOutcome),
    /// A SON policy was set (`Ok`) or refused with the reason.
    SonPolicy(Result<(), String>),
    /// How a trial ended on a verdict, or why the verdict was refused.
    Trial(Result<TrialEnd, String>),
    /// The SON tuning was set (`Ok`) or refused with the reason.
    SonTuning(Result<(), String>),
    /// Per move of a `Control` command: its new epoch, or why it was refused.
    Control(Vec<Result<u64, String>>),
    /// Per verdict of a `Verdicts` command, as [`Response::Trial`].
    Trials(Vec<Result<TrialEnd, String>>),
}

/// How many entities an import wrote.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ImportCounts {
    pub sites: u64,
    pub cells: u64,
    pub relations: u64,
}
