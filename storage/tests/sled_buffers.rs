//! sled 0.34's IO buffers do not pile up on a thread that syncs now and then (issue 21).
//!
//! A sled `flush` seals the current IO buffer and defers its drop into the calling thread's
//! crossbeam-epoch bag, which reaches the collector only when 64 deferred drops fill it. A
//! sealed buffer keeps its segment's whole 512 KiB allocated, so a thread that does little but
//! an occasional sync (a tokio blocking thread running the log store's purge syncs) held one
//! segment per sync: a linear leak of about 1 MB a minute per node in soaks.
//!
//! One test per file: the counting allocator below sees the whole test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use sonraft_storage::durable::Durability;

/// Counts the live allocations with sled's IO buffer alignment (nothing else asks for 8192).
struct Counting;

static LIVE_IO_BUFFERS: AtomicUsize = AtomicUsize::new(0);
const IO_BUFFER_ALIGN: usize = 8192;

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if layout.align() == IO_BUFFER_ALIGN && !p.is_null() {
            LIVE_IO_BUFFERS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() == IO_BUFFER_ALIGN {
            LIVE_IO_BUFFERS.fetch_sub(1, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_thread_that_syncs_now_and_then_does_not_keep_sled_io_buffers_alive() {
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = dir.path().join("sled");
    let db = sled::Config::new()
        .path(&sled_dir)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let durability = Durability::new(db.clone(), &sled_dir).unwrap();
    let tree = db.open_tree("log").unwrap();
    // The syncing thread lives for the whole test, like a tokio blocking thread kept busy.
    let (work, todo) = mpsc::channel::<()>();
    let (done, finished) = mpsc::channel::<()>();
    let syncer = std::thread::spawn(move || {
        for () in todo {
            durability.sync().unwrap();
            done.send(()).unwrap();
        }
    });
    let value = vec![7u8; 2000];
    let mut key = 0u64;
    const SYNCS: usize = 40;
    for _ in 0..SYNCS {
        // More than a segment (512 KiB) between syncs: each sync seals another segment.
        for _ in 0..300 {
            key += 1;
            tree.insert(key.to_be_bytes(), value.as_slice()).unwrap();
        }
        // Other threads go on using sled (pinning, advancing the epoch) as a node's do.
        for k in key.saturating_sub(10)..key {
            tree.get(k.to_be_bytes()).unwrap();
        }
        work.send(()).unwrap();
        finished.recv().unwrap();
    }
    // Let the epoch advance past the released garbage: every pin may collect some.
    for k in 0..10_000u64 {
        tree.get(k.to_be_bytes()).unwrap();
    }
    let live = LIVE_IO_BUFFERS.load(Ordering::Relaxed);
    drop(work);
    syncer.join().unwrap();
    assert!(
        live <= 8,
        "{live} sled IO buffers (512 KiB each) alive after {SYNCS} syncs on one thread: the \
         syncing thread keeps the sealed ones"
    );
}
