//! Measures the state machine's apply cost per change set (sled writes of the cell and the
//! history record included), for batches of several sizes.
//!
//! `cargo run --release -p sonraft-storage --example apply_bench`

use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use sonraft_raft::TypeConfig;
use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::command::{Command, Envelope, ImageImport};
use sonraft_raft::model::{EntityRef, Param, Value};
use sonraft_storage::Store;

fn entry(index: u64, command: &Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Envelope::new(command, index).expect("encode")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir_in(".")?;
    let mut store = Store::open(dir.path())?;
    let cells = 10_000;
    let mut import: ImageImport = serde_json::from_value(serde_json::json!({
        "sites": [{"id": "S", "name": "s", "lat": 0.0, "lon": 0.0}],
    }))?;
    for i in 0..cells {
        import.cells.push(serde_json::from_value(serde_json::json!({
            "id": format!("B{i:06}"), "site": "S", "rat": "LTE", "pci": i % 504, "arfcn": 1300, "azimuth": 0
        }))?);
    }
    store.sm.apply([entry(1, &Command::Import(import))]).await?;
    let mut index = 1;
    println!("{:>6} {:>10} {:>16}", "batch", "entries", "us/change set");
    for batch in [1usize, 8, 32, 128] {
        let entries = 20_000 / batch;
        let started = Instant::now();
        for e in 0..entries {
            let sets = (0..batch)
                .map(|k| {
                    let cell = format!("B{:06}", (e * batch + k) % cells);
                    ChangeSet {
                        origin: Origin {
                            node: 1,
                            function: Function::Operator,
                        },
                        reason: "bench".into(),
                        read_set: vec![],
                        writes: vec![Write {
                            entity: EntityRef::cell(&cell),
                            param: Param::Hysteresis,
                            value: Value::Int(4 + (e % 2) as i64),
                        }],
                        proposed_at_ms: 0,
                    }
                })
                .collect();
            index += 1;
            store
                .sm
                .apply([entry(index, &Command::ChangeSets(sets))])
                .await?;
        }
        let us = started.elapsed().as_micros() as f64 / (entries * batch) as f64;
        println!("{batch:>6} {entries:>10} {us:>16.1}");
    }
    Ok(())
}
