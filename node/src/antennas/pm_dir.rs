//! PM files as this node's counter source (`--pm-dir`): TS 32.435 measurement files an OSS
//! (or `sonraft sim --pm-dir`) drops into a directory, read instead of the antenna sessions'
//! reports.
//!
//! **Which counters count.** With `--pm-dir` the files are the counters: the sessions (when
//! `--antennas` is also given) still push configuration and their reports are still read and
//! shown in `GET /antennas`, but they are not stored, so no period is counted twice. A file's
//! reports go into the same [`CounterStore`] path a session's do (the same `REPORT` frame
//! bodies), so the KPI summaries, the raw counter store and the SON functions see the same
//! thing either way; only the cells this node owns are taken (the sessions' rule: the cell's
//! site's region is this node's site).
//!
//! **Which files, once.** Files named `A….xml` (TS 32.432; hidden and temporary names are
//! never read) are taken in name order, which is time order. What was ingested is remembered
//! as the newest name, no list: a file whose name sorts at or before it is not read again, and
//! the name survives restarts in `<data dir>/pm-ingested`, written after each file. While the
//! image gives this node no cell (before the first import), no file is read: they wait. A crash
//! between taking a file and writing the name reads that file again after the restart (its
//! KPI summaries are then replicated twice, with the same values). Files of one period taken
//! in one pass form one period; a period closes as soon as its files are taken.
//!
//! **Bad files.** A file that cannot be read or parsed is logged once at WARN with its name and
//! the reason (line and what), counted in `sonraft_pm_files_bad_total`, listed in
//! `GET /antennas` while it is there, and left untouched; the files after it are still taken.
//! It is read again only if it changes (size or modification time) while no newer file has
//! been taken, so an operator can replace it. Each pass reads at most
//! [`FILES_PER_PASS`] files, every quarter period (250 ms before the period is known).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sonraft_client::v1;
use sonraft_protocol::pm_xml::{self, MAX_FILE_BYTES, PmFile};
use sonraft_protocol::{Frame, encode};

use super::counters::{CounterStore, RawReport};

/// Most files read in one pass.
pub const FILES_PER_PASS: usize = 8;
/// Most bad files listed in `GET /antennas` (the newest).
pub const MAX_BAD_LISTED: usize = 100;

/// A file's size and modification time: a bad file is judged again only when they change.
type Seen = (u64, Option<SystemTime>);

/// A bad file: why, and how it was when it was judged.
struct Bad {
    error: String,
    seen: Seen,
}

/// One period being gathered in a pass: its end, the names of its files, its own cells'
/// reports.
struct Gathering {
    end_ms: u64,
    names: Vec<String>,
    reports: Vec<RawReport>,
}

#[derive(Default)]
struct State {
    newest: Option<String>,
    files: u64,
    reports: u64,
    foreign_reports: u64,
    late_reports: u64,
    period_ms: Option<u32>,
    bad: BTreeMap<String, Bad>,
}

/// The PM directory this node reads, and what it took from it.
pub struct PmDir {
    dir: PathBuf,
    marker: PathBuf,
    state: std::sync::Mutex<State>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `name` is a measurement file's name (not a temporary or hidden one).
fn is_measurement_file(name: &str) -> bool {
    name.starts_with('A') && name.ends_with(".xml")
}

/// Reads and parses one file (blocking); none if it was removed since it was listed (its
/// writer keeps only the newest files).
fn read(path: &Path, name: &str) -> Result<Option<PmFile>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: cannot open: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: cannot read: {e}"))?;
    pm_xml::parse(name, &bytes)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl PmDir {
    /// Reads `dir`; what was ingested is remembered in `marker` (read now if it exists).
    pub fn open(dir: PathBuf, marker: PathBuf) -> anyhow::Result<Arc<PmDir>> {
        use anyhow::Context;
        anyhow::ensure!(
            dir.is_dir(),
            "--pm-dir {} is not a directory",
            dir.display()
        );
        let newest = match std::fs::read_to_string(&marker) {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", marker.display()));
            }
        };
        Ok(Arc::new(PmDir {
            dir,
            marker,
            state: std::sync::Mutex::new(State {
                newest,
                ..State::default()
            }),
        }))
    }

    /// Remembers `name` as the newest file taken, on disk too.
    fn taken(&self, name: &str) {
        lock(&self.state).newest = Some(name.to_string());
        let tmp = self.marker.with_extension("tmp");
        let written = std::fs::write(&tmp, name).and_then(|()| std::fs::rename(&tmp, &self.marker));
        if let Err(e) = written {
            tracing::warn!(file = name, marker = %self.marker.display(), error = %e,
                "cannot record the newest PM file taken; after a restart it may be taken again");
        }
    }

    /// The files to read next, in name order: newer than the newest taken, not bad unless
    /// changed since, at most [`FILES_PER_PASS`]. Bad files no longer there are forgotten.
    fn next_files(&self) -> std::io::Result<Vec<(String, Seen)>> {
        let mut found = Vec::new();
        let mut present = HashSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !is_measurement_file(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            present.insert(name.clone());
            found.push((name, (meta.len(), meta.modified().ok())));
        }
        let mut s = lock(&self.state);
        s.bad.retain(|name, _| present.contains(name));
        let newest = s.newest.clone();
        found.retain(|(name, seen)| {
            newest.as_ref().is_none_or(|n| name > n)
                && s.bad.get(name).is_none_or(|b| b.seen != *seen)
        });
        found.sort();
        found.truncate(FILES_PER_PASS);
        Ok(found)
    }

    fn refuse(&self, name: &str, seen: Seen, error: String) {
        tracing::warn!(file = name, dir = %self.dir.display(), error = %error,
            "PM file refused; it is left as it is and the files after it are still read");
        metrics::counter!("sonraft_pm_files_bad_total").increment(1);
        let mut s = lock(&self.state);
        s.bad.insert(name.to_string(), Bad { error, seen });
        while s.bad.len() > MAX_BAD_LISTED {
            s.bad.pop_first();
        }
    }

    /// One pass: reads the next files and hands their own cells' reports to `counters`, one
    /// period at a time. `own` is the set of cells this node owns.
    pub async fn pass(self: &Arc<Self>, counters: &CounterStore, own: &HashSet<String>) {
        if own.is_empty() {
            // No image yet (or no cell of this site in it): every report would be skipped as
            // another site's, so the files wait.
            return;
        }
        let dir = self.clone();
        let files = match tokio::task::spawn_blocking(move || dir.next_files()).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the PM directory");
                return;
            }
            Err(_) => return,
        };
        let mut period: Option<Gathering> = None;
        for (name, seen) in files {
            let path = self.dir.join(&name);
            let n = name.clone();
            let parsed = match tokio::task::spawn_blocking(move || read(&path, &n)).await {
                Ok(r) => r,
                Err(e) => Err(format!("{name}: reading failed: {e}")),
            };
            let file = match parsed {
                Ok(Some(f)) => f,
                Ok(None) => {
                    tracing::warn!(file = %name, "PM file removed before this node read it: its period is not counted");
                    continue;
                }
                Err(e) => {
                    self.refuse(&name, seen, e);
                    continue;
                }
            };
            if period.as_ref().is_some_and(|p| p.end_ms != file.end_ms) {
                self.ingest(counters, period.take());
            }
            let p = period.get_or_insert_with(|| Gathering {
                end_ms: file.end_ms,
                names: Vec::new(),
                reports: Vec::new(),
            });
            p.names.push(name.clone());
            let mut s = lock(&self.state);
            s.period_ms = Some(file.period_ms);
            s.files += 1;
            s.bad.remove(&name);
            for r in file.reports {
                if own.contains(&r.cell) {
                    let body: Bytes = encode(&Frame::Report(r.report)).slice(4..);
                    p.reports.push((Arc::from(r.cell.as_str()), body));
                } else {
                    s.foreign_reports += 1;
                }
            }
            drop(s);
            metrics::counter!("sonraft_pm_files_ingested_total").increment(1);
            tracing::debug!(file = %name, "PM file read");
        }
        self.ingest(counters, period);
    }

    /// Hands one period's reports to the counter store and records its files as taken.
    fn ingest(&self, counters: &CounterStore, period: Option<Gathering>) {
        let Some(Gathering {
            end_ms,
            names,
            reports,
        }) = period
        else {
            return;
        };
        let n = reports.len() as u64;
        let late = !counters.ingest_period(reports);
        metrics::counter!("sonraft_pm_reports_total").increment(n);
        {
            let mut s = lock(&self.state);
            s.reports += n;
            if late {
                s.late_reports += n;
            }
        }
        if late {
            tracing::info!(files = ?names, end_ms,
                "PM files of a period this node already closed: their reports are counted late, not used");
        }
        if let Some(last) = names.last() {
            self.taken(last);
        }
    }

    /// How long to wait between passes: a quarter of the period, within 100 ms and 30 s.
    pub fn poll_every(&self) -> Duration {
        lock(&self.state)
            .period_ms
            .map_or(Duration::from_millis(250), |p| {
                Duration::from_millis((u64::from(p) / 4).clamp(100, 30_000))
            })
    }

    /// Polls the directory for the life of the node. `own` answers the cells this node owns.
    pub async fn run(
        self: Arc<Self>,
        counters: Arc<CounterStore>,
        own: impl Fn() -> HashSet<String> + Send + 'static,
    ) {
        tracing::info!(dir = %self.dir.display(), after = ?lock(&self.state).newest,
            "reading counters from PM files; antenna sessions' reports are not stored");
        loop {
            self.pass(&counters, &own()).await;
            tokio::time::sleep(self.poll_every()).await;
        }
    }

    /// What `GET /antennas` shows of the directory.
    pub fn describe(&self) -> v1::PmDirStatus {
        let s = lock(&self.state);
        v1::PmDirStatus {
            dir: self.dir.display().to_string(),
            files_ingested: s.files,
            newest_ingested: s.newest.clone(),
            reports: s.reports,
            foreign_reports: s.foreign_reports,
            late_reports: s.late_reports,
            bad_files: s
                .bad
                .iter()
                .rev()
                .map(|(file, b)| v1::BadPmFile {
                    file: file.clone(),
                    error: b.error.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::antennas::period_files::{RawLimits, Retention};
    use sonraft_protocol::{RelationCounters, Report};

    const END: u64 = 1_764_713_700_000;

    fn report(end_ms: u64, seed: u64) -> Report {
        Report {
            period_end_ms: end_ms,
            period_ms: 1000,
            cell: std::array::from_fn(|k| seed + k as u64),
            relations: vec![RelationCounters {
                target: "S2-1".into(),
                values: [seed; 6],
            }],
        }
    }

    /// Writes the file of the period ending at `end_ms` with cells S1-1 (own) and S9-1 (not).
    fn drop_file(dir: &Path, end_ms: u64) -> String {
        let (a, b) = (report(end_ms, 1), report(end_ms, 2));
        let cells = [
            pm_xml::Cell {
                id: "S1-1",
                managed_element: "S1",
                nr: false,
                report: &a,
            },
            pm_xml::Cell {
                id: "S9-1",
                managed_element: "S9",
                nr: false,
                report: &b,
            },
        ];
        let name = pm_xml::file_name("site-a", end_ms, 1000);
        let xml = pm_xml::write("site-a", end_ms, 1000, &cells).unwrap();
        std::fs::write(dir.join(&name), xml).unwrap();
        name
    }

    struct Setup {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        marker: PathBuf,
        counters: Arc<CounterStore>,
        own: HashSet<String>,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pm");
        std::fs::create_dir(&dir).unwrap();
        let counters = CounterStore::open(
            &tmp.path().join("counters"),
            RawLimits {
                retention: Retention::Periods(10),
                disk_cap_bytes: u64::MAX,
            },
        )
        .unwrap();
        Setup {
            marker: tmp.path().join("pm-ingested"),
            dir,
            _tmp: tmp,
            counters,
            own: ["S1-1".to_string()].into(),
        }
    }

    #[tokio::test]
    async fn own_cells_of_new_files_are_taken_once_in_name_order() {
        let s = setup();
        let pm = PmDir::open(s.dir.clone(), s.marker.clone()).unwrap();
        drop_file(&s.dir, END + 1000);
        let newest = drop_file(&s.dir, END + 2000);
        std::fs::write(s.dir.join(".A-half-written.xml.tmp"), "<meas").unwrap();
        pm.pass(&s.counters, &s.own).await;
        pm.pass(&s.counters, &s.own).await;
        let st = pm.describe();
        assert_eq!(
            (st.files_ingested, st.reports, st.foreign_reports),
            (2, 2, 2)
        );
        assert_eq!(st.newest_ingested.as_deref(), Some(newest.as_str()));
        assert_eq!(
            s.counters
                .reports
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        // A restart remembers what was taken.
        let again = PmDir::open(s.dir.clone(), s.marker.clone()).unwrap();
        again.pass(&s.counters, &s.own).await;
        assert_eq!(again.describe().files_ingested, 0);
    }

    #[tokio::test]
    async fn a_bad_file_is_listed_left_untouched_and_the_next_files_are_still_taken() {
        let s = setup();
        let pm = PmDir::open(s.dir.clone(), s.marker.clone()).unwrap();
        let bad = drop_file(&s.dir, END + 1000);
        let text = std::fs::read_to_string(s.dir.join(&bad)).unwrap();
        let broken = text.replacen("<r p=\"1\">1</r>", "<r p=\"1\">-1</r>", 1);
        std::fs::write(s.dir.join(&bad), &broken).unwrap();
        let good = drop_file(&s.dir, END + 2000);
        pm.pass(&s.counters, &s.own).await;
        let st = pm.describe();
        assert_eq!(st.files_ingested, 1);
        assert_eq!(st.newest_ingested.as_deref(), Some(good.as_str()));
        assert_eq!(st.bad_files.len(), 1);
        assert_eq!(st.bad_files[0].file, bad);
        assert!(
            st.bad_files[0].error.starts_with(&format!("{bad} line ")),
            "{}",
            st.bad_files[0].error
        );
        assert!(
            st.bad_files[0].error.contains("`-1`"),
            "{}",
            st.bad_files[0].error
        );
        assert_eq!(std::fs::read_to_string(s.dir.join(&bad)).unwrap(), broken);
    }

    #[tokio::test]
    async fn a_bad_newest_file_is_judged_once_and_again_when_replaced() {
        let s = setup();
        let pm = PmDir::open(s.dir.clone(), s.marker.clone()).unwrap();
        let name = pm_xml::file_name("site-a", END + 1000, 1000);
        std::fs::write(s.dir.join(&name), "<measCollecFile>").unwrap();
        pm.pass(&s.counters, &s.own).await;
        pm.pass(&s.counters, &s.own).await;
        assert_eq!(pm.describe().bad_files.len(), 1);
        std::fs::remove_file(s.dir.join(&name)).unwrap();
        assert_eq!(drop_file(&s.dir, END + 1000), name);
        pm.pass(&s.counters, &s.own).await;
        let st = pm.describe();
        assert_eq!((st.files_ingested, st.bad_files.len()), (1, 0));
    }
}
