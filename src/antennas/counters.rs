//! Raw counters: kept in this node's own sled database (never replicated) with retention, and
//! gathered per period. A period closes when every connected session reported it, or when its
//! grace time has passed; closed periods go to the SON functions.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use super::protocol::{Frame, Report, encode};

/// The counters of one closed period, per own cell.
#[derive(Debug, Clone)]
pub struct ClosedPeriod {
    pub end_ms: u64,
    pub period_ms: u32,
    pub closed_at: Instant,
    pub reports: HashMap<String, Report>,
}

struct OpenPeriod {
    first_seen: Instant,
    period_ms: u32,
    reports: HashMap<String, Report>,
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

fn key(period_end_ms: u64, cell: &str) -> Vec<u8> {
    let mut k = period_end_ms.to_be_bytes().to_vec();
    k.extend_from_slice(cell.as_bytes());
    k
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

    /// Takes one report of a cell.
    pub fn ingest(&self, cell: &str, report: Report) {
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
                reports: HashMap::new(),
            });
        p.reports.insert(cell.to_string(), report);
    }

    /// Closes the periods that are complete (`expected` reports) or past their grace time.
    fn take_closable(&self, expected: usize) -> Vec<ClosedPeriod> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let ends: Vec<u64> = open.keys().copied().collect();
        for end in ends {
            let Some(p) = open.get(&end) else { continue };
            let grace = Duration::from_millis((u64::from(p.period_ms) / 3).clamp(300, 10_000));
            if p.reports.len() >= expected || p.first_seen.elapsed() >= grace {
                if let Some(p) = open.remove(&end) {
                    self.last_closed.fetch_max(end, Ordering::Relaxed);
                    out.push(ClosedPeriod {
                        end_ms: end,
                        period_ms: p.period_ms,
                        closed_at: Instant::now(),
                        reports: p.reports,
                    });
                }
            } else {
                break;
            }
        }
        out
    }

    /// Writes a closed period's raw counters and drops what is past retention.
    fn persist(&self, period: &ClosedPeriod) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for (cell, r) in &period.reports {
            batch.insert(
                key(period.end_ms, cell),
                encode(&Frame::Report(r.clone())).to_vec(),
            );
        }
        let cutoff = period
            .end_ms
            .saturating_sub(self.retention_periods * u64::from(period.period_ms.max(1)));
        for k in self.raw.range(..cutoff.to_be_bytes().to_vec()).keys() {
            batch.remove(k?);
        }
        self.raw.apply_batch(batch)
    }

    /// Raw reports of `cell`, newest first (for operators and tests).
    pub fn history(&self, cell: &str, limit: usize) -> Vec<Report> {
        let mut out = Vec::new();
        for item in self.raw.iter().rev() {
            let Ok((k, v)) = item else { break };
            if k.len() > 8
                && &k[8..] == cell.as_bytes()
                && let Ok(Some(Frame::Report(r))) =
                    super::protocol::split_frame(&mut bytes::BytesMut::from(&v[..]))
            {
                out.push(r);
                if out.len() >= limit {
                    break;
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
        tx: mpsc::Sender<ClosedPeriod>,
    ) {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for period in self.take_closable(expected().max(1)) {
                let store = self.clone();
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
