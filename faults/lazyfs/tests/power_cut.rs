//! What survives `crash`: exactly the bytes some fsync made durable.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use common::{LazyMount, read, write_at, write_synced};

#[test]
fn fsynced_data_survives_a_crash() {
    let fs = LazyMount::start();
    write_synced(&fs.path("log"), 0, b"acknowledged");

    fs.crash();

    assert_eq!(read(&fs.path("log")), b"acknowledged");
}

#[test]
fn unsynced_data_is_gone_after_a_crash_and_the_file_has_its_old_size() {
    let fs = LazyMount::start();
    write_synced(&fs.path("log"), 0, b"durable");
    write_at(&fs.path("log"), 3, b"OVERWRITTEN AND EXTENDED");
    assert_eq!(read(&fs.path("log")), b"durOVERWRITTEN AND EXTENDED");

    fs.crash();

    assert_eq!(read(&fs.path("log")), b"durable");
    assert_eq!(std::fs::metadata(fs.path("log")).expect("stat").len(), 7);
}

#[test]
fn a_crash_drops_writes_after_one_files_last_fsync_and_keeps_another_files_synced_data() {
    let fs = LazyMount::start();
    write_synced(&fs.path("a"), 0, b"a synced");
    write_at(&fs.path("a"), 8, b" then not");
    write_synced(&fs.path("b"), 0, b"b synced");

    fs.crash();

    assert_eq!(read(&fs.path("a")), b"a synced");
    assert_eq!(read(&fs.path("b")), b"b synced");
}

#[test]
fn fdatasync_makes_data_durable() {
    let fs = LazyMount::start();
    let file = File::create(fs.path("wal")).expect("create");
    file.write_all_at(b"entry", 0).expect("write");
    file.sync_data().expect("fdatasync");

    fs.crash();

    assert_eq!(read(&fs.path("wal")), b"entry");
}

#[test]
fn fsync_through_a_read_only_descriptor_makes_the_files_writes_durable() {
    let fs = LazyMount::start();
    write_at(&fs.path("db"), 0, b"written by another descriptor");
    File::open(fs.path("db"))
        .expect("open")
        .sync_data()
        .expect("fdatasync");

    fs.crash();

    assert_eq!(read(&fs.path("db")), b"written by another descriptor");
}

#[test]
fn closing_a_file_does_not_make_its_data_durable() {
    let fs = LazyMount::start();
    write_synced(&fs.path("f"), 0, b"");
    write_at(&fs.path("f"), 0, b"closed but never synced");

    fs.crash();

    assert_eq!(read(&fs.path("f")), b"");
}

#[test]
fn a_new_file_written_without_fsync_comes_back_empty() {
    let fs = LazyMount::start();
    write_at(&fs.path("new"), 0, b"bytes");

    fs.crash();

    assert!(
        fs.path("new").exists(),
        "creation is metadata, durable at once"
    );
    assert_eq!(read(&fs.path("new")), b"");
}

/// The kernel must not keep dropped bytes in its page cache for a descriptor opened
/// before the cut. An overwrite in place is the hard case: the size does not change, so
/// nothing tells the kernel its cached pages are stale.
#[test]
fn a_descriptor_left_open_across_a_crash_reads_only_what_survived() {
    let fs = LazyMount::start();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(fs.path("f"))
        .expect("open");
    file.write_all_at(b"kept kept", 0).expect("write");
    file.sync_all().expect("fsync");
    file.write_all_at(b"LOST", 5).expect("overwrite in place");
    let mut seen = Vec::new();
    file.read_to_end(&mut seen).expect("read");
    assert_eq!(seen, b"kept LOST");

    fs.crash();

    seen.clear();
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.read_to_end(&mut seen).expect("read");
    assert_eq!(seen, b"kept kept");
}

#[test]
fn writes_through_an_o_dsync_descriptor_are_durable_on_return() {
    let fs = LazyMount::start();
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(nix::libc::O_DSYNC)
        .open(fs.path("sync"))
        .expect("open O_DSYNC");
    file.write_all_at(b"durable at once", 0).expect("write");

    fs.crash();

    assert_eq!(read(&fs.path("sync")), b"durable at once");
}

#[test]
fn only_synced_bytes_reach_the_backing_directory() {
    let fs = LazyMount::start();
    write_synced(&fs.path("f"), 0, b"synced");
    write_at(&fs.path("f"), 6, b" pending");

    assert_eq!(read(&fs.on_disk("f")), b"synced");
    assert_eq!(fs.stat("pending_files"), 1);
}
