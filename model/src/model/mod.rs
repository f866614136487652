//! The network image: sites, cells, neighbour relations and the replicated KPI summaries.
//!
//! Every type here is plain data. The rules that decide whether a change is legal live in
//! [`crate::rules`]; how a command changes the image lives in [`image`].

pub mod control;
pub mod cow_map;
mod entity;
pub mod image;
pub mod import;
pub mod param;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use entity::{EntityError, EntityRef, valid_id};
pub use param::{Param, Q_OFFSET_RANGE_DB, TIME_TO_TRIGGER_MS, Value};

use crate::changeset::Function;

/// A site id as the operator names it (e.g. `S001`). Never contains `/`.
pub type SiteId = String;
mod cell_id;
pub use cell_id::{CellId, SharedIds};
pub use cow_map::{Builder as CowMapBuilder, CowMap, sort_keeping_last};

/// A physical site: one location holding a few sectors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub region: String,
}

/// Radio access technology of a cell. The legal PCI range depends on it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum Rat {
    Lte,
    Nr,
}

impl Rat {
    /// Largest legal physical cell id: 503 for LTE (TS 36.211), 1007 for NR (TS 38.211).
    pub fn max_pci(self) -> u16 {
        match self {
            Rat::Lte => 503,
            Rat::Nr => 1007,
        }
    }
}

/// Administrative state of a cell (TS 28.625 style).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    #[default]
    Unlocked,
    Locked,
    ShuttingDown,
}

/// Energy-saving state of a cell: `dormant` cells are switched off by the energy-saving function.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EnergySaving {
    #[default]
    Normal,
    Dormant,
}

/// Who last changed one parameter, and when (log time, milliseconds since the Unix epoch).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub by: Function,
    pub at_ms: u64,
    /// Log index of the change set that made the change.
    pub index: u64,
}

/// The operator's box for the electrical tilt of one cell, in 0.1 degree units.
/// SON functions stay inside it; the operator may go anywhere in the legal range.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiltBox {
    pub min: i16,
    pub max: i16,
}

impl Default for TiltBox {
    fn default() -> Self {
        TiltBox { min: 0, max: 150 }
    }
}

/// One sector-carrier with its configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Cell {
    pub id: CellId,
    pub site: SiteId,
    pub rat: Rat,
    pub pci: u16,
    pub arfcn: u32,
    /// Degrees clockwise from north, 0..=359.
    pub azimuth: u16,
    /// Electrical tilt in 0.1 degree units, legal -900..=900.
    #[serde(default = "default_tilt")]
    pub electrical_tilt: i16,
    #[serde(default)]
    pub tilt_box: TiltBox,
    /// Maximum transmit power in dBm, legal 0..=60.
    #[serde(default = "default_power")]
    pub max_tx_power_dbm: i16,
    /// A3 hysteresis in 0.5 dB units, legal 0..=30.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: u8,
    /// One of [`TIME_TO_TRIGGER_MS`].
    #[serde(default = "default_ttt")]
    pub time_to_trigger_ms: u16,
    /// A3 offset in 0.5 dB units, legal -30..=30.
    #[serde(default = "default_a3")]
    pub a3_offset: i8,
    #[serde(default)]
    pub admin_state: AdminState,
    #[serde(default)]
    pub energy_saving: EnergySaving,
    /// Bumped by every change that lands on this cell; the optimistic-concurrency token.
    #[serde(default)]
    pub version: u64,
    /// Last writer of each parameter, for the coordination rules.
    #[serde(default)]
    pub last_change: BTreeMap<Param, Stamp>,
}

fn default_tilt() -> i16 {
    40
}
fn default_power() -> i16 {
    46
}
fn default_hysteresis() -> u8 {
    4
}
fn default_ttt() -> u16 {
    320
}
fn default_a3() -> i8 {
    6
}

/// How a neighbour relation came to be.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RelationOrigin {
    #[default]
    Anr,
    Operator,
}

/// A neighbour relation from a source cell to a target cell.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Relation {
    pub source: CellId,
    pub target: CellId,
    /// Cell individual offset in dB; one of [`Q_OFFSET_RANGE_DB`].
    #[serde(default)]
    pub cio_db: i8,
    #[serde(default = "yes")]
    pub ho_allowed: bool,
    #[serde(default = "yes")]
    pub remove_allowed: bool,
    #[serde(default)]
    pub origin: RelationOrigin,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub last_change: BTreeMap<Param, Stamp>,
}

fn yes() -> bool {
    true
}

impl Relation {
    /// Decodes a relation as [`crate::codec::encode`] wrote it, its cell ids given by `id`
    /// from the text they borrow from `bytes` (a store naming them with its cells' shared ids
    /// makes no copy of its own first: two allocations a relation, 18 million at a national
    /// image's load).
    pub fn decode_with_ids(
        bytes: &[u8],
        mut id: impl FnMut(&str) -> CellId,
    ) -> Result<Relation, crate::codec::CodecError> {
        /// [`Relation`]'s encoding, field for field, its ids borrowed.
        #[derive(Deserialize)]
        struct Stored<'a> {
            source: &'a str,
            target: &'a str,
            cio_db: i8,
            ho_allowed: bool,
            remove_allowed: bool,
            origin: RelationOrigin,
            version: u64,
            last_change: BTreeMap<Param, Stamp>,
        }
        let r: Stored<'_> = crate::codec::decode_borrowed(bytes)?;
        Ok(Relation {
            source: id(r.source),
            target: id(r.target),
            cio_db: r.cio_db,
            ho_allowed: r.ho_allowed,
            remove_allowed: r.remove_allowed,
            origin: r.origin,
            version: r.version,
            last_change: r.last_change,
        })
    }
}

/// Key of a relation in the image: (source, target).
pub type RelationKey = (CellId, CellId);

/// A compact per-cell summary of one counter period, replicated so that every site sees the
/// load of its neighbours across site borders. Raw counters stay in the owning site's store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KpiSummary {
    pub cell: CellId,
    /// End of the counter period, milliseconds since the Unix epoch (antenna time).
    pub period_end_ms: u64,
    /// Downlink PRB utilisation, per mille (`RRU.PrbUsedDl / RRU.PrbAvailDl * 1000`).
    pub prb_dl_permille: u16,
    /// `RRC.ConnMean`.
    pub rrc_conn_mean: u32,
    /// `DRB.UEThpDl` in kbit/s.
    pub thp_dl_kbps: u32,
    /// Sum of `HO.ExeAtt` over the cell's outgoing relations.
    pub ho_att: u32,
    /// Sum of `HO.ExeSucc` over the cell's outgoing relations.
    pub ho_succ: u32,
}

/// The coordination knobs every node applies identically; part of the replicated image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default)]
pub struct Policy {
    /// A parameter another SON function changed less than this long ago (log time) is left
    /// alone.
    pub cooldown_ms: u64,
    /// A parameter a higher-priority function (or the operator) changed less than this long
    /// ago is left alone by lower-priority functions.
    pub priority_hold_ms: u64,
    /// Largest |CIO| a SON function may set, in dB. The operator may use the full range.
    pub max_son_cio_db: i8,
    /// How many history records are kept; older ones are dropped as new ones arrive.
    pub history_keep: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            cooldown_ms: 15 * 60 * 1000,
            priority_hold_ms: 60 * 60 * 1000,
            max_son_cio_db: 6,
            history_keep: 100_000,
        }
    }
}

/// What one node said about itself: its release and the newest command format it applies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeRelease {
    pub node_id: u64,
    pub release: String,
    pub max_command_format: u16,
}
