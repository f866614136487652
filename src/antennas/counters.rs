//! Raw counters: kept in this node's own sled database (never replicated) with retention, and
//! gathered per period. A period closes when every connected session reported it, or when its
//! grace time has passed; closed periods go to the SON functions.
//!
//! Tree `raw`: key = period end (u64 BE) + chunk number (u32 BE); value = up to
//! [`CELLS_PER_CHUNK`] entries of `cell id length (u16 BE), cell id, body length (u32 BE),
//! REPORT frame body` — the bytes as the antenna sent them, so a stored period can always be
//! decoded with the protocol version it names. Chunking keeps sled's work per period small.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes};
use tokio::sync::mpsc;

use super::protocol::{Frame, Report, decode};

/// One cell's report as received: the cell and the `REPORT` frame body (validated).
pub type RawReport = (Arc<str>, Bytes);

/// Reports per stored chunk.
pub const CELLS_PER_CHUNK: usize = 1000;

/// The counters of one closed period, per own cell, as the antennas sent them (read them with
/// [`super::protocol::ReportView`]).
#[derive(Debug)]
pub struct ClosedPeriod {
    pub end_ms: u64,
    pub period_ms: u32,
    pub closed_at: Instant,
    pub reports: Vec<RawReport>,
}

struct OpenPeriod {
    first_seen: Instant,
    period_ms: u32,
    reports: Vec<RawReport>,
}

/// Raw counter storage and per-period gathering.
pub struct CounterStore {
    raw: sled::Tree,
    _db: sled::Db,
    open: std::sync::Mutex<BTreeMap<u64, OpenPeriod>>,
    /// Periods of raw counters kept.
    pub retention_periods: u64,
    /// Counter values received (cell and relation counters).
    pub values: AtomicU64,
    pub reports: AtomicU64,
    /// Reports that arrived for a period already closed.
    pub late_reports: AtomicU64,
    last_closed: AtomicU64,
}

impl CounterStore {
    /// Opens (creating) the counter database in `dir`.
    pub fn open(dir: &Path, retention_periods: u64) -> anyhow::Result<Arc<CounterStore>> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .flush_every_ms(Some(2000))
            .open()
            .with_context(|| format!("cannot open the counter store in {}", dir.display()))?;
        let raw = db.open_tree("raw")?;
        Ok(Arc::new(CounterStore {
            raw,
            _db: db,
            open: std::sync::Mutex::new(BTreeMap::new()),
            retention_periods,
            values: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            late_reports: AtomicU64::new(0),
            last_closed: AtomicU64::new(0),
        }))
    }

    /// Takes one validated report of a cell: its period, how many values it carries, and the
    /// frame body it came in.
    pub fn ingest(&self, cell: &Arc<str>, report: &super::protocol::ReportView<'_>, body: Bytes) {
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
            .or_insert_with(|| OpenPeriod {
                first_seen: Instant::now(),
                period_ms: report.period_ms,
                reports: Vec::new(),
            });
        p.reports.push((cell.clone(), body));
    }

    /// Closes the periods that are complete (`expected` reports) or past their grace time.
    fn take_closable(&self, expected: usize) -> Vec<ClosedPeriod> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let ends: Vec<u64> = open.keys().copied().collect();
        for end in ends {
            let Some(p) = open.get(&end) else { continue };
            let grace = Duration::from_millis((u64::from(p.period_ms) / 3).clamp(300, 10_000));
            if p.reports.len() < expected && p.first_seen.elapsed() < grace {
                break;
            }
            if let Some(p) = open.remove(&end) {
                self.last_closed.fetch_max(end, Ordering::Relaxed);
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

    /// Writes a closed period's raw counters and drops what is past retention.
    fn persist(&self, period: &ClosedPeriod) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for (n, chunk) in period.reports.chunks(CELLS_PER_CHUNK).enumerate() {
            let mut key = period.end_ms.to_be_bytes().to_vec();
            key.extend_from_slice(&(n as u32).to_be_bytes());
            let size: usize = chunk.iter().map(|(c, b)| 6 + c.len() + b.len()).sum();
            let mut value = Vec::with_capacity(size);
            for (cell, body) in chunk {
                value.put_u16(cell.len() as u16);
                value.put_slice(cell.as_bytes());
                value.put_u32(body.len() as u32);
                value.put_slice(body);
            }
            batch.insert(key, value);
        }
        let cutoff = period
            .end_ms
            .saturating_sub(self.retention_periods * u64::from(period.period_ms.max(1)));
        for k in self.raw.range(..cutoff.to_be_bytes().to_vec()).keys() {
            batch.remove(k?);
        }
        self.raw.apply_batch(batch)
    }

    /// Raw reports of `cell`, newest first (for operators and tests). Entries that do not
    /// decode are skipped.
    pub fn history(&self, cell: &str, limit: usize) -> Vec<Report> {
        let mut out = Vec::new();
        for item in self.raw.iter().rev() {
            let Ok((_, v)) = item else { break };
            let mut b = &v[..];
            while b.remaining() >= 2 {
                let n = b.get_u16() as usize;
                if b.remaining() < n + 4 {
                    break;
                }
                let id = &b[..n];
                b.advance(n);
                let len = b.get_u32() as usize;
                if b.remaining() < len {
                    break;
                }
                if id == cell.as_bytes()
                    && let Ok(Frame::Report(r)) = decode(&b[..len])
                {
                    out.push(r);
                    if out.len() >= limit {
                        return out;
                    }
                }
                b.advance(len);
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
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for period in self.take_closable(expected().max(1)) {
                let store = self.clone();
                let period = Arc::new(period);
                let p = period.clone();
                match tokio::task::spawn_blocking(move || store.persist(&p)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "raw counters not stored"),
                    Err(e) => tracing::warn!(error = %e, "raw counter task failed"),
                }
                metrics::counter!("sonraft_periods_closed_total").increment(1);
                if tx.send(period).await.is_err() {
                    return;
                }
            }
        }
    }
}
