use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Cut, FileKey, PageCache};
use crate::dirty_file::PAGE_SIZE;

struct Disk {
    dir: tempfile::TempDir,
}

impl Disk {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Creates (or reopens) `name` read-write, as the FUSE layer would for a writer.
    fn open(&self, name: &str) -> (FileKey, Arc<File>, PathBuf) {
        let path = self.dir.path().join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("open backing file");
        let key = FileKey::of(&file.metadata().expect("stat"));
        (key, Arc::new(file), path)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).expect("read backing file")
    }
}

fn write(
    cache: &mut PageCache,
    (key, file, path): &(FileKey, Arc<File>, PathBuf),
    at: u64,
    data: &[u8],
) {
    cache.write(*key, file, path, at, data).expect("write");
}

#[test]
fn a_clean_cut_loses_every_unsynced_page_and_keeps_synced_ones() {
    let disk = Disk::new();
    let (a, b) = (disk.open("a"), disk.open("b"));
    let mut cache = PageCache::new(1 << 30, 0);
    write(&mut cache, &a, 0, b"synced");
    cache.sync(a.0).expect("sync");
    write(&mut cache, &a, 6, b" lost");
    write(&mut cache, &b, 0, b"lost too");

    let report = cache.crash(Cut::Clean);

    assert_eq!(disk.read("a"), b"synced");
    assert_eq!(disk.read("b"), b"");
    assert_eq!(
        (report.files, report.dropped_pages, report.kept_pages),
        (2, 2, 0)
    );
    assert_eq!(cache.stats().pending_pages, 0);
}

/// Writes 64 pages to two files and tears a cut; returns what survived.
fn torn_run(seed: u64) -> (Vec<u8>, Vec<u8>, usize) {
    let disk = Disk::new();
    let (a, b) = (disk.open("a"), disk.open("b"));
    let mut cache = PageCache::new(1 << 30, seed);
    for page in 0..32u8 {
        write(
            &mut cache,
            &a,
            u64::from(page) * PAGE_SIZE,
            &[page + 1; 4096],
        );
        write(
            &mut cache,
            &b,
            u64::from(page) * PAGE_SIZE,
            &[page + 101; 4096],
        );
    }
    let report = cache.crash(Cut::Torn);
    assert_eq!(report.kept_pages + report.dropped_pages, 64);
    (disk.read("a"), disk.read("b"), report.kept_pages)
}

#[test]
fn a_torn_cut_keeps_a_seeded_subset_of_pages() {
    let (a1, b1, kept1) = torn_run(42);
    let (a2, b2, kept2) = torn_run(42);
    assert_eq!(
        (&a1, &b1, kept1),
        (&a2, &b2, kept2),
        "same seed, same survivors"
    );
    assert!(0 < kept1 && kept1 < 64, "kept {kept1} of 64 pages");
    let (a3, b3, _) = torn_run(43);
    assert!((a1, b1) != (a3, b3), "another seed keeps another subset");
}

#[test]
fn a_torn_cut_keeps_whole_pages_with_their_latest_bytes_or_nothing() {
    let (a, _, _) = torn_run(7);
    for (index, page) in a.chunks(4096).enumerate() {
        let written = u8::try_from(index + 1).expect("small");
        assert!(
            page.iter().all(|b| *b == written) || page.iter().all(|b| *b == 0),
            "page {index} is torn inside"
        );
    }
}

#[test]
fn going_over_the_cap_writes_back_the_oldest_pages() {
    let disk = Disk::new();
    let (old, new) = (disk.open("old"), disk.open("new"));
    let mut cache = PageCache::new(8 * PAGE_SIZE, 0);
    write(&mut cache, &old, 0, &[1; 4 * 4096]);
    write(&mut cache, &new, 0, &[2; 5 * 4096]);

    // 9 pages > 8: down to 6, the 3 oldest (all from `old`) reach the backing file.
    let stats = cache.stats();
    assert_eq!((stats.pending_pages, stats.written_back_pages), (6, 3));
    assert_eq!(disk.read("old"), vec![1; 3 * 4096]);
    cache.crash(Cut::Clean);
    assert_eq!(
        disk.read("old"),
        vec![1; 3 * 4096],
        "written-back pages survive a cut"
    );
    assert_eq!(disk.read("new"), b"");
}

#[test]
fn syncing_one_file_leaves_the_others_pending() {
    let disk = Disk::new();
    let (a, b) = (disk.open("a"), disk.open("b"));
    let mut cache = PageCache::new(1 << 30, 0);
    write(&mut cache, &a, 0, b"aaa");
    write(&mut cache, &b, 0, b"bbb");
    cache.sync(a.0).expect("sync");
    assert_eq!(disk.read("a"), b"aaa");
    assert_eq!(disk.read("b"), b"");
    assert_eq!(cache.size(b.0), Some(3));
    assert_eq!(
        cache.size(a.0),
        None,
        "nothing pending: the backing file is the file"
    );
}

#[test]
fn reads_of_a_file_without_pending_pages_come_from_the_backing_file() {
    let disk = Disk::new();
    let a = disk.open("a");
    std::fs::write(&a.2, b"on disk").expect("seed");
    let cache = PageCache::new(1 << 30, 0);
    assert_eq!(cache.read(a.0, &a.1, 3, 100).expect("read"), b"disk");
    assert_eq!(cache.read(a.0, &a.1, 100, 10).expect("read"), b"");
}

#[test]
fn a_renamed_directory_moves_the_paths_of_its_files() {
    let disk = Disk::new();
    std::fs::create_dir(disk.dir.path().join("d")).expect("mkdir");
    let a = disk.open("d/a");
    let mut cache = PageCache::new(1 << 30, 0);
    write(&mut cache, &a, 0, b"x");
    cache.renamed(&disk.dir.path().join("d"), &disk.dir.path().join("e"));
    let path = cache.files.get(&a.0).map(|d| d.path().to_path_buf());
    assert_eq!(path.as_deref(), Some(disk.dir.path().join("e/a").as_path()));
    assert!(
        !Path::new(&disk.dir.path().join("e/a")).exists(),
        "only the record moved"
    );
}

#[test]
fn an_unlinked_file_forgets_its_pending_pages() {
    let disk = Disk::new();
    let (a, b) = (disk.open("a"), disk.open("b"));
    let mut cache = PageCache::new(1 << 30, 0);
    write(&mut cache, &a, 0, b"x");
    write(&mut cache, &b, 0, b"y");
    std::fs::remove_file(&a.2).expect("unlink");
    cache.forget_if_unlinked(a.0);
    cache.forget_if_unlinked(b.0);
    assert_eq!(cache.stats().pending_files, 1);
}
