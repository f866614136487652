//! `crash-torn`: a seeded random subset of pending pages reaches the disk, not a prefix.

mod common;

use common::{LazyMount, field, read, write_at, write_synced};

const PAGE: usize = 4096;
const PAGES: usize = 64;

/// Page `i` of the test files holds byte `i + 1` (never zero, so a lost page shows).
fn pages() -> Vec<u8> {
    (0..PAGES)
        .flat_map(|i| std::iter::repeat_n(u8::try_from(i + 1).expect("small"), PAGE))
        .collect()
}

/// On a fresh mount seeded with `seed`: one durable page of zeros-free data, then 64
/// pending pages over two files, then a torn cut. Returns both files after the cut and
/// the reply.
fn torn_run(seed: &str) -> (Vec<u8>, Vec<u8>, String) {
    let fs = LazyMount::start_with(&["--seed", seed]);
    write_synced(&fs.path("a"), 0, b"");
    write_at(&fs.path("a"), 0, &pages()[..PAGES / 2 * PAGE]);
    write_at(&fs.path("b"), 0, &pages()[PAGES / 2 * PAGE..]);
    let reply = fs.ok("crash-torn");
    (read(&fs.path("a")), read(&fs.path("b")), reply)
}

#[test]
fn a_torn_crash_keeps_a_seeded_subset_and_the_same_seed_keeps_the_same_subset() {
    let (a, b, reply) = torn_run("42");
    let (a_again, b_again, reply_again) = torn_run("42");

    assert_eq!(reply, reply_again);
    assert!(
        a == a_again && b == b_again,
        "same seed, same history: same survivors"
    );
    let kept = field(&reply, "kept_pages");
    let dropped = field(&reply, "dropped_pages");
    assert_eq!(kept + dropped, 64);
    assert!(kept > 0 && dropped > 0, "{reply}");
}

#[test]
fn a_torn_crash_leaves_holes_not_just_a_shorter_file() {
    let (a, b, _) = torn_run("42");
    let mut holes = 0;
    for file in [&a, &b] {
        let survived: Vec<bool> = file
            .chunks(PAGE)
            .map(|p| p.iter().all(|x| *x != 0))
            .collect();
        // A lost page before the last surviving one is a hole.
        let last = survived.iter().rposition(|s| *s).unwrap_or(0);
        holes += survived[..last].iter().filter(|s| !**s).count();
        for page in file.chunks(PAGE) {
            let first = page[0];
            assert!(page.iter().all(|x| *x == first), "a page is torn inside");
        }
    }
    assert!(holes > 0, "the kept pages were a prefix of each file");
}

#[test]
fn a_different_seed_keeps_a_different_subset() {
    let (a, b, _) = torn_run("42");
    let (a_other, b_other, _) = torn_run("7");
    assert!(a != a_other || b != b_other);
}

#[test]
fn synced_pages_survive_a_torn_crash_whatever_the_coins_say() {
    let fs = LazyMount::start_with(&["--seed", "3"]);
    write_synced(&fs.path("a"), 0, &pages());
    write_at(&fs.path("a"), 0, &[0xEE; 3 * PAGE]);

    fs.ok("crash-torn");

    let after = read(&fs.path("a"));
    assert_eq!(after.len(), pages().len());
    assert_eq!(after[3 * PAGE..], pages()[3 * PAGE..]);
    for (index, page) in after.chunks(PAGE).take(3).enumerate() {
        let old = &pages()[index * PAGE..(index + 1) * PAGE];
        assert!(
            page == old || page.iter().all(|x| *x == 0xEE),
            "page {index} is neither"
        );
    }
}
