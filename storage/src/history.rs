//! The change-set history in tree `sm`: one value per log entry.
//!
//! Data format 2 keeps the records of every change set one log entry carried under one key:
//!
//! ```text
//! g/<log index, 8 bytes big-endian>    bincode Vec<HistoryRecord>, in the entry's order
//! ```
//!
//! A log entry of a hundred change sets (group commit) therefore costs one sled insert, and
//! trimming it one removal, instead of a hundred of each. That matters more than the count
//! suggests: history grows at the tree's right edge and is trimmed at its left, and sled splits
//! or merges a 16-entry leaf every few such operations, copying index nodes each time.
//!
//! Data format 1 (release 0.1.0, and 0.2.0 builds before this layout) kept one record per key,
//! `h/<index>[<position>]`.
//! [`migrate_v1`] regroups such a store once, in one atomic batch, when this build opens it.
//!
//! Readers page through the history newest first with a [`HistoryCursor`]: a log index *and*
//! a position among that entry's records. A log index alone cannot be a page boundary, since
//! group commit puts many change sets in one entry and a page (counted in records) may end
//! inside it; a cursor names the exact record the page ended on, so the next page starts right
//! after it and no record is skipped or served twice.
//!
//! They read a copy held in memory ([`HeldHistory`]), never the tree, which is only as current
//! as the checkpoint writer: the tree's history is what a restart loads.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sonraft_raft::codec;
use sonraft_raft::model::image::HistoryRecord;

use crate::error::Damaged;

/// Key prefix of history values (data format 2).
pub(crate) const PREFIX: &[u8] = b"g/";
/// Key prefix of data format 1's one-record values.
const V1_PREFIX: &[u8] = b"h/";

/// The key of the history value of log entry `index`.
pub(crate) fn key(index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + 8);
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The log index a history key names, if it is one.
pub(crate) fn index_of(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(PREFIX)?;
    <[u8; 8]>::try_from(rest).ok().map(u64::from_be_bytes)
}

/// Splits records (in log order) into the runs of each log entry: `(index, records)`.
pub(crate) fn by_entry(records: &[HistoryRecord]) -> impl Iterator<Item = (u64, &[HistoryRecord])> {
    records
        .chunk_by(|a, b| a.index == b.index)
        .map(|run| (run.first().map_or(0, |r| r.index), run))
}

/// The history as the tree holds it once the checkpoint writer has caught up, kept in memory:
/// each log entry with records, oldest first, with how many it holds and their encoded value.
///
/// Readers of the history (pages, `GET /watch`, a snapshot's or a backup's capture) read this
/// copy, never the tree: the tree is as far behind as the checkpoint writer, which after a
/// national import is a minute and a half of writing nine million keys, and a backup asked
/// for then waited 80 s for it. The copy costs the encoded records once more in memory (the
/// policy's `history_keep`, 100,000 by default, is ~20 MB), which every capture held
/// decoded anyway. Trimming removes exactly the keys it forgets, without scanning the tree.
#[derive(Debug, Default, Clone)]
pub struct HeldHistory {
    entries: VecDeque<HeldEntry>,
    records: u64,
}

/// One log entry's records, encoded as the tree holds them (shared: a capture's copy costs
/// one reference each).
#[derive(Debug, Clone)]
struct HeldEntry {
    index: u64,
    records: u32,
    value: Arc<[u8]>,
}

impl HeldHistory {
    /// Holds `value`, the `records` records of log entry `index` encoded; entries arrive in
    /// log order, one value each.
    pub(crate) fn hold(&mut self, index: u64, records: usize, value: Arc<[u8]>) {
        let records = u32::try_from(records).unwrap_or(u32::MAX);
        self.entries.push_back(HeldEntry {
            index,
            records,
            value,
        });
        self.records += u64::from(records);
    }

    /// Holds the records of `records` (in log order), one value per log entry.
    pub(crate) fn from_records(
        records: &[HistoryRecord],
    ) -> Result<HeldHistory, codec::CodecError> {
        let mut held = HeldHistory::default();
        for (index, run) in by_entry(records) {
            held.hold(index, run.len(), codec::encode(&run)?.into());
        }
        Ok(held)
    }

    /// Number of records held.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The log index of the oldest entry whose records are held.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Each entry's key and value as the tree holds them, oldest first.
    pub(crate) fn keys_and_values(&self) -> impl Iterator<Item = (Vec<u8>, &[u8])> {
        self.entries.iter().map(|e| (key(e.index), &e.value[..]))
    }

    /// Every record held, in log order.
    pub(crate) fn decode_all(&self) -> Result<Vec<HistoryRecord>, Damaged> {
        let mut out = Vec::with_capacity(usize::try_from(self.records).unwrap_or(0));
        for e in &self.entries {
            out.extend(decode(e.index, &e.value)?);
        }
        Ok(out)
    }

    /// Forgets the oldest entries while more than `keep` records are held, and returns their
    /// log indexes. Whole entries go, so the count may end below `keep`; the newest entry always
    /// stays, even when it alone holds more than `keep` records.
    pub(crate) fn trim(&mut self, keep: u64) -> Vec<u64> {
        let mut gone = Vec::new();
        while self.records > keep && self.entries.len() > 1 {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.records = self.records.saturating_sub(u64::from(e.records));
            gone.push(e.index);
        }
        gone
    }

    /// The entries a page of [`newest_first`] reads, newest first: those at or below `before`'s
    /// index, until they hold `limit` records ahead of it. Taken under the state's lock, decoded
    /// after it.
    pub(crate) fn page_before(&self, limit: usize, before: Option<HistoryCursor>) -> Page {
        let last = before.map_or(u64::MAX, |c| c.index);
        let end = self.entries.partition_point(|e| e.index <= last);
        let mut page = Page::default();
        let mut records = 0;
        for e in self.entries.range(..end).rev() {
            if records >= limit {
                break;
            }
            records += match before {
                Some(c) if c.index == e.index => e.records.min(c.position) as usize,
                _ => e.records as usize,
            };
            page.0.push((e.index, e.value.clone()));
        }
        page
    }

    /// The entries a page of [`oldest_first`] reads, oldest first: those from `from`'s index on,
    /// until they hold `limit` records from it.
    pub(crate) fn page_from(&self, limit: usize, from: HistoryCursor) -> Page {
        let start = self.entries.partition_point(|e| e.index < from.index);
        let mut page = Page::default();
        let mut records = 0;
        for e in self.entries.range(start..) {
            if records >= limit {
                break;
            }
            records += match e.index == from.index {
                true => e.records.saturating_sub(from.position) as usize,
                false => e.records as usize,
            };
            page.0.push((e.index, e.value.clone()));
        }
        page
    }
}

/// Log entries' encoded records, taken from a [`HeldHistory`] for one page.
#[derive(Debug, Default)]
pub(crate) struct Page(Vec<(u64, Arc<[u8]>)>);

/// Decodes the records of log entry `index`.
pub(crate) fn decode(index: u64, value: &[u8]) -> Result<Vec<HistoryRecord>, Damaged> {
    codec::decode(value).map_err(|e| Damaged::new(format!("history of log entry {index}"), e))
}

/// Where a record sits in the history: the log entry that carried it, and its place among that
/// entry's records (0 first). Records are ordered by `(index, position)`, oldest first.
///
/// As text (the `before` of `GET /image/history`, and the `cursor` of each record it answers)
/// it reads `INDEX.POSITION`; a bare `INDEX` means `INDEX.0`, i.e. everything before entry
/// `INDEX`, which is what `before=INDEX` always meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryCursor {
    pub index: u64,
    pub position: u32,
}

impl fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.index, self.position)
    }
}

/// Text that is neither `INDEX` nor `INDEX.POSITION`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a history cursor: use INDEX or INDEX.POSITION (the cursor of a record)")]
pub struct BadCursor(pub String);

impl FromStr for HistoryCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor(s.chars().take(40).collect());
        // Digits only: `u64::from_str` would also take a leading `+`.
        let number = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let (index, position) = match s.split_once('.') {
            Some((i, p)) if number(i) && number(p) => (i, p),
            None if number(s) => (s, "0"),
            _ => return Err(bad()),
        };
        Ok(HistoryCursor {
            index: index.parse().map_err(|_| bad())?,
            position: position.parse().map_err(|_| bad())?,
        })
    }
}

/// Up to `limit` records, newest first, each with its cursor: those strictly older than
/// `before` (all when `None`), read from `page` ([`HeldHistory::page_before`] with the same
/// `limit` and `before`). Passing the last record's cursor as the next `before` continues
/// exactly where a page ended, also in the middle of a log entry.
pub(crate) fn newest_first(
    page: Page,
    limit: usize,
    before: Option<HistoryCursor>,
) -> Result<Vec<(HistoryCursor, HistoryRecord)>, Damaged> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    // The entry `before` points into is read too (its records ahead of the position).
    for (index, value) in page.0 {
        let records = decode(index, &value)?;
        let end = match before {
            Some(c) if c.index == index => records.len().min(c.position as usize),
            _ => records.len(),
        };
        let room = limit - out.len();
        out.extend(
            records
                .into_iter()
                .take(end)
                .enumerate()
                .rev()
                .take(room)
                .map(|(position, r)| (cursor(index, position), r)),
        );
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The cursor of record `position` of entry `index`.
fn cursor(index: u64, position: usize) -> HistoryCursor {
    let position = u32::try_from(position).unwrap_or(u32::MAX);
    HistoryCursor { index, position }
}

/// Up to `limit` records, oldest first, each with its cursor: `from` itself and those after it,
/// read from `page` ([`HeldHistory::page_from`] with the same `limit` and `from`). The cursor
/// after the last one returned (`position + 1`) continues the listing, also inside an entry; a
/// position past its entry's end continues with the next entry.
pub(crate) fn oldest_first(
    page: Page,
    limit: usize,
    from: HistoryCursor,
) -> Result<Vec<(HistoryCursor, HistoryRecord)>, Damaged> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for (index, value) in page.0 {
        let records = decode(index, &value)?;
        let skip = if index == from.index {
            from.position as usize
        } else {
            0
        };
        let room = limit - out.len();
        out.extend(
            records
                .into_iter()
                .enumerate()
                .skip(skip)
                .take(room)
                .map(|(position, r)| (cursor(index, position), r)),
        );
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Regroups data format 1's one-record history values into one value per log entry, in one
/// atomic sled batch. Returns how many records moved; a store without format-1 records is left
/// as it is, so running it again after a crash is harmless. The caller makes the result
/// durable before it marks the directory as format 2.
pub(crate) fn migrate_v1(tree: &sled::Tree) -> Result<u64, Damaged> {
    let mut batch = sled::Batch::default();
    let mut run: Vec<HistoryRecord> = Vec::new();
    let mut moved = 0;
    let encode = |run: &[HistoryRecord]| {
        codec::encode(&run).map_err(|e| Damaged::new("history migration", e))
    };
    // v1 keys sort in log order: `h/<index>` before `h/<index><position>`.
    for item in tree.scan_prefix(V1_PREFIX) {
        let (k, v) = item.map_err(|e| Damaged::new("format-1 history", e))?;
        let record: HistoryRecord = codec::decode(&v).map_err(|e| {
            Damaged::new(
                format!("format-1 history key {:?}", String::from_utf8_lossy(&k)),
                e,
            )
        })?;
        if let Some(last) = run.last()
            && last.index != record.index
        {
            batch.insert(key(last.index), encode(&run)?);
            run.clear();
        }
        batch.remove(k);
        run.push(record);
        moved += 1;
    }
    if let Some(last) = run.last() {
        batch.insert(key(last.index), encode(&run)?);
    }
    if moved > 0 {
        tree.apply_batch(batch)
            .map_err(|e| Damaged::new("history migration", e))?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonraft_raft::changeset::{Function, Origin, Outcome};

    fn record(index: u64, reason: &str) -> HistoryRecord {
        HistoryRecord {
            index,
            log_time_ms: index * 10,
            proposed_at_ms: index * 10,
            origin: Origin {
                node: 1,
                function: Function::Operator,
            },
            reason: reason.into(),
            writes: Vec::new(),
            outcome: Outcome::Rejected {
                reason: "test".into(),
            },
        }
    }

    fn v1_key(index: u64, position: u32) -> Vec<u8> {
        let mut k = V1_PREFIX.to_vec();
        k.extend_from_slice(&index.to_be_bytes());
        if position > 0 {
            k.extend_from_slice(&position.to_be_bytes());
        }
        k
    }

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        (dir, tree)
    }

    #[test]
    fn trimming_drops_whole_entries_oldest_first() {
        let mut index = HeldHistory::default();
        index.hold(3, 2, Arc::from(&b""[..]));
        index.hold(4, 1, Arc::from(&b""[..]));
        index.hold(7, 5, Arc::from(&b""[..]));
        assert_eq!(index.len(), 8);
        assert_eq!(index.trim(6), vec![3], "8 > 6: entry 3 (2 records) goes");
        assert_eq!(index.trim(6), Vec::<u64>::new(), "6 is not more than 6");
        assert_eq!(
            index.trim(4),
            vec![4],
            "whole entries, even below the limit"
        );
        assert_eq!(
            index.len(),
            5,
            "the newest entry stays, though it holds more than 4"
        );
        assert_eq!(index.trim(0), Vec::<u64>::new());
    }

    /// Holds `records` (in log order) one value per entry, as the state machine does.
    fn held(records: &[HistoryRecord]) -> HeldHistory {
        HeldHistory::from_records(records).unwrap()
    }

    /// A page of records newest first, as the store reads one.
    fn backward(
        held: &HeldHistory,
        limit: usize,
        before: Option<HistoryCursor>,
    ) -> Result<Vec<(HistoryCursor, HistoryRecord)>, Damaged> {
        newest_first(held.page_before(limit, before), limit, before)
    }

    /// A page of records oldest first, as the store reads one.
    fn forward(
        held: &HeldHistory,
        limit: usize,
        from: HistoryCursor,
    ) -> Result<Vec<(HistoryCursor, HistoryRecord)>, Damaged> {
        oldest_first(held.page_from(limit, from), limit, from)
    }

    /// Every record the tree holds, in log order.
    fn stored(tree: &sled::Tree) -> Vec<HistoryRecord> {
        tree.scan_prefix(PREFIX)
            .flat_map(|item| {
                let (k, v) = item.unwrap();
                decode(index_of(&k).unwrap(), &v).unwrap()
            })
            .collect()
    }

    fn reasons(page: &[(HistoryCursor, HistoryRecord)]) -> Vec<&str> {
        page.iter().map(|(_, r)| r.reason.as_str()).collect()
    }

    fn cursor(index: u64, position: u32) -> HistoryCursor {
        HistoryCursor { index, position }
    }

    #[test]
    fn records_are_read_newest_first_across_and_within_entries_with_their_cursors() {
        let history = held(&[
            record(5, "a"),
            record(5, "b"),
            record(6, "c"),
            record(9, "d"),
        ]);
        let all = backward(&history, 10, None).unwrap();
        assert_eq!(reasons(&all), ["d", "c", "b", "a"]);
        let cursors: Vec<_> = all.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            cursors,
            [cursor(9, 0), cursor(6, 0), cursor(5, 1), cursor(5, 0)]
        );
        assert_eq!(reasons(&backward(&history, 2, None).unwrap()), ["d", "c"]);
        assert!(backward(&history, 0, None).unwrap().is_empty());
        let oldest_first: Vec<String> = history
            .decode_all()
            .unwrap()
            .into_iter()
            .map(|r| r.reason)
            .collect();
        assert_eq!(oldest_first, ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_bare_index_means_every_entry_below_it() {
        let history = held(&[
            record(5, "a"),
            record(5, "b"),
            record(6, "c"),
            record(9, "d"),
        ]);
        let before = |s: &str| Some(s.parse::<HistoryCursor>().unwrap());
        assert_eq!(
            reasons(&backward(&history, 3, before("9")).unwrap()),
            ["c", "b", "a"]
        );
        assert_eq!(
            reasons(&backward(&history, 10, before("6")).unwrap()),
            ["b", "a"]
        );
        assert_eq!(
            reasons(&backward(&history, 10, before("7")).unwrap()),
            ["c", "b", "a"],
            "an index without history"
        );
        assert_eq!(
            reasons(&backward(&history, 10, before("5.1")).unwrap()),
            ["a"],
            "inside an entry: the records ahead of the position"
        );
        assert_eq!(
            reasons(&backward(&history, 10, before("5.9")).unwrap()),
            ["b", "a"],
            "a position past the entry's end keeps the whole entry"
        );
        assert!(backward(&history, 10, before("5")).unwrap().is_empty());
        assert!(backward(&history, 10, before("0")).unwrap().is_empty());
    }

    /// The reproduction of the lost records: eight change sets group-committed into three
    /// entries, read three at a time. Paging by entry index skipped the rest of an entry a page
    /// ended in; paging by cursor must return every record exactly once, for any page size.
    #[test]
    fn paging_by_the_last_cursor_returns_every_record_exactly_once() {
        let mut records = Vec::new();
        for (index, count) in [(4, 1), (6, 2), (7, 1), (8, 4), (9, 1)] {
            for n in 0..count {
                records.push(record(index, &format!("r{index}-{n}")));
            }
        }
        let history = held(&records);
        let newest: Vec<&str> = records.iter().rev().map(|r| r.reason.as_str()).collect();
        for limit in 1..=records.len() + 1 {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let page = backward(&history, limit, before).unwrap();
                assert!(page.len() <= limit);
                seen.extend(reasons(&page).into_iter().map(str::to_string));
                match page.last() {
                    Some((c, _)) if page.len() == limit => before = Some(*c),
                    _ => break,
                }
            }
            assert_eq!(seen, newest, "pages of {limit}");
        }
    }

    /// What `GET /watch` relies on: reading forward from the cursor after the last record
    /// served returns every later record exactly once, for any page size.
    #[test]
    fn reading_forward_from_the_next_cursor_returns_every_record_exactly_once() {
        let mut records = Vec::new();
        for (index, count) in [(4, 1), (6, 2), (7, 1), (8, 4), (9, 1)] {
            for n in 0..count {
                records.push(record(index, &format!("r{index}-{n}")));
            }
        }
        let history = held(&records);
        let oldest: Vec<&str> = records.iter().map(|r| r.reason.as_str()).collect();
        for limit in 1..=records.len() + 1 {
            let mut seen = Vec::new();
            let mut from = cursor(0, 0);
            loop {
                let page = forward(&history, limit, from).unwrap();
                assert!(page.len() <= limit);
                seen.extend(reasons(&page).into_iter().map(str::to_string));
                match page.last() {
                    Some((c, _)) if page.len() == limit => {
                        from = cursor(c.index, c.position + 1);
                    }
                    _ => break,
                }
            }
            assert_eq!(seen, oldest, "pages of {limit}");
        }
        assert_eq!(
            reasons(&forward(&history, 10, cursor(8, 2)).unwrap()),
            ["r8-2", "r8-3", "r9-0"],
            "inside an entry"
        );
        assert_eq!(
            reasons(&forward(&history, 10, cursor(6, 7)).unwrap()),
            ["r7-0", "r8-0", "r8-1", "r8-2", "r8-3", "r9-0"],
            "past an entry's end"
        );
        assert_eq!(
            reasons(&forward(&history, 10, cursor(5, 0)).unwrap()),
            [
                "r6-0", "r6-1", "r7-0", "r8-0", "r8-1", "r8-2", "r8-3", "r9-0"
            ],
            "an index without history"
        );
        assert!(forward(&history, 10, cursor(10, 0)).unwrap().is_empty());
        assert!(forward(&history, 0, cursor(0, 0)).unwrap().is_empty());
    }

    #[test]
    fn cursors_read_as_index_dot_position_and_refuse_anything_else() {
        assert_eq!("12".parse::<HistoryCursor>().unwrap(), cursor(12, 0));
        assert_eq!("12.3".parse::<HistoryCursor>().unwrap(), cursor(12, 3));
        assert_eq!(cursor(12, 3).to_string(), "12.3");
        assert_eq!(
            cursor(u64::MAX, u32::MAX)
                .to_string()
                .parse::<HistoryCursor>()
                .unwrap(),
            cursor(u64::MAX, u32::MAX)
        );
        for bad in [
            "",
            ".",
            "12.",
            ".3",
            "+12",
            "-1",
            "12.3.4",
            "1e3",
            "x",
            "12.-1",
            "99999999999999999999",
            "1.4294967296",
        ] {
            assert!(bad.parse::<HistoryCursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn format_1_history_is_regrouped_once_and_reads_the_same() {
        let (_dir, tree) = tree();
        let old = [
            (4, 0, "a"),
            (4, 1, "b"),
            (4, 2, "c"),
            (8, 0, "d"),
            (9, 0, "e"),
            (9, 1, "f"),
        ];
        for (index, position, reason) in old {
            let r = codec::encode(&record(index, reason)).unwrap();
            tree.insert(v1_key(index, position), r).unwrap();
        }
        tree.insert(b"c/X", b"a cell".to_vec()).unwrap();

        assert_eq!(migrate_v1(&tree).unwrap(), 6);
        assert_eq!(
            tree.scan_prefix(V1_PREFIX).count(),
            0,
            "no format-1 keys left"
        );
        let keys: Vec<u64> = tree
            .scan_prefix(PREFIX)
            .keys()
            .map(|k| index_of(&k.unwrap()).unwrap())
            .collect();
        assert_eq!(keys, [4, 8, 9], "one value per entry");
        let all = stored(&tree);
        let reasons: Vec<_> = all.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["a", "b", "c", "d", "e", "f"], "log order kept");
        assert!(tree.get(b"c/X").unwrap().is_some(), "other keys untouched");

        assert_eq!(
            migrate_v1(&tree).unwrap(),
            0,
            "a second run changes nothing"
        );
        assert_eq!(stored(&tree), all);
    }

    #[test]
    fn a_damaged_history_value_is_an_error_naming_its_entry() {
        let mut history = HeldHistory::default();
        history.hold(12, 1, Arc::from(&b"\xff\xff\xff"[..]));
        let e = backward(&history, 10, None).unwrap_err().to_string();
        assert!(e.contains("log entry 12"), "{e}");
        let e = forward(&history, 10, cursor(0, 0)).unwrap_err().to_string();
        assert!(e.contains("log entry 12"), "{e}");
        assert!(history.decode_all().is_err());
    }
}
