use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;

use proptest::prelude::*;

use super::{DirtyFile, PAGE_SIZE};

/// A dirty file over a fresh backing file holding `durable`.
fn over(durable: &[u8]) -> (tempfile::NamedTempFile, DirtyFile) {
    let mut disk = tempfile::NamedTempFile::new().expect("temp file");
    disk.write_all(durable).expect("seed backing file");
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk.path())
        .expect("reopen backing file");
    let dirty = DirtyFile::open(Arc::new(backing), disk.path().to_path_buf()).expect("open");
    (disk, dirty)
}

fn on_disk(disk: &tempfile::NamedTempFile) -> Vec<u8> {
    std::fs::read(disk.path()).expect("read backing file")
}

#[test]
fn a_write_is_read_back_but_does_not_reach_the_backing_file() {
    let (disk, mut dirty) = over(b"durable");
    let mut clock = 0;
    dirty.write(2, b"XY", &mut clock).expect("write");
    assert_eq!(dirty.read(0, 100).expect("read"), b"duXYble");
    assert_eq!(on_disk(&disk), b"durable");
}

#[test]
fn a_write_past_the_end_grows_the_file_and_leaves_a_zero_hole() {
    let (_disk, mut dirty) = over(b"ab");
    let mut clock = 0;
    dirty.write(PAGE_SIZE + 1, b"z", &mut clock).expect("write");
    assert_eq!(dirty.size(), PAGE_SIZE + 2);
    let bytes = dirty.read(0, 10_000).expect("read");
    assert_eq!(bytes.len(), usize::try_from(PAGE_SIZE + 2).expect("small"));
    assert_eq!(&bytes[..2], b"ab");
    assert!(bytes[2..bytes.len() - 1].iter().all(|b| *b == 0));
    assert_eq!(bytes.last(), Some(&b'z'));
}

#[test]
fn writing_back_everything_makes_the_backing_file_equal_the_view() {
    let (disk, mut dirty) = over(&[7; 5000]);
    let mut clock = 0;
    dirty.write(4000, &[1; 300], &mut clock).expect("write");
    dirty.write(9000, &[2; 10], &mut clock).expect("write");
    let view = dirty.read(0, 20_000).expect("read");
    assert_eq!(dirty.write_back(|_| true).expect("write back"), 3);
    assert_eq!(on_disk(&disk), view);
    assert_eq!(dirty.page_count(), 0);
}

#[test]
fn truncation_drops_pending_bytes_past_the_new_end() {
    let (disk, mut dirty) = over(b"");
    let mut clock = 0;
    dirty.write(0, &[9; 10_000], &mut clock).expect("write");
    disk.as_file().set_len(100).expect("cut backing file");
    dirty.truncate(100);
    // Grow again: the cut bytes must come back as zeros, not as the old pending 9s.
    disk.as_file().set_len(8192).expect("grow backing file");
    dirty.truncate(8192);
    let bytes = dirty.read(0, 10_000).expect("read");
    assert_eq!(bytes.len(), 8192);
    assert!(bytes[..100].iter().all(|b| *b == 9));
    assert!(bytes[100..].iter().all(|b| *b == 0));
    assert_eq!(dirty.page_count(), 1);
}

#[test]
fn the_first_dirtied_page_is_the_oldest() {
    let (_disk, mut dirty) = over(b"");
    let mut clock = 10;
    dirty
        .write(3 * PAGE_SIZE, b"late", &mut clock)
        .expect("write");
    dirty.write(0, b"later", &mut clock).expect("write");
    dirty
        .write(3 * PAGE_SIZE, b"again", &mut clock)
        .expect("write");
    let mut ages: Vec<(u64, u64)> = dirty.page_ages().collect();
    ages.sort();
    assert_eq!(ages, vec![(10, 3), (11, 0)]);
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: usize, byte: u8 },
    Truncate { size: u64 },
    WriteBack { keep_even_pages: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..40_000u64, 0..9_000usize, any::<u8>())
            .prop_map(|(offset, len, byte)| Op::Write { offset, len, byte }),
        1 => (0..40_000u64).prop_map(|size| Op::Truncate { size }),
        1 => any::<bool>().prop_map(|keep_even_pages| Op::WriteBack { keep_even_pages }),
    ]
}

fn apply_to_model(model: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, len, byte } => {
            let offset = usize::try_from(*offset).expect("small");
            if *len > 0 {
                if model.len() < offset + len {
                    model.resize(offset + len, 0);
                }
                model[offset..offset + len].fill(*byte);
            }
        }
        Op::Truncate { size } => model.resize(usize::try_from(*size).expect("small"), 0),
        Op::WriteBack { .. } => {}
    }
}

proptest! {
    /// Whatever mix of writes, truncations and partial write-backs, the view through the
    /// mount is the file a plain POSIX file would hold, and after writing back the rest
    /// the backing file holds exactly that.
    #[test]
    fn the_view_always_matches_a_plain_file(
        durable in proptest::collection::vec(any::<u8>(), 0..12_000),
        ops in proptest::collection::vec(op(), 1..25),
    ) {
        let (disk, mut dirty) = over(&durable);
        let backing: &File = disk.as_file();
        let mut model = durable.clone();
        let mut clock = 0;
        for op in &ops {
            match op {
                Op::Write { offset, len, byte } => {
                    dirty.write(*offset, &vec![*byte; *len], &mut clock).expect("write");
                }
                Op::Truncate { size } => {
                    backing.set_len(*size).expect("cut backing file");
                    dirty.truncate(*size);
                }
                Op::WriteBack { keep_even_pages } => {
                    let parity = u64::from(*keep_even_pages);
                    dirty.write_back(|index| index % 2 == parity).expect("write back");
                    prop_assert!(on_disk(&disk).len() as u64 <= dirty.size());
                }
            }
            apply_to_model(&mut model, op);
            prop_assert_eq!(dirty.size(), model.len() as u64);
            prop_assert_eq!(&dirty.read(0, 100_000).expect("read"), &model);
        }
        dirty.write_back(|_| true).expect("write back");
        prop_assert_eq!(on_disk(&disk), model);
    }
}
