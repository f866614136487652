//! Raw counters on disk: one file per closed period, so that retention and the disk cap free
//! space by deleting whole files.
//!
//! Why not sled (where raw counters lived up to 0.2.0): a period's chunk of reports is a few
//! megabytes, and sled 0.34 writes every value larger than a quarter of its segment (128 KiB)
//! to a file of its own under `blobs/`. It deletes such a blob only when the page pointing to
//! it is replaced by a page of several fragments; a page that is exactly one blob is replaced
//! without scheduling the old blob's removal (`SegmentAccountant::mark_replace`, the
//! `schedule_rm_blob` test, which is meant for a blob merely moved by segment cleaning). So
//! every removed chunk stayed on disk: about 3.3 MB per period at a site of a thousand cells,
//! 160 MB a minute at a 500 ms period, whatever the retention. Files per period also keep the
//! counters out of any cache in the node's memory (the kernel's page cache holds them instead).
//!
//! Layout: `<dir>/<period end ms, 20 digits>.period`, written to `<name>.tmp` and renamed, so
//! that a listed name is a complete write (after a power loss its pages may still be lost: the
//! checksum tells, and such a file is skipped when read). Files are not synced: raw counters
//! are this node's own working data, rebuilt by the antennas' next periods, and syncing
//! megabytes per period would compete with the Raft log's syncs for the disk.
//!
//! Format 1 of a period file (all integers big-endian):
//!
//! ```text
//! magic      "SONRAWC" (7 bytes), format u8 (= 1)
//! period     end ms u64, period ms u32, report count u32
//! reports    each: cell id length u16, cell id (utf-8), body length u32, REPORT frame body
//! checksum   FNV-1a 64 of every byte above, u64
//! ```
//!
//! Bodies are kept as the antenna sent them, so that a stored period can always be decoded
//! with the protocol version it names.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::counters::RawReport;

/// First bytes of a period file.
pub const MAGIC: &[u8; 7] = b"SONRAWC";
/// The period file format this build writes (and the only one it reads).
pub const FORMAT: u8 = 1;
/// File name suffix of a complete period file.
const SUFFIX: &str = ".period";
/// File name suffix of a period file being written.
const TMP_SUFFIX: &str = ".period.tmp";
/// Header bytes before the reports: magic, format, end, period, count.
const HEADER_LEN: usize = 7 + 1 + 8 + 4 + 4;
/// Shortest time between two log lines about periods dropped for the disk cap.
const CAP_LOG_EVERY: Duration = Duration::from_secs(60);

/// How much raw counter history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The newest this many periods.
    Periods(u64),
    /// The periods that ended less than this long before the newest one.
    Duration(Duration),
}

impl Default for Retention {
    /// 96 periods: a day at the common 15-minute period.
    fn default() -> Self {
        Retention::Periods(96)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Periods(n) => write!(f, "{n} periods"),
            Retention::Duration(d) => write!(f, "{} s", d.as_secs()),
        }
    }
}

/// Why a retention setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "raw counter retention {0:?} is neither a number of periods (e.g. 96) nor a duration (e.g. 90s, 30m, 24h, 7d) above zero"
)]
pub struct BadRetention(pub String);

impl std::str::FromStr for Retention {
    type Err = BadRetention;

    /// `96` (periods), or a number with a unit: `s`, `m`, `h` or `d`. Zero is refused: a node
    /// must keep at least the period it just closed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRetention(s.to_string());
        let t = s.trim();
        let unit_at = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(unit_at);
        let n: u64 = number.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        let secs = match unit.trim() {
            "" => return Ok(Retention::Periods(n)),
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        n.checked_mul(secs)
            .map(|s| Retention::Duration(Duration::from_secs(s)))
            .ok_or_else(bad)
    }
}

/// The limits of the raw counter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLimits {
    pub retention: Retention,
    /// Most bytes of period files kept; past it the oldest periods go first, even inside the
    /// retention. The newest period is always kept.
    pub disk_cap_bytes: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            retention: Retention::default(),
            disk_cap_bytes: 2 << 30,
        }
    }
}

/// Why the raw counter store failed.
#[derive(Debug, thiserror::Error)]
pub enum RawStoreError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("raw counter file {} is damaged or not understood: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
}

/// One stored period, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPeriod {
    pub end_ms: u64,
    pub period_ms: u32,
    pub reports: Vec<(String, Bytes)>,
}

/// What one [`PeriodFiles::write`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Periods removed for being older than the retention.
    pub expired: u64,
    /// Periods removed, inside the retention, to stay under the disk cap.
    pub over_cap: u64,
}

struct Index {
    /// Period end ms -> file size, of every complete period file.
    files: BTreeMap<u64, u64>,
    bytes: u64,
    /// Periods dropped for the cap since the last log line about it, and when that line was.
    cap_dropped_unlogged: u64,
    cap_logged_at: Option<Instant>,
}

/// The period files of one node.
pub struct PeriodFiles {
    dir: PathBuf,
    limits: RawLimits,
    index: Mutex<Index>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RawStoreError {
    let path = path.to_path_buf();
    move |source| RawStoreError::Io { what, path, source }
}

/// FNV-1a 64: enough to tell a torn or zeroed file from a complete one, with no dependency.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The period end a file name names, if it is a complete period file.
fn end_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Files sled 0.34 keeps in a database directory: what the raw counter store of releases up to
/// 0.2.0 left in `counters/`.
const SLED_FILES: [&str; 2] = ["conf", "db"];

impl PeriodFiles {
    /// Opens (creating) the store in `dir`: indexes the period files there, removes unfinished
    /// writes, and removes the sled database of the old layout if it finds one (raw counters
    /// are working data; the old layout's leaked blobs can fill a disk).
    pub fn open(dir: &Path, limits: RawLimits) -> Result<PeriodFiles, RawStoreError> {
        std::fs::create_dir_all(dir).map_err(io("cannot create the raw counter directory", dir))?;
        remove_old_layout(dir)?;
        let mut files = BTreeMap::new();
        let mut bytes = 0;
        let listing = std::fs::read_dir(dir).map_err(io("cannot list", dir))?;
        for entry in listing {
            let entry = entry.map_err(io("cannot list", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io("cannot remove", &path))?;
            } else if let Some(end) = end_of(&name) {
                let len = entry
                    .metadata()
                    .map_err(io("cannot stat", &entry.path()))?
                    .len();
                files.insert(end, len);
                bytes += len;
            }
        }
        let store = PeriodFiles {
            dir: dir.to_path_buf(),
            limits,
            index: Mutex::new(Index {
                files,
                bytes,
                cap_dropped_unlogged: 0,
                cap_logged_at: None,
            }),
        };
        // A smaller retention or cap than the last run had takes effect at once.
        store.prune()?;
        Ok(store)
    }

    fn path(&self, end_ms: u64) -> PathBuf {
        self.dir.join(format!("{end_ms:020}{SUFFIX}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores one closed period (replacing a stored period with the same end), then removes
    /// what is past the retention and, oldest first, what is over the disk cap.
    pub fn write(
        &self,
        end_ms: u64,
        period_ms: u32,
        reports: &[RawReport],
    ) -> Result<Pruned, RawStoreError> {
        let path = self.path(end_ms);
        let tmp = self.dir.join(format!("{end_ms:020}{TMP_SUFFIX}"));
        let len = write_file(&tmp, end_ms, period_ms, reports)?;
        std::fs::rename(&tmp, &path).map_err(io("cannot rename into place", &path))?;
        {
            let mut index = self.lock();
            let old = index.files.insert(end_ms, len).unwrap_or(0);
            index.bytes = index.bytes - old + len;
        }
        self.prune()
    }

    /// Applies the retention, then the cap.
    fn prune(&self) -> Result<Pruned, RawStoreError> {
        let mut index = self.lock();
        let mut pruned = Pruned::default();
        let Some(&newest) = index.files.keys().next_back() else {
            return Ok(pruned);
        };
        let expired: Vec<u64> = match self.limits.retention {
            Retention::Periods(n) => {
                let excess = index.files.len().saturating_sub(n.max(1) as usize);
                index.files.keys().take(excess).copied().collect()
            }
            Retention::Duration(d) => {
                let cutoff = newest.saturating_sub(d.as_millis() as u64);
                index.files.range(..=cutoff).map(|(k, _)| *k).collect()
            }
        };
        for end in expired {
            if end != newest {
                self.remove(&mut index, end)?;
                pruned.expired += 1;
            }
        }
        let mut dropped = Vec::new();
        while index.bytes > self.limits.disk_cap_bytes && index.files.len() > 1 {
            let Some(&oldest) = index.files.keys().next() else {
                break;
            };
            self.remove(&mut index, oldest)?;
            dropped.push(oldest);
        }
        pruned.over_cap = dropped.len() as u64;
        metrics::gauge!("sonraft_raw_measurement_bytes").set(index.bytes as f64);
        metrics::gauge!("sonraft_raw_measurement_periods").set(index.files.len() as f64);
        if pruned.expired > 0 {
            metrics::counter!("sonraft_raw_measurement_periods_dropped_total", "reason" => "retention")
                .increment(pruned.expired);
        }
        if !dropped.is_empty() {
            metrics::counter!("sonraft_raw_measurement_periods_dropped_total", "reason" => "disk_cap")
                .increment(pruned.over_cap);
            index.cap_dropped_unlogged += pruned.over_cap;
            // One line a minute at most: at a short period the cap can bite every period.
            if index
                .cap_logged_at
                .is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY)
            {
                let kept_from = index.files.keys().next().copied().unwrap_or(newest);
                tracing::warn!(
                    dropped = index.cap_dropped_unlogged,
                    last_dropped_end_ms = dropped.last().copied().unwrap_or(0),
                    kept_periods = index.files.len(),
                    kept_bytes = index.bytes,
                    kept_from_end_ms = kept_from,
                    cap_bytes = self.limits.disk_cap_bytes,
                    retention = %self.limits.retention,
                    "raw counters over the disk cap: dropped the oldest periods inside the retention; raise --raw-counter-disk-cap or shorten --raw-counter-retention"
                );
                index.cap_dropped_unlogged = 0;
                index.cap_logged_at = Some(Instant::now());
            }
        }
        Ok(pruned)
    }

    fn remove(&self, index: &mut Index, end_ms: u64) -> Result<(), RawStoreError> {
        let path = self.path(end_ms);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &path)(e)),
        }
        if let Some(len) = index.files.remove(&end_ms) {
            index.bytes -= len;
        }
        Ok(())
    }

    /// The ends of the stored periods, oldest first.
    pub fn periods(&self) -> Vec<u64> {
        self.lock().files.keys().copied().collect()
    }

    /// Bytes of the stored period files.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Reads the stored period that ended at `end_ms`.
    pub fn read(&self, end_ms: u64) -> Result<StoredPeriod, RawStoreError> {
        let path = self.path(end_ms);
        let bytes = std::fs::read(&path).map_err(io("cannot read", &path))?;
        decode_file(&bytes).map_err(|reason| RawStoreError::Damaged { path, reason })
    }
}

/// Writes the file of one period to `path`; returns its length.
fn write_file(
    path: &Path,
    end_ms: u64,
    period_ms: u32,
    reports: &[RawReport],
) -> Result<u64, RawStoreError> {
    let file = std::fs::File::create(path).map_err(io("cannot create", path))?;
    let mut out = std::io::BufWriter::with_capacity(64 << 10, file);
    let mut sum = Fnv::new();
    let mut len = 0u64;
    let mut put = |bytes: &[u8]| -> std::io::Result<()> {
        sum.update(bytes);
        len += bytes.len() as u64;
        out.write_all(bytes)
    };
    let count = u32::try_from(reports.len()).unwrap_or(u32::MAX);
    let result = (|| {
        put(MAGIC)?;
        put(&[FORMAT])?;
        put(&end_ms.to_be_bytes())?;
        put(&period_ms.to_be_bytes())?;
        put(&count.to_be_bytes())?;
        for (cell, body) in reports.iter().take(count as usize) {
            // Cell ids and bodies were validated on arrival (ids of at most 64 bytes, bodies of
            // at most a frame); a longer one is cut, never wrapped, so the file stays readable.
            let id = &cell.as_bytes()[..cell.len().min(usize::from(u16::MAX))];
            let body = &body[..body.len().min(u32::MAX as usize)];
            put(&(id.len() as u16).to_be_bytes())?;
            put(id)?;
            put(&(body.len() as u32).to_be_bytes())?;
            put(body)?;
        }
        Ok(())
    })();
    result.map_err(io("cannot write", path))?;
    let checksum = sum.0.to_be_bytes();
    out.write_all(&checksum)
        .and_then(|()| out.flush())
        .map_err(io("cannot write", path))?;
    Ok(len + checksum.len() as u64)
}

/// Decodes a period file, checking every length against the bytes there are.
fn decode_file(bytes: &[u8]) -> Result<StoredPeriod, String> {
    if bytes.len() < HEADER_LEN + 8 {
        return Err(format!(
            "{} bytes is shorter than any period file",
            bytes.len()
        ));
    }
    if &bytes[..7] != MAGIC {
        return Err("not a raw counter period file (magic)".into());
    }
    if bytes[7] != FORMAT {
        return Err(format!(
            "period file format {} (this build reads format {FORMAT}; run the release that wrote it)",
            bytes[7]
        ));
    }
    let (content, tail) = bytes.split_at(bytes.len() - 8);
    let mut sum = Fnv::new();
    sum.update(content);
    if sum.0.to_be_bytes() != tail {
        return Err("checksum mismatch (torn or partly lost write)".into());
    }
    let mut r = Cursor(&content[8..]);
    let end_ms = r.u64()?;
    let period_ms = r.u32()?;
    let count = r.u32()?;
    let mut reports = Vec::new();
    for _ in 0..count {
        let n = usize::from(r.u16()?);
        let id = std::str::from_utf8(r.take(n)?)
            .map_err(|_| "a cell id is not utf-8".to_string())?
            .to_string();
        let len = r.u32()? as usize;
        let body = Bytes::copy_from_slice(r.take(len)?);
        reports.push((id, body));
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last report", r.0.len()));
    }
    Ok(StoredPeriod {
        end_ms,
        period_ms,
        reports,
    })
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
}

/// Removes the sled database that releases up to 0.2.0 kept raw counters in, if `dir` holds
/// one (only sled's own files: `conf`, `db`, `snap.*`, `blobs/`).
fn remove_old_layout(dir: &Path) -> Result<(), RawStoreError> {
    if !SLED_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(());
    }
    let mut freed = 0u64;
    let blobs = dir.join("blobs");
    if blobs.is_dir() {
        for entry in std::fs::read_dir(&blobs).map_err(io("cannot list", &blobs))? {
            let entry = entry.map_err(io("cannot list", &blobs))?;
            freed += entry.metadata().map_or(0, |m| m.len());
        }
        std::fs::remove_dir_all(&blobs).map_err(io("cannot remove", &blobs))?;
    }
    let listing = std::fs::read_dir(dir).map_err(io("cannot list", dir))?;
    for entry in listing {
        let entry = entry.map_err(io("cannot list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if SLED_FILES.contains(&name.as_ref()) || name.starts_with("snap.") {
            let path = entry.path();
            freed += entry.metadata().map_or(0, |m| m.len());
            std::fs::remove_file(&path).map_err(io("cannot remove", &path))?;
        }
    }
    tracing::info!(
        dir = %dir.display(),
        freed_bytes = freed,
        "removed the raw counter store of the old layout (sled); raw counters are now kept one file per period"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn reports(cells: usize, body_len: usize) -> Vec<RawReport> {
        (0..cells)
            .map(|c| {
                (
                    Arc::<str>::from(format!("C{c}")),
                    Bytes::from(vec![c as u8; body_len]),
                )
            })
            .collect()
    }

    fn limits(retention: Retention, disk_cap_bytes: u64) -> RawLimits {
        RawLimits {
            retention,
            disk_cap_bytes,
        }
    }

    #[test]
    fn a_period_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = PeriodFiles::open(dir.path(), RawLimits::default()).unwrap();
        let written = reports(3, 10);
        files.write(60_000, 15_000, &written).unwrap();
        let read = files.read(60_000).unwrap();
        assert_eq!((read.end_ms, read.period_ms), (60_000, 15_000));
        let expected: Vec<(String, Bytes)> = written
            .iter()
            .map(|(c, b)| (c.to_string(), b.clone()))
            .collect();
        assert_eq!(read.reports, expected);
    }

    /// Format 1's exact bytes: a change to the layout without a new format number fails here.
    #[test]
    fn format_1_is_written_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let files = PeriodFiles::open(dir.path(), RawLimits::default()).unwrap();
        let one = vec![(Arc::<str>::from("S1-1"), Bytes::from_static(&[1, 3, 0xab]))];
        files.write(0x0102, 500, &one).unwrap();
        let bytes = std::fs::read(dir.path().join("00000000000000000258.period")).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "534f4e52415743",
                "01",
                "0000000000000102",
                "000001f4",
                "00000001",
                "0004",
                "53312d31",
                "00000003",
                "0103ab",
                "de9a649da5ab158e"
            )
        );
    }

    #[test]
    fn retention_in_periods_keeps_the_newest_periods() {
        let dir = tempfile::tempdir().unwrap();
        let files = PeriodFiles::open(dir.path(), limits(Retention::Periods(3), u64::MAX)).unwrap();
        let mut pruned = Pruned::default();
        for n in 1..=10 {
            pruned = files.write(n * 500, 500, &reports(2, 100)).unwrap();
        }
        assert_eq!(files.periods(), vec![4000, 4500, 5000]);
        assert_eq!(pruned.expired, 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn retention_as_a_duration_keeps_the_periods_that_ended_within_it_of_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let keep = Retention::Duration(Duration::from_secs(2));
        let files = PeriodFiles::open(dir.path(), limits(keep, u64::MAX)).unwrap();
        for n in 1..=10 {
            files.write(n * 500, 500, &reports(2, 100)).unwrap();
        }
        assert_eq!(files.periods(), vec![3500, 4000, 4500, 5000]);
    }

    #[test]
    fn the_disk_cap_drops_the_oldest_periods_first_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let files = PeriodFiles::open(dir.path(), limits(Retention::Periods(100), 5_000)).unwrap();
        let mut over_cap = 0;
        for n in 1..=10 {
            over_cap += files
                .write(n * 500, 500, &reports(10, 100))
                .unwrap()
                .over_cap;
        }
        // Each file is a little over 1 000 bytes: four fit under 5 000.
        assert_eq!(files.periods(), vec![3500, 4000, 4500, 5000]);
        assert_eq!(over_cap, 6);
        assert!(files.bytes() <= 5_000);
        // A cap below one period still keeps the newest.
        let tight = tempfile::tempdir().unwrap();
        let files = PeriodFiles::open(tight.path(), limits(Retention::Periods(100), 10)).unwrap();
        files.write(500, 500, &reports(10, 100)).unwrap();
        files.write(1000, 500, &reports(10, 100)).unwrap();
        assert_eq!(files.periods(), vec![1000]);
    }

    #[test]
    fn reopening_with_a_smaller_retention_drops_the_excess_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            PeriodFiles::open(dir.path(), limits(Retention::Periods(10), u64::MAX)).unwrap();
        for n in 1..=6 {
            files.write(n * 500, 500, &reports(1, 10)).unwrap();
        }
        drop(files);
        let files = PeriodFiles::open(dir.path(), limits(Retention::Periods(2), u64::MAX)).unwrap();
        assert_eq!(files.periods(), vec![2500, 3000]);
    }

    #[test]
    fn a_torn_file_is_reported_damaged_and_an_unfinished_write_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let files = PeriodFiles::open(dir.path(), RawLimits::default()).unwrap();
        files.write(500, 500, &reports(3, 50)).unwrap();
        let path = dir.path().join("00000000000000000500.period");
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 5, HEADER_LEN, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(
                matches!(files.read(500), Err(RawStoreError::Damaged { .. })),
                "cut at {cut}"
            );
        }
        let mut zeroed = bytes.clone();
        zeroed[HEADER_LEN..].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        assert!(matches!(
            files.read(500),
            Err(RawStoreError::Damaged { .. })
        ));
        drop(files);
        let tmp = dir.path().join("00000000000000001000.period.tmp");
        std::fs::write(&tmp, b"half").unwrap();
        let files = PeriodFiles::open(dir.path(), RawLimits::default()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(files.periods(), vec![500]);
    }

    #[test]
    fn the_sled_store_of_the_old_layout_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            db.insert(b"k", vec![0u8; 300 << 10]).unwrap();
            db.flush().unwrap();
        }
        let files = PeriodFiles::open(dir.path(), RawLimits::default()).unwrap();
        for gone in ["conf", "db", "blobs"] {
            assert!(!dir.path().join(gone).exists(), "{gone} is still there");
        }
        assert!(files.periods().is_empty());
    }

    #[test]
    fn retention_is_a_number_of_periods_or_a_duration() {
        assert_eq!("96".parse(), Ok(Retention::Periods(96)));
        assert_eq!(
            "30m".parse(),
            Ok(Retention::Duration(Duration::from_secs(1800)))
        );
        assert_eq!(
            "7d".parse(),
            Ok(Retention::Duration(Duration::from_secs(7 * 86_400)))
        );
        for bad in [
            "0",
            "0h",
            "",
            "h",
            "12x",
            "-3",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<Retention>().is_err(), "{bad:?} was accepted");
        }
    }
}
