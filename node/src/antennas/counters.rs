//! Raw counters: gathered per period from this node's antenna sessions, then kept in this
//! node's own store (never replicated) for a bounded time. A period closes when every connected
//! session reported it, or when its grace time has passed; closed periods are written to disk
//! ([`super::period_files`]: one file per period, dropped whole past the retention or the disk
//! cap) and handed to the SON functions.
//!
//! Memory: only open periods (at most one grace time of reports, see
//! [`CounterStore::take_closable`]) and closed ones the SON cycle has not yet taken are held.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sonraft_protocol::{Frame, Report, decode};
use tokio::sync::mpsc;

use super::period_files::{PeriodFiles, RawLimits, RawStoreError};
use crate::propose::now_ms;

/// One cell's report as received: the cell and the `REPORT` frame body (validated).
pub type RawReport = (Arc<str>, Bytes);

/// The counters of one closed period, per own cell, as the antennas sent them (read them with
/// [`sonraft_protocol::ReportView`]).
#[derive(Debug)]
pub struct ClosedPeriod {
    pub end_ms: u64,
    pub period_ms: u32,
    pub closed_at: Instant,
    pub reports: Vec<RawReport>,
}

struct OpenPeriod {
    first_seen: Instant,
    /// When its last report so far arrived.
    last_seen: Instant,
    period_ms: u32,
    reports: Vec<RawReport>,
    /// Every report of the period is in (it came whole, from a PM file): close it at once.
    complete: bool,
}

/// Past its grace time, a period whose reports are still coming in stays open until none has
/// come for this long.
const QUIET: Duration = Duration::from_millis(200);

impl OpenPeriod {
    fn new(period_ms: u32, complete: bool) -> OpenPeriod {
        let now = Instant::now();
        OpenPeriod {
            first_seen: now,
            last_seen: now,
            period_ms,
            reports: Vec::new(),
            complete,
        }
    }

    /// Whether the period can close at `now`, `expected` reports making it whole: when they
    /// are all in, or past its grace time (a third of the period, 0.3 to 10 s from the first
    /// report) once reports stopped coming for [`QUIET`], or after a whole period (at least the
    /// grace, at most 30 s) in any case.
    ///
    /// The quiet time is for large fleets on a busy node: at 100,000 cells a period's reports
    /// took over a second to come in, and closing a third of a second after the first one left
    /// 15-55 % of them late, so their cells went unanalysed that period.
    fn closable(&self, expected: usize, now: Instant) -> bool {
        if self.complete || self.reports.len() >= expected {
            return true;
        }
        let grace = Duration::from_millis((u64::from(self.period_ms) / 3).clamp(300, 10_000));
        let open_for = now.saturating_duration_since(self.first_seen);
        if open_for < grace {
            return false;
        }
        let longest =
            Duration::from_millis(u64::from(self.period_ms)).clamp(grace, Duration::from_secs(30));
        now.saturating_duration_since(self.last_seen) >= QUIET || open_for >= longest
    }
}

/// Raw counter storage and per-period gathering.
pub struct CounterStore {
    files: PeriodFiles,
    open: std::sync::Mutex<BTreeMap<u64, OpenPeriod>>,
    /// Counter values received (cell and relation counters).
    pub values: AtomicU64,
    pub reports: AtomicU64,
    /// Reports that arrived for a period already closed.
    pub late_reports: AtomicU64,
    last_closed: AtomicU64,
}

impl CounterStore {
    /// Opens (creating) the raw counter store in `dir`, keeping what `limits` allow.
    pub fn open(dir: &Path, limits: RawLimits) -> Result<Arc<CounterStore>, RawStoreError> {
        Ok(Arc::new(CounterStore {
            files: PeriodFiles::open(dir, limits)?,
            open: std::sync::Mutex::new(BTreeMap::new()),
            values: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            late_reports: AtomicU64::new(0),
            last_closed: AtomicU64::new(0),
        }))
    }

    /// The stored periods on disk.
    pub fn files(&self) -> &PeriodFiles {
        &self.files
    }

    /// Takes one validated report of a cell: its period, how many values it carries, and the
    /// frame body it came in.
    pub fn ingest(&self, cell: &Arc<str>, report: &sonraft_protocol::ReportView<'_>, body: Bytes) {
        self.values
            .fetch_add(report.values() as u64, Ordering::Relaxed);
        self.reports.fetch_add(1, Ordering::Relaxed);
        if report.period_end_ms <= self.last_closed.load(Ordering::Relaxed) {
            self.late_reports.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let p = open
            .entry(report.period_end_ms)
            .or_insert_with(|| OpenPeriod::new(report.period_ms, false));
        p.reports.push((cell.clone(), body));
        p.last_seen = Instant::now();
    }

    /// Takes a whole period of this node's cells at once (from PM files,
    /// [`super::pm_dir`]): every report is a valid `REPORT` body of the same period. The
    /// period closes at the closer's next look, not after a grace time, and none of its
    /// reports can be split off as late. Returns false if that period was already closed (the
    /// reports are then counted late and dropped, as a session's would be).
    pub fn ingest_period(&self, reports: Vec<RawReport>) -> bool {
        let mut views = reports
            .iter()
            .filter_map(|(_, body)| sonraft_protocol::ReportView::parse(body).ok());
        let Some(first) = views.next() else {
            return true;
        };
        let (end, period_ms) = (first.period_end_ms, first.period_ms);
        let values = first.values() + views.map(|v| v.values()).sum::<usize>();
        self.values.fetch_add(values as u64, Ordering::Relaxed);
        self.reports
            .fetch_add(reports.len() as u64, Ordering::Relaxed);
        if end <= self.last_closed.load(Ordering::Relaxed) {
            self.late_reports
                .fetch_add(reports.len() as u64, Ordering::Relaxed);
            return false;
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let p = open
            .entry(end)
            .or_insert_with(|| OpenPeriod::new(period_ms, true));
        p.reports.extend(reports);
        p.complete = true;
        true
    }

    /// Closes the periods that can close ([`OpenPeriod::closable`]), oldest first.
    fn take_closable(&self, expected: usize) -> Vec<ClosedPeriod> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let ends: Vec<u64> = open.keys().copied().collect();
        let now = Instant::now();
        for end in ends {
            let Some(p) = open.get(&end) else { continue };
            if !p.closable(expected, now) {
                break;
            }
            if let Some(p) = open.remove(&end) {
                self.last_closed.fetch_max(end, Ordering::Relaxed);
                // Where a period's time goes before the SON cycle sees it: the antennas' delay
                // in reporting, then the wait for the last report (or the grace time).
                tracing::debug!(
                    end_ms = end,
                    first_report_ms = now_ms()
                        .saturating_sub(p.first_seen.elapsed().as_millis() as u64)
                        .saturating_sub(end),
                    closed_ms = now_ms().saturating_sub(end),
                    reports = p.reports.len(),
                    expected,
                    "period closed"
                );
                out.push(ClosedPeriod {
                    end_ms: end,
                    period_ms: p.period_ms,
                    closed_at: Instant::now(),
                    reports: p.reports,
                });
            }
        }
        out
    }

    /// Writes a closed period's raw counters and drops what is past the retention or over
    /// the disk cap.
    pub fn persist(&self, period: &ClosedPeriod) -> Result<(), RawStoreError> {
        self.files
            .write(period.end_ms, period.period_ms, &period.reports)
            .map(|_| ())
    }

    /// Raw reports of `cell`, newest first (for operators and tests). Periods that cannot be
    /// read, and reports that do not decode, are skipped.
    pub fn history(&self, cell: &str, limit: usize) -> Vec<Report> {
        let mut out = Vec::new();
        for end in self.files.periods().into_iter().rev() {
            let Ok(period) = self.files.read(end) else {
                continue;
            };
            for (id, body) in &period.reports {
                if id == cell
                    && let Ok(Frame::Report(r)) = decode(body)
                {
                    out.push(r);
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Closes periods as they complete and hands them to `tx`. `expected` tells how many
    /// sessions are connected (a period with that many reports closes at once).
    pub async fn run(
        self: Arc<Self>,
        expected: impl Fn() -> usize + Send + 'static,
        tx: mpsc::Sender<Arc<ClosedPeriod>>,
    ) {
        // The SON cycle gets a period before its raw counters are on disk: at 100,000 cells a
        // period's file is tens of megabytes, and writing it first delayed every change the
        // period led to. One write is in flight at a time, so a slow disk holds closed periods
        // back rather than piling them up in memory.
        let mut writing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for period in self.take_closable(expected().max(1)) {
                let period = Arc::new(period);
                metrics::counter!("sonraft_periods_closed_total").increment(1);
                if tx.send(period.clone()).await.is_err() {
                    return;
                }
                if let Some(previous) = writing.take() {
                    let _ = previous.await;
                }
                let store = self.clone();
                writing = Some(tokio::spawn(async move {
                    match tokio::task::spawn_blocking(move || store.persist(&period)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "raw counters not stored"),
                        Err(e) => tracing::warn!(error = %e, "raw counter task failed"),
                    }
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::antennas::period_files::Retention;
    use sonraft_protocol::{RelationCounters, encode};

    fn body(end_ms: u64, period_ms: u32, relations: usize) -> Bytes {
        let report = Report {
            period_end_ms: end_ms,
            period_ms,
            cell: [7; sonraft_protocol::CELL_COUNTERS.len()],
            relations: (0..relations)
                .map(|i| RelationCounters {
                    target: format!("S{i:05}-1"),
                    values: [3; 6],
                })
                .collect(),
        };
        encode(&Frame::Report(report)).slice(4..)
    }

    fn period(end_ms: u64, period_ms: u32, cells: usize, relations: usize) -> ClosedPeriod {
        ClosedPeriod {
            end_ms,
            period_ms,
            closed_at: Instant::now(),
            reports: (0..cells)
                .map(|c| {
                    (
                        Arc::<str>::from(format!("C{c:05}-1")),
                        body(end_ms, period_ms, relations),
                    )
                })
                .collect(),
        }
    }

    fn disk_bytes(dir: &Path) -> u64 {
        let mut total = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                disk_bytes(&e.path())
            } else {
                m.len()
            };
        }
        total
    }

    fn limits(retention: Retention) -> RawLimits {
        RawLimits {
            retention,
            disk_cap_bytes: u64::MAX,
        }
    }

    /// The leak of issue 21: with the store in sled, every removed period stayed on disk as a
    /// sled blob (160 MB here, for a retention of 1.2 MB).
    #[test]
    fn disk_use_stays_bounded_when_many_periods_pass_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let counters = dir.path().join("counters");
        let store = CounterStore::open(&counters, limits(Retention::Periods(8))).unwrap();
        let one = period(1_000, 500, 60, 40);
        let logical: usize = one.reports.iter().map(|(c, b)| c.len() + b.len()).sum();
        for n in 1..=400u64 {
            store.persist(&period(n * 500, 500, 60, 40)).unwrap();
        }
        drop(store);
        let used = disk_bytes(&counters);
        let retained = 8 * logical as u64;
        assert!(
            used <= 2 * retained,
            "{used} bytes on disk for a retention of {retained} logical bytes"
        );
        let reopened = CounterStore::open(&counters, limits(Retention::Periods(8))).unwrap();
        let kept: Vec<u64> = (393..=400).map(|n| n * 500).collect();
        assert_eq!(reopened.files().periods(), kept);
    }

    #[test]
    fn a_period_closes_when_whole_or_once_its_reports_stop_coming_after_the_grace_time() {
        let mut p = OpenPeriod::new(1000, false);
        let t0 = p.first_seen;
        let ms = Duration::from_millis;
        p.reports = vec![(Arc::from("C1"), Bytes::new()); 2];
        assert!(p.closable(2, t0), "whole");
        assert!(!p.closable(3, t0 + ms(300)), "within the grace time");
        // Reports still coming in past the grace time keep it open...
        p.last_seen = t0 + ms(400);
        assert!(!p.closable(3, t0 + ms(500)));
        // ...until none came for the quiet time,
        assert!(p.closable(3, t0 + ms(400) + QUIET));
        // or for a whole period at most.
        p.last_seen = t0 + ms(990);
        assert!(!p.closable(3, t0 + ms(999)));
        assert!(p.closable(3, t0 + ms(1000)));
        // A silent cell (no report since the first) closes at the grace time, as before.
        p.last_seen = t0;
        assert!(p.closable(3, t0 + ms(333)));
        let mut whole = OpenPeriod::new(1000, true);
        whole.reports.clear();
        assert!(
            whole.closable(3, whole.first_seen),
            "a PM file's period comes whole"
        );
    }

    #[test]
    fn a_cells_history_reads_back_its_reports_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = CounterStore::open(dir.path(), limits(Retention::Periods(3))).unwrap();
        for n in 1..=5u64 {
            store.persist(&period(n * 1000, 1000, 3, 2)).unwrap();
        }
        let history = store.history("C00001-1", 10);
        let ends: Vec<u64> = history.iter().map(|r| r.period_end_ms).collect();
        assert_eq!(ends, vec![5000, 4000, 3000]);
        assert_eq!(history[0].relations.len(), 2);
        assert!(store.history("no-such-cell", 10).is_empty());
    }
}
