//! Small hand-made images for the SON functions' unit tests: cells of two sonraft sites
//! (`site-a`, whose functions are under test, and `site-b`), relations between them, and the
//! counters of one period.

use serde_json::{Value, json};
use sonraft_protocol::RELATION_COUNTERS;
use sonraft_raft::command::{Command, ImageImport, Response};
use sonraft_raft::model::image::{Changes, NetworkImage};

use super::PeriodInput;
use super::view::RadioView;

/// A cell of cell site `A` (region `site-a`) when its id starts with `A`, else of cell site
/// `Z` (region `site-b`); LTE unless `arfcn` is an NR channel (above 600 000).
pub fn cell(id: &str, pci: u16, arfcn: u32) -> Value {
    let site = if id.starts_with('A') { "A" } else { "Z" };
    let rat = if arfcn > 600_000 { "NR" } else { "LTE" };
    json!({"id": id, "site": site, "rat": rat, "pci": pci, "arfcn": arfcn, "azimuth": 0})
}

/// A relation `source -> target` with the defaults (handovers allowed, removable).
pub fn relation(source: &str, target: &str) -> Value {
    json!({"source": source, "target": target})
}

/// The image of `cells` and `relations`, each at version 1.
pub fn image(cells: Vec<Value>, relations: Vec<Value>) -> NetworkImage {
    let import: ImageImport = serde_json::from_value(json!({
        "sites": [
            {"id": "A", "name": "a", "lat": 48.0, "lon": 11.0, "region": "site-a"},
            {"id": "Z", "name": "z", "lat": 48.1, "lon": 11.1, "region": "site-b"},
        ],
        "cells": cells,
        "relations": relations,
    }))
    .expect("a test image");
    let mut img = NetworkImage::default();
    let r = img.apply(1, &Command::Import(import), &mut Changes::default());
    assert!(matches!(r, Response::Imported(Ok(_))), "{r:?}");
    img
}

/// What the functions of `site-a` see of `img`.
pub fn view(img: &NetworkImage) -> RadioView {
    RadioView::capture(img, "site-a")
}

/// Counters of one relation for one period: attempts, successes, too early, too late, ping-pong
/// (no wrong-cell handovers).
pub fn counters(
    att: u64,
    succ: u64,
    early: u64,
    late: u64,
    ping_pong: u64,
) -> [u64; RELATION_COUNTERS.len()] {
    [att, succ, early, late, 0, ping_pong]
}

/// One period's input: `(source, target, counters)` of reported relations.
pub fn period(
    view: &RadioView,
    reports: &[(&str, &str, [u64; RELATION_COUNTERS.len()])],
) -> PeriodInput {
    let mut input = PeriodInput::default();
    for (s, t, c) in reports {
        let (s, t) = (view.index[*s], view.index[*t]);
        input.relations.entry(s).or_default().push((t, *c));
    }
    input
}
