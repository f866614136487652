//! The bug class this filesystem exists to catch: sled 0.34's `flush()` makes its writes
//! durable with `sync_file_range` only, which is not a data-integrity operation (it
//! persists neither metadata nor anything the drive caches) and, on this filesystem, not
//! a FUSE request at all. A power cut after `flush()` can lose acknowledged keys; an
//! explicit `fdatasync` of sled's `db` file keeps them.
//!
//! sled must not be dropped in the writer: dropping it fsyncs the log. So the writer runs
//! as a child process (this test binary, re-run on the ignored test `sled_writer`) and is
//! SIGKILLed, as a campaign kills a node, before the power cut.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::LazyMount;

const KEYS: u32 = 200;
const DIR_VAR: &str = "LAZYFS_SLED_WRITER_DIR";
const SYNC_VAR: &str = "LAZYFS_SLED_WRITER_FDATASYNC";
/// Printed by the writer once flushed; searched for inside a line, as the test harness
/// prints the test name before the test's own output on the same line.
const FLUSHED: &str = "SLED-WRITER-FLUSHED";

fn open(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        // No background flusher: its periodic fsync would make everything durable.
        .flush_every_ms(None)
        .open()
        .expect("open sled")
}

/// Runs the writer child on `dir`, waits until it has flushed, then SIGKILLs it.
fn write_keys_in_a_child(dir: &Path, fdatasync: bool) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "sled_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(SYNC_VAR, if fdatasync { "1" } else { "0" })
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sled writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let flushed = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains(FLUSHED));
    assert!(flushed, "the sled writer died before flushing");
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
}

fn surviving_keys(dir: &Path) -> u32 {
    let db = open(dir);
    let survivors = (0..KEYS)
        .filter(|k| db.get(k.to_be_bytes()).expect("get").is_some())
        .count();
    u32::try_from(survivors).expect("small")
}

#[test]
fn keys_flushed_by_sled_but_never_fsynced_are_lost_in_a_power_cut() {
    let fs = LazyMount::start();
    let dir = fs.path("node");
    write_keys_in_a_child(&dir, false);
    assert!(
        fs.stat("pending_pages") > 0,
        "sled's flush left its writes pending"
    );

    fs.crash();

    assert_eq!(
        surviving_keys(&dir),
        0,
        "sync_file_range made nothing durable"
    );
}

#[test]
fn keys_flushed_and_fdatasynced_survive_a_power_cut() {
    let fs = LazyMount::start();
    let dir = fs.path("node");
    write_keys_in_a_child(&dir, true);

    fs.crash();

    assert_eq!(surviving_keys(&dir), KEYS);
}

/// The child process of the tests above, not a test: inserts keys, `flush()`es, and with
/// the fdatasync flag set also `fdatasync`s the `db` file, then waits to be killed.
#[test]
#[ignore = "child process of the sled durability tests"]
fn sled_writer() {
    let dir = std::env::var_os(DIR_VAR).expect("run only as a child of the sled tests");
    let dir = Path::new(&dir);
    let db = open(dir);
    for k in 0..KEYS {
        db.insert(k.to_be_bytes(), vec![0xAB; 100]).expect("insert");
    }
    db.flush().expect("flush");
    if std::env::var(SYNC_VAR).as_deref() == Ok("1") {
        std::fs::File::open(dir.join("db"))
            .expect("open db file")
            .sync_data()
            .expect("fdatasync");
    }
    println!("{FLUSHED}");
    loop {
        std::thread::park();
    }
}

#[test]
fn after_a_torn_power_cut_sled_comes_back_with_a_prefix_of_its_flushed_keys() {
    let mut partial = 0;
    for seed in ["1", "2", "3", "4"] {
        let fs = LazyMount::start_with(&["--seed", seed]);
        let dir = fs.path("node");
        write_keys_in_a_child(&dir, false);

        fs.ok("crash-torn");

        let db = open(&dir);
        let present: Vec<u32> = (0..KEYS)
            .filter(|k| db.get(k.to_be_bytes()).expect("get").is_some())
            .collect();
        let prefix: Vec<u32> = (0..u32::try_from(present.len()).expect("small")).collect();
        assert_eq!(
            present, prefix,
            "seed {seed}: sled recovered keys with a gap"
        );
        if !present.is_empty() && present.len() < KEYS as usize {
            partial += 1;
        }
    }
    assert!(
        partial > 0,
        "no seed kept some but not all keys: the cut was not torn"
    );
}
