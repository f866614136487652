//! Reads through the mount see pending bytes over durable ones, and sizes include them.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{LazyMount, read, write_at, write_synced};

#[test]
fn a_read_spanning_pending_and_durable_bytes_sees_both() {
    let fs = LazyMount::start();
    let durable: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    write_synced(&fs.path("f"), 0, &durable);
    write_at(&fs.path("f"), 4000, &[0xAA; 200]); // across the first page boundary
    write_at(&fs.path("f"), 10_000, &[0xBB; 10]); // inside a page

    let file = OpenOptions::new()
        .read(true)
        .open(fs.path("f"))
        .expect("open");
    let mut buf = vec![0; 12_000];
    file.read_exact_at(&mut buf, 3000).expect("read");

    let mut expected = durable[3000..15_000].to_vec();
    expected[1000..1200].fill(0xAA);
    expected[7000..7010].fill(0xBB);
    assert_eq!(buf, expected);
}

#[test]
fn a_write_past_the_end_grows_the_size_and_reads_a_zero_hole() {
    let fs = LazyMount::start();
    write_synced(&fs.path("f"), 0, b"head");
    write_at(&fs.path("f"), 9000, b"tail");

    assert_eq!(std::fs::metadata(fs.path("f")).expect("stat").len(), 9004);
    let bytes = read(&fs.path("f"));
    assert_eq!(&bytes[..4], b"head");
    assert!(bytes[4..9000].iter().all(|b| *b == 0));
    assert_eq!(&bytes[9000..], b"tail");
}

#[test]
fn a_large_write_reads_back_whole() {
    let fs = LazyMount::start();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    write_at(&fs.path("segment"), 0, &data);

    assert_eq!(read(&fs.path("segment")), data);
}
