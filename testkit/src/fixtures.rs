//! Test data as the admin API takes it: a small image and an operator change set.

use serde_json::{Value, json};

/// A small image: three sites, `cells` cells, a ring of relations.
pub fn demo_image(cells: usize) -> Value {
    let sites: Vec<Value> =
        (1..=3).map(|i| json!({"id": format!("S{i}"), "name": format!("site {i}"), "lat": 48.0 + i as f64 / 100.0, "lon": 11.0})).collect();
    let cell_list: Vec<Value> = (0..cells)
        .map(|i| json!({"id": format!("C{i}"), "site": format!("S{}", i % 3 + 1), "rat": "LTE", "pci": i % 504, "arfcn": 1300, "azimuth": (i % 3) * 120}))
        .collect();
    let relations: Vec<Value> = (0..cells)
        .map(|i| json!({"source": format!("C{i}"), "target": format!("C{}", (i + 1) % cells)}))
        .collect();
    json!({"sites": sites, "cells": cell_list, "relations": relations})
}

/// An operator change set of one write, reading `version`.
pub fn tilt(cell: &str, version: u64, tilt: i64) -> Value {
    json!({
        "origin": {"function": "operator"},
        "reason": "test",
        "read_set": [{"entity": format!("cell/{cell}"), "version": version}],
        "writes": [{"entity": format!("cell/{cell}"), "param": "electrical_tilt", "value": tilt}],
    })
}
