//! Reproduces the slow growth of live sled 0.34 IO buffers seen on soaking nodes.
//!
//! sled allocates one 512 KiB IO buffer per log segment with alignment 8192 (nothing else in
//! this process asks for that alignment), so a counting global allocator sees exactly how many
//! are alive. The workload mimics a node's use of sled: Raft log appends from tokio workers
//! (plain inserts) synced by a group-commit thread, `committed` updates, state checkpoints
//! every 500 ms from their own thread (marker, sync, keys, sync, marker removed), purges after
//! a `spawn_blocking` sync, and replication reads of the log tail.
//!
//! `cargo run --release -p sonraft-storage --example iobuf_leak`
//!
//! Environment (defaults in brackets): `SECS` [300] run time, `REPORT_SECS` [10],
//! `APPEND_MS` [10] pause between appends, `ENTRIES` [2] entries per append, `ENTRY_BYTES`
//! [2000], `CKPT_KEYS` [600] keys per checkpoint, `CKPT_BYTES` [300] bytes per key,
//! `FLUSH_EVERY_MS` [1000; 0: none], `PURGE_SECS` [5], `KEEP` [2000] entries kept by a purge,
//! `WORKERS` [2] tokio workers, `BEFORE` [0] 1: sync as `Durability` did before the fix
//! (sled `flush` and `fdatasync`, without `release_sled_garbage`).
//!
//! What leaks (before the fix): every sync run through `spawn_blocking` (the purges here; the
//! log store's vote, truncate and purge syncs in a node) seals the current IO buffer and
//! defers its drop into the blocking thread's crossbeam-epoch bag, which stays there until
//! 64 such syncs have filled it: one 512 KiB buffer per sync, freed 64 syncs later.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sonraft_storage::durable::Durability;

/// Counts the live allocations of sled's IO buffers (alignment 8192).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

const IOBUF_ALIGN: usize = 8192;

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if layout.align() == IOBUF_ALIGN && !p.is_null() {
            LIVE.fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() == IOBUF_ALIGN {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs = env("SECS", 300);
    let report = env("REPORT_SECS", 10);
    let append_ms = env("APPEND_MS", 10);
    let entries = env("ENTRIES", 2);
    let entry_bytes = env("ENTRY_BYTES", 2000) as usize;
    let ckpt_keys = env("CKPT_KEYS", 600);
    let ckpt_bytes = env("CKPT_BYTES", 300) as usize;
    let flush_every = env("FLUSH_EVERY_MS", 1000);
    let purge_secs = env("PURGE_SECS", 5);
    let keep = env("KEEP", 2000);
    let workers = env("WORKERS", 2) as usize;
    let before = env("BEFORE", 0) == 1;

    let dir = tempfile::tempdir_in(".")?;
    let sled_dir = dir.path().join("sled");
    let db = sled::Config::new()
        .path(&sled_dir)
        .cache_capacity(64 << 20)
        .flush_every_ms((flush_every > 0).then_some(flush_every))
        .open()?;
    let log = db.open_tree("log")?;
    let raft = db.open_tree("raft")?;
    let sm = db.open_tree("sm")?;
    let durability = Arc::new(Durability::new(db.clone(), &sled_dir)?);
    let data_file = std::fs::File::open(sled_dir.join("db"))?;
    let db2 = db.clone();
    let d = durability.clone();
    let sync: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        if before {
            db2.flush().expect("flush");
            data_file.sync_data().expect("fdatasync");
        } else {
            d.sync().expect("sync");
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));

    // Group commit: one thread syncs whatever appends queued.
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let d = sync.clone();
    let fsync = std::thread::Builder::new()
        .name("fsync".into())
        .spawn(move || {
            while let Ok(_first) = rx.recv() {
                for _ in rx.try_iter() {}
                d();
            }
        })?;

    // Checkpoints of the state machine, every 500 ms.
    let (d, s, st) = (sync.clone(), sm.clone(), stop.clone());
    let writer = std::thread::Builder::new()
        .name("sm-writer".into())
        .spawn(move || {
            let mut round = 0u64;
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                round += 1;
                s.insert(b"m/torn", &[]).expect("insert");
                d();
                for k in 0..ckpt_keys {
                    let key = format!("c/{k:06}");
                    let mut v = vec![(round % 251) as u8; ckpt_bytes];
                    v[0] = k as u8;
                    s.insert(key.as_bytes(), v).expect("insert");
                }
                s.insert(b"m/applied", &round.to_be_bytes())
                    .expect("insert");
                d();
                s.remove(b"m/torn").expect("remove");
            }
        })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let started = Instant::now();
    rt.block_on(async {
        // The leader's appends, then its commit.
        let (l, r, a, st) = (log.clone(), raft.clone(), appended.clone(), stop.clone());
        let appender = tokio::spawn(async move {
            let mut index = 0u64;
            let payload = vec![0x5au8; entry_bytes];
            while !st.load(Ordering::Relaxed) {
                for _ in 0..entries {
                    index += 1;
                    l.insert(index.to_be_bytes(), payload.clone())
                        .expect("insert");
                }
                a.store(index, Ordering::Relaxed);
                let _ = tx.send(index);
                r.insert(b"committed", &index.to_be_bytes())
                    .expect("insert");
                tokio::time::sleep(Duration::from_millis(append_ms)).await;
            }
        });
        // Replication: followers read the tail.
        let (l, a, st) = (log.clone(), appended.clone(), stop.clone());
        let reader = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let last = a.load(Ordering::Relaxed);
                let from = last.saturating_sub(entries * 2);
                let n = l.range(from.to_be_bytes()..).count();
                std::hint::black_box(n);
                tokio::time::sleep(Duration::from_millis(append_ms)).await;
            }
        });
        // Purges after a snapshot: sync off the runtime, then remove the head in one batch.
        let (l, r, a, d, st) = (
            log.clone(),
            raft.clone(),
            appended.clone(),
            sync.clone(),
            stop.clone(),
        );
        let purger = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(purge_secs)).await;
                let upto = a.load(Ordering::Relaxed).saturating_sub(keep);
                if upto == 0 {
                    continue;
                }
                r.insert(b"purged", &upto.to_be_bytes()).expect("insert");
                let d2 = d.clone();
                tokio::task::spawn_blocking(move || d2())
                    .await
                    .expect("join");
                let mut batch = sled::Batch::default();
                for k in l.range(..=upto.to_be_bytes()).keys() {
                    batch.remove(k.expect("key"));
                }
                l.apply_batch(batch).expect("purge");
            }
        });
        println!("secs live_bufs live_MiB allocated_bufs appended");
        let mut next = report;
        while started.elapsed().as_secs() < secs {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed().as_secs() >= next {
                next += report;
                println!(
                    "{:4} {:4} {:7.1} {:7} {}",
                    started.elapsed().as_secs(),
                    LIVE.load(Ordering::Relaxed),
                    LIVE_BYTES.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
                    ALLOCATED.load(Ordering::Relaxed),
                    appended.load(Ordering::Relaxed),
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        // The purger may sleep for long (a large PURGE_SECS turns purges off).
        purger.abort();
        let _ = tokio::join!(appender, reader);
    });
    writer.join().expect("writer");
    drop(rt);
    let _ = fsync; // ends when the appender's sender is gone
    Ok(())
}
