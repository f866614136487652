//! Measures the durable sled log on this machine: appends per second and the cost of one
//! `fdatasync`-backed sync per appended batch.
//!
//! `cargo run --release -p sonraft-storage --example append_bench [entries_per_batch...]`

use std::time::Instant;

use sonraft_storage::durable::Durability;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 16, 64, 256]
    } else {
        sizes
    };
    let dir = tempfile::tempdir_in(".")?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let log = db.open_tree("log")?;
    let durability = Durability::new(db.clone(), dir.path())?;
    let payload = vec![7u8; 300]; // about one change-set entry
    let mut index = 0u64;
    println!(
        "{:>8} {:>10} {:>14} {:>16}",
        "batch", "batches", "appends/s", "sync us/batch"
    );
    for &batch_size in &sizes {
        let batches = (4000 / batch_size).clamp(200, 4000);
        let started = Instant::now();
        let mut sync_us = 0u128;
        for _ in 0..batches {
            let mut b = sled::Batch::default();
            for _ in 0..batch_size {
                index += 1;
                b.insert(&index.to_be_bytes(), payload.clone());
            }
            log.apply_batch(b)?;
            let s = Instant::now();
            durability.sync()?;
            sync_us += s.elapsed().as_micros();
        }
        let secs = started.elapsed().as_secs_f64();
        let appends = (batches * batch_size) as f64 / secs;
        println!(
            "{batch_size:>8} {batches:>10} {appends:>14.0} {:>16.0}",
            sync_us as f64 / batches as f64
        );
        println!(
            "{{\"bench\":\"sled_log_append\",\"batch\":{batch_size},\"appends_per_s\":{appends:.0},\"sync_us_per_batch\":{:.0}}}",
            sync_us as f64 / batches as f64
        );
    }
    Ok(())
}
