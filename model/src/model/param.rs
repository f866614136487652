//! Parameters a change set can write, their legal values and their per-step limits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{AdminState, Cell, EnergySaving, Relation};

/// Time-to-trigger values allowed by TS 36.331 / 38.331, in milliseconds.
pub const TIME_TO_TRIGGER_MS: [u16; 16] = [
    0, 40, 64, 80, 100, 128, 160, 256, 320, 480, 512, 640, 1024, 1280, 2560, 5120,
];

/// Q-OffsetRange values (TS 36.331), in dB: the legal cell individual offsets.
pub const Q_OFFSET_RANGE_DB: [i8; 31] = [
    -24, -22, -20, -18, -16, -14, -12, -10, -8, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 8, 10,
    12, 14, 16, 18, 20, 22, 24,
];

/// A writable parameter. Its snake_case name is what the admin API and the history use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    Pci,
    ElectricalTilt,
    MaxTxPowerDbm,
    Hysteresis,
    TimeToTriggerMs,
    A3Offset,
    AdminState,
    EnergySaving,
    CioDb,
    HoAllowed,
    /// Writing `false` removes a relation (ANR pruning); only allowed when `remove_allowed`.
    Exists,
}

impl Param {
    pub const ALL: [Param; 11] = [
        Param::Pci,
        Param::ElectricalTilt,
        Param::MaxTxPowerDbm,
        Param::Hysteresis,
        Param::TimeToTriggerMs,
        Param::A3Offset,
        Param::AdminState,
        Param::EnergySaving,
        Param::CioDb,
        Param::HoAllowed,
        Param::Exists,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Param::Pci => "pci",
            Param::ElectricalTilt => "electrical_tilt",
            Param::MaxTxPowerDbm => "max_tx_power_dbm",
            Param::Hysteresis => "hysteresis",
            Param::TimeToTriggerMs => "time_to_trigger_ms",
            Param::A3Offset => "a3_offset",
            Param::AdminState => "admin_state",
            Param::EnergySaving => "energy_saving",
            Param::CioDb => "cio_db",
            Param::HoAllowed => "ho_allowed",
            Param::Exists => "exists",
        }
    }

    /// True for parameters of relations, false for parameters of cells.
    pub fn on_relation(self) -> bool {
        matches!(self, Param::CioDb | Param::HoAllowed | Param::Exists)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter name that is not one of [`Param::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown parameter {0:?}")]
pub struct UnknownParam(pub String);

impl FromStr for Param {
    type Err = UnknownParam;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Param::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownParam(s.chars().take(64).collect()))
    }
}

/// A parameter value as carried in a change set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// Why a value cannot be written.
pub type Illegal = String;

fn int(param: Param, v: &Value) -> Result<i64, Illegal> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(format!("{param} takes a whole number, got {other}")),
    }
}

fn boolean(param: Param, v: &Value) -> Result<bool, Illegal> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(format!("{param} takes true or false, got {other}")),
    }
}

fn in_range(param: Param, v: i64, lo: i64, hi: i64, unit: &str) -> Result<i64, Illegal> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{param} = {v} is outside the legal range {lo}..={hi} {unit}"
        ))
    }
}

fn step(param: Param, from: i64, to: i64, limit: i64, unit: &str) -> Result<(), Illegal> {
    if (to - from).abs() > limit {
        Err(format!(
            "{param} may move at most {limit} {unit} per change set; {from} -> {to} moves {}",
            (to - from).abs()
        ))
    } else {
        Ok(())
    }
}

/// Current value of a cell parameter.
pub fn cell_value(cell: &Cell, param: Param) -> Option<Value> {
    Some(match param {
        Param::Pci => Value::Int(cell.pci.into()),
        Param::ElectricalTilt => Value::Int(cell.electrical_tilt.into()),
        Param::MaxTxPowerDbm => Value::Int(cell.max_tx_power_dbm.into()),
        Param::Hysteresis => Value::Int(cell.hysteresis.into()),
        Param::TimeToTriggerMs => Value::Int(cell.time_to_trigger_ms.into()),
        Param::A3Offset => Value::Int(cell.a3_offset.into()),
        Param::AdminState => Value::Text(admin_name(cell.admin_state).into()),
        Param::EnergySaving => Value::Text(energy_name(cell.energy_saving).into()),
        Param::CioDb | Param::HoAllowed | Param::Exists => return None,
    })
}

/// Current value of a relation parameter.
pub fn relation_value(rel: &Relation, param: Param) -> Option<Value> {
    Some(match param {
        Param::CioDb => Value::Int(rel.cio_db.into()),
        Param::HoAllowed => Value::Bool(rel.ho_allowed),
        Param::Exists => Value::Bool(true),
        _ => return None,
    })
}

pub fn admin_name(s: AdminState) -> &'static str {
    match s {
        AdminState::Unlocked => "unlocked",
        AdminState::Locked => "locked",
        AdminState::ShuttingDown => "shutting_down",
    }
}

pub fn energy_name(s: EnergySaving) -> &'static str {
    match s {
        EnergySaving::Normal => "normal",
        EnergySaving::Dormant => "dormant",
    }
}

/// Checks that `value` is legal for `param` of `cell` and within the per-step limit from the
/// current value, then writes it. `in_box` additionally keeps tilt inside the operator box.
pub fn set_cell(cell: &mut Cell, param: Param, value: &Value, in_box: bool) -> Result<(), Illegal> {
    match param {
        Param::Pci => {
            let v = in_range(param, int(param, value)?, 0, cell.rat.max_pci().into(), "")?;
            cell.pci = v as u16;
        }
        Param::ElectricalTilt => {
            let v = in_range(param, int(param, value)?, -900, 900, "x0.1 degree")?;
            if in_box && !(cell.tilt_box.min as i64..=cell.tilt_box.max as i64).contains(&v) {
                return Err(format!(
                    "{param} = {v} is outside the operator box {}..={} of cell/{}",
                    cell.tilt_box.min, cell.tilt_box.max, cell.id
                ));
            }
            step(param, cell.electrical_tilt.into(), v, 10, "x0.1 degree")?;
            cell.electrical_tilt = v as i16;
        }
        Param::MaxTxPowerDbm => {
            let v = in_range(param, int(param, value)?, 0, 60, "dBm")?;
            step(param, cell.max_tx_power_dbm.into(), v, 3, "dB")?;
            cell.max_tx_power_dbm = v as i16;
        }
        Param::Hysteresis => {
            let v = in_range(param, int(param, value)?, 0, 30, "x0.5 dB")?;
            step(param, cell.hysteresis.into(), v, 2, "x0.5 dB")?;
            cell.hysteresis = v as u8;
        }
        Param::TimeToTriggerMs => {
            let v = int(param, value)?;
            let to = TIME_TO_TRIGGER_MS
                .iter()
                .position(|t| i64::from(*t) == v)
                .ok_or_else(|| format!("{param} = {v} is not one of {TIME_TO_TRIGGER_MS:?} ms"))?;
            let from = TIME_TO_TRIGGER_MS
                .iter()
                .position(|t| *t == cell.time_to_trigger_ms)
                .unwrap_or(to);
            if from.abs_diff(to) > 2 {
                return Err(format!(
                    "{param} may move at most two steps of {TIME_TO_TRIGGER_MS:?} per change set; {} -> {v} moves {}",
                    cell.time_to_trigger_ms,
                    from.abs_diff(to)
                ));
            }
            cell.time_to_trigger_ms = v as u16;
        }
        Param::A3Offset => {
            let v = in_range(param, int(param, value)?, -30, 30, "x0.5 dB")?;
            step(param, cell.a3_offset.into(), v, 4, "x0.5 dB")?;
            cell.a3_offset = v as i8;
        }
        Param::AdminState => {
            cell.admin_state = match value {
                Value::Text(t) if t == "unlocked" => AdminState::Unlocked,
                Value::Text(t) if t == "locked" => AdminState::Locked,
                Value::Text(t) if t == "shutting_down" => AdminState::ShuttingDown,
                other => {
                    return Err(format!(
                        "{param} takes \"unlocked\", \"locked\" or \"shutting_down\", got {other}"
                    ));
                }
            }
        }
        Param::EnergySaving => {
            cell.energy_saving = match value {
                Value::Text(t) if t == "normal" => EnergySaving::Normal,
                Value::Text(t) if t == "dormant" => EnergySaving::Dormant,
                other => {
                    return Err(format!(
                        "{param} takes \"normal\" or \"dormant\", got {other}"
                    ));
                }
            }
        }
        Param::CioDb | Param::HoAllowed | Param::Exists => {
            return Err(format!(
                "{param} is a relation parameter, not a cell parameter"
            ));
        }
    }
    Ok(())
}

/// Checks that `value` is legal for `param` of `rel` and within the per-step limit, then writes
/// it. `max_abs_cio` bounds |CIO| (the SON bound; the operator passes 24).
/// `Param::Exists` is checked by the caller, which removes the relation.
pub fn set_relation(
    rel: &mut Relation,
    param: Param,
    value: &Value,
    max_abs_cio: i8,
) -> Result<(), Illegal> {
    match param {
        Param::CioDb => {
            let v = int(param, value)?;
            if !Q_OFFSET_RANGE_DB.iter().any(|q| i64::from(*q) == v) {
                return Err(format!(
                    "{param} = {v} is not a Q-OffsetRange value ({Q_OFFSET_RANGE_DB:?} dB)"
                ));
            }
            if v.abs() > i64::from(max_abs_cio) {
                return Err(format!(
                    "{param} = {v} exceeds the SON bound |cio| <= {max_abs_cio} dB"
                ));
            }
            step(param, rel.cio_db.into(), v, 3, "dB")?;
            rel.cio_db = v as i8;
        }
        Param::HoAllowed => rel.ho_allowed = boolean(param, value)?,
        Param::Exists => {
            if boolean(param, value)? {
                return Err("exists = true cannot create a relation; import it instead".to_string());
            }
        }
        other => {
            return Err(format!(
                "{other} is a cell parameter, not a relation parameter"
            ));
        }
    }
    Ok(())
}

/// Checks every field of a cell as imported: the same legal ranges as writes, no step limits.
pub fn check_cell(cell: &Cell) -> Result<(), Illegal> {
    let id = &cell.id;
    let fail = |what: String| Err(format!("cell/{id}: {what}"));
    if cell.pci > cell.rat.max_pci() {
        return fail(format!(
            "pci {} is outside 0..={}",
            cell.pci,
            cell.rat.max_pci()
        ));
    }
    if cell.azimuth > 359 {
        return fail(format!("azimuth {} is outside 0..=359", cell.azimuth));
    }
    if !(-900..=900).contains(&cell.electrical_tilt) {
        return fail(format!(
            "electrical_tilt {} is outside -900..=900",
            cell.electrical_tilt
        ));
    }
    if cell.tilt_box.min > cell.tilt_box.max
        || !(-900..=900).contains(&cell.tilt_box.min)
        || !(-900..=900).contains(&cell.tilt_box.max)
    {
        return fail(format!(
            "tilt_box {}..={} is empty or outside -900..=900",
            cell.tilt_box.min, cell.tilt_box.max
        ));
    }
    if !(0..=60).contains(&cell.max_tx_power_dbm) {
        return fail(format!(
            "max_tx_power_dbm {} is outside 0..=60",
            cell.max_tx_power_dbm
        ));
    }
    if cell.hysteresis > 30 {
        return fail(format!("hysteresis {} is outside 0..=30", cell.hysteresis));
    }
    if !TIME_TO_TRIGGER_MS.contains(&cell.time_to_trigger_ms) {
        return fail(format!(
            "time_to_trigger_ms {} is not a legal value",
            cell.time_to_trigger_ms
        ));
    }
    if !(-30..=30).contains(&cell.a3_offset) {
        return fail(format!("a3_offset {} is outside -30..=30", cell.a3_offset));
    }
    Ok(())
}

/// Checks a relation as imported.
pub fn check_relation(rel: &Relation) -> Result<(), Illegal> {
    if !Q_OFFSET_RANGE_DB.contains(&rel.cio_db) {
        return Err(format!(
            "relation/{}/{}: cio_db {} is not a Q-OffsetRange value",
            rel.source, rel.target, rel.cio_db
        ));
    }
    if rel.source == rel.target {
        return Err(format!(
            "relation/{}/{}: a cell is not its own neighbour",
            rel.source, rel.target
        ));
    }
    Ok(())
}
