//! Names and sizes act on the backing directory at once; pending bytes follow them.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;

use common::{LazyMount, read, write_at, write_synced};

#[test]
fn a_rename_is_durable_at_once_and_the_pending_bytes_move_with_the_file() {
    let fs = LazyMount::start();
    write_synced(&fs.path("tmp"), 0, b"synced");
    write_at(&fs.path("tmp"), 6, b" pending");

    fs::rename(fs.path("tmp"), fs.path("final")).expect("rename");
    assert_eq!(read(&fs.path("final")), b"synced pending");
    fs.crash();

    assert!(!fs.path("tmp").exists());
    assert_eq!(read(&fs.path("final")), b"synced");
}

#[test]
fn renaming_over_a_file_replaces_it_and_its_pending_bytes() {
    let fs = LazyMount::start();
    write_synced(&fs.path("old"), 0, b"old contents");
    write_at(&fs.path("old"), 0, b"OLD PENDING!");
    write_synced(&fs.path("new"), 0, b"new");

    fs::rename(fs.path("new"), fs.path("old")).expect("rename");

    assert_eq!(read(&fs.path("old")), b"new");
    assert_eq!(
        fs.stat("pending_files"),
        0,
        "the replaced file's pages are dropped"
    );
}

#[test]
fn an_unlinked_file_is_gone_with_its_pending_bytes() {
    let fs = LazyMount::start();
    write_at(&fs.path("doomed"), 0, b"pending");

    fs::remove_file(fs.path("doomed")).expect("unlink");

    assert!(!fs.path("doomed").exists());
    assert!(!fs.on_disk("doomed").exists());
    assert_eq!(fs.stat("pending_files"), 0);
}

#[test]
fn an_unlinked_file_still_open_keeps_reading_and_writing() {
    let fs = LazyMount::start();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(fs.path("anon"))
        .expect("open");
    fs::remove_file(fs.path("anon")).expect("unlink");

    file.write_all_at(b"still here", 0).expect("write");
    let mut buf = [0; 10];
    file.read_exact_at(&mut buf, 0).expect("read");

    assert_eq!(&buf, b"still here");
    assert_eq!(file.metadata().expect("fstat").len(), 10);
}

#[test]
fn truncation_cuts_pending_bytes_and_is_durable_at_once() {
    let fs = LazyMount::start();
    write_synced(&fs.path("f"), 0, b"0123456789");
    write_at(&fs.path("f"), 10, b"abcdefghij");

    OpenOptions::new()
        .write(true)
        .open(fs.path("f"))
        .expect("open")
        .set_len(4)
        .expect("truncate");
    assert_eq!(read(&fs.path("f")), b"0123");
    // Growing again must show zeros, not the cut bytes.
    OpenOptions::new()
        .write(true)
        .open(fs.path("f"))
        .expect("open")
        .set_len(12)
        .expect("extend");
    assert_eq!(read(&fs.path("f")), b"0123\0\0\0\0\0\0\0\0");

    fs.crash();

    assert_eq!(read(&fs.path("f")), b"0123\0\0\0\0\0\0\0\0");
}

#[test]
fn opening_with_o_trunc_empties_the_file() {
    let fs = LazyMount::start();
    write_synced(&fs.path("f"), 0, b"synced");
    write_at(&fs.path("f"), 6, b" and pending");

    fs::write(fs.path("f"), b"fresh").expect("write with O_TRUNC");

    assert_eq!(read(&fs.path("f")), b"fresh");
    fs.crash();
    assert_eq!(read(&fs.path("f")), b"");
}

#[test]
fn directories_symlinks_and_hard_links_pass_through() {
    let fs = LazyMount::start();
    fs::create_dir(fs.path("d")).expect("mkdir");
    write_synced(&fs.path("d/x"), 0, b"x");
    std::os::unix::fs::symlink("d/x", fs.path("s")).expect("symlink");
    fs::hard_link(fs.path("d/x"), fs.path("h")).expect("link");

    let mut names: Vec<String> = fs::read_dir(fs.mount_point())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "h", "s"]);
    assert_eq!(
        fs::read_link(fs.path("s")).expect("readlink").to_str(),
        Some("d/x")
    );
    assert_eq!(read(&fs.path("s")), b"x");
    assert_eq!(read(&fs.path("h")), b"x");

    fs::rename(fs.path("d"), fs.path("e")).expect("rename dir");
    assert_eq!(read(&fs.path("e/x")), b"x");
    fs::remove_file(fs.path("e/x")).expect("unlink");
    fs::remove_dir(fs.path("e")).expect("rmdir");
    assert!(!fs.on_disk("e").exists());
}

#[test]
fn pending_bytes_follow_a_file_whose_directory_is_renamed() {
    let fs = LazyMount::start();
    fs::create_dir(fs.path("d")).expect("mkdir");
    write_at(&fs.path("d/f"), 0, b"pending");

    fs::rename(fs.path("d"), fs.path("e")).expect("rename dir");

    assert_eq!(read(&fs.path("e/f")), b"pending");
    File::open(fs.path("e/f"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    assert_eq!(read(&fs.on_disk("e/f")), b"pending");
}
