//! Parameters as an operator reads them: the image stores integers in the units 3GPP signals
//! them in (tilt in 0.1°, hysteresis and A3 offset in 0.5 dB), and `ctl` shows them in degrees
//! and decibels beside the stored value, so that "40" is never mistaken for 40°.

use serde_json::Value;

/// `value` of `param` with its unit: `electrical_tilt=40` reads `4.0°`.
pub fn with_unit(param: &str, value: &Value) -> String {
    let Some(n) = value.as_f64() else {
        return match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    };
    match param {
        "electrical_tilt" => format!("{:.1}°", n / 10.0),
        "hysteresis" | "a3_offset" => format!("{:.1} dB", n / 2.0),
        "max_tx_power_dbm" => format!("{n} dBm"),
        "cio_db" => format!("{n} dB"),
        "time_to_trigger_ms" => format!("{n} ms"),
        "azimuth" => format!("{n}°"),
        _ => value.to_string(),
    }
}

/// A write as `param=stored (with unit)`, the unit only where it says more than the number.
pub fn write_text(param: &str, value: &Value) -> String {
    let stored = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let shown = with_unit(param, value);
    if shown == stored {
        format!("{param}={stored}")
    } else {
        format!("{param}={stored} ({shown})")
    }
}

/// One write of a change set: `entity param=stored (with unit)`.
pub fn entity_write(entity: &str, param: &str, value: &Value) -> String {
    format!("{entity} {}", write_text(param, value))
}

/// The lines of `ctl cell ID`: identity, then each parameter with its unit, then who changed
/// what last.
pub fn cell_lines(cell: &Value, time: impl Fn(u64) -> String) -> Vec<String> {
    let s = |k: &str| match &cell[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let mut out = vec![format!(
        "cell {}  site {}  {}  PCI {}  ARFCN {}  azimuth {}",
        s("id"),
        s("site"),
        s("rat"),
        s("pci"),
        s("arfcn"),
        with_unit("azimuth", &cell["azimuth"]),
    )];
    let tilt_box = &cell["tilt_box"];
    let rows: [(&str, &str, String); 8] = [
        (
            "electrical tilt",
            "electrical_tilt",
            format!(
                "   (SON functions keep it in {}..{})",
                with_unit("electrical_tilt", &tilt_box["min"]),
                with_unit("electrical_tilt", &tilt_box["max"])
            ),
        ),
        ("max tx power", "max_tx_power_dbm", String::new()),
        ("hysteresis", "hysteresis", String::new()),
        ("time to trigger", "time_to_trigger_ms", String::new()),
        ("A3 offset", "a3_offset", String::new()),
        ("admin state", "admin_state", String::new()),
        ("energy saving", "energy_saving", String::new()),
        ("version", "version", String::new()),
    ];
    for (label, key, note) in rows {
        out.push(format!(
            "  {label:<16} {}{note}",
            with_unit(key, &cell[key])
        ));
    }
    if let Some(changes) = cell["last_change"].as_object().filter(|c| !c.is_empty()) {
        out.push("  last changed:".into());
        for (param, stamp) in changes {
            out.push(format!(
                "    {param:<20} by {} at {} (index {})",
                stamp["by"].as_str().unwrap_or("?"),
                stamp["at_ms"].as_u64().map_or("?".into(), &time),
                stamp["index"],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_read_in_degrees_and_decibels() {
        assert_eq!(with_unit("electrical_tilt", &json!(40)), "4.0°");
        assert_eq!(with_unit("electrical_tilt", &json!(-15)), "-1.5°");
        assert_eq!(with_unit("hysteresis", &json!(3)), "1.5 dB");
        assert_eq!(with_unit("a3_offset", &json!(-4)), "-2.0 dB");
        assert_eq!(with_unit("max_tx_power_dbm", &json!(46)), "46 dBm");
        assert_eq!(with_unit("cio_db", &json!(-2)), "-2 dB");
        assert_eq!(with_unit("admin_state", &json!("locked")), "locked");
        assert_eq!(
            write_text("electrical_tilt", &json!(45)),
            "electrical_tilt=45 (4.5°)"
        );
        assert_eq!(write_text("exists", &json!(true)), "exists=true");
        assert_eq!(
            write_text("admin_state", &json!("locked")),
            "admin_state=locked"
        );
    }

    #[test]
    fn a_cell_shows_its_units_and_its_last_writers() {
        let cell = json!({
            "id": "C1", "site": "S1", "rat": "LTE", "pci": 7, "arfcn": 1300, "azimuth": 120,
            "electrical_tilt": 40, "tilt_box": {"min": 20, "max": 80},
            "max_tx_power_dbm": 46, "hysteresis": 4, "time_to_trigger_ms": 320,
            "a3_offset": 6, "admin_state": "unlocked", "energy_saving": "normal",
            "version": 3,
            "last_change": {"electrical_tilt": {"by": "coverage_capacity", "at_ms": 1000, "index": 9}},
        });
        let text = cell_lines(&cell, |ms| format!("t{ms}")).join("\n");
        for needle in [
            "azimuth 120°",
            "electrical tilt  4.0°   (SON functions keep it in 2.0°..8.0°)",
            "max tx power     46 dBm",
            "hysteresis       2.0 dB",
            "time to trigger  320 ms",
            "A3 offset        3.0 dB",
            "electrical_tilt      by coverage_capacity at t1000 (index 9)",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
    }
}
