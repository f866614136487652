//! A small network image to test rules against.
#![allow(dead_code)]

use sonraft_model::changeset::{ChangeSet, Function, Origin, ReadVersion, Write};
use sonraft_model::command::{Command, ImageImport};
use sonraft_model::model::image::{Changes, NetworkImage};
use sonraft_model::model::{Cell, EntityRef, Param, Rat, Relation, Site, Value};

pub fn site(id: &str) -> Site {
    Site {
        id: id.into(),
        name: format!("site {id}"),
        lat: 48.1,
        lon: 11.5,
        region: "south".into(),
    }
}

pub fn cell(id: &str, site: &str, pci: u16) -> Cell {
    serde_json::from_value(serde_json::json!({
        "id": id, "site": site, "rat": "LTE", "pci": pci, "arfcn": 1300, "azimuth": 120,
    }))
    .expect("cell json")
}

pub fn relation(s: &str, t: &str) -> Relation {
    serde_json::from_value(serde_json::json!({"source": s, "target": t})).expect("relation json")
}

/// Two sites, three cells each, a ring of relations within and across sites.
pub fn image() -> NetworkImage {
    let mut img = NetworkImage::default();
    let cells: Vec<Cell> = ["A-1", "A-2", "A-3", "B-1", "B-2", "B-3"]
        .iter()
        .enumerate()
        .map(|(i, id)| cell(id, &id[..1], 10 + i as u16))
        .collect();
    let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
    let mut relations = Vec::new();
    for (i, s) in ids.iter().enumerate() {
        relations.push(relation(s, ids[(i + 1) % ids.len()]));
        relations.push(relation(s, ids[(i + 2) % ids.len()]));
    }
    let import = ImageImport {
        sites: vec![site("A"), site("B")],
        cells,
        relations,
        policy: None,
    };
    let r = img.apply(1, &Command::Import(import), &mut Changes::default());
    assert!(
        matches!(r, sonraft_model::command::Response::Imported(Ok(_))),
        "{r:?}"
    );
    assert_eq!(Rat::Lte.max_pci(), 503);
    img
}

pub fn write(entity: &str, param: Param, value: Value) -> Write {
    Write {
        entity: entity.parse().expect("entity"),
        param,
        value,
    }
}

pub fn change_set(function: Function, img: &NetworkImage, writes: Vec<Write>) -> ChangeSet {
    let mut read_set: Vec<ReadVersion> = Vec::new();
    for w in &writes {
        if !read_set.iter().any(|r| r.entity == w.entity) {
            let version = img.version_of(&w.entity).unwrap_or(0);
            read_set.push(ReadVersion {
                entity: w.entity.clone(),
                version,
            });
        }
    }
    ChangeSet {
        origin: Origin { node: 1, function },
        reason: "test".into(),
        read_set,
        writes,
        proposed_at_ms: 0,
    }
}

pub fn entity(s: &str) -> EntityRef {
    s.parse().expect("entity")
}
