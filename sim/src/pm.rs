//! The simulator's PM files: each period's reports also written as TS 32.435 measurement
//! files (`--pm-dir`), one per sonraft region (`DIR/<region>/A….xml`), the way an OSS would
//! deliver them to that region's node.
//!
//! The period clock only hands the reports over; a thread of its own formats and writes them,
//! so a slow disk never delays the antennas' reports. If it falls more than a few periods
//! behind, a period's files are skipped (and logged) rather than queued without bound. Each
//! file is written under a hidden temporary name and renamed, so a reader never sees half a
//! file, and only the newest `--pm-keep` files of a region are kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use sonraft_protocol::Report;
use sonraft_protocol::pm_xml;

use crate::topology::{Topology, is_nr};

/// Periods handed over but not yet written, at most.
const QUEUE: usize = 4;

/// What a file needs to know of a cell.
struct CellInfo {
    id: String,
    site: String,
    region: String,
    nr: bool,
}

/// One period to write: its end, its length, a report per cell (indexed like the topology).
type Period = (u64, u32, Vec<Report>);

/// Hands periods to the writer thread.
pub struct PmWriter {
    tx: SyncSender<Period>,
    /// Periods skipped because the writer was behind.
    pub skipped: AtomicU64,
}

impl PmWriter {
    /// Starts writing into `dir` (created with a folder per region), keeping `keep` files per
    /// region (at least 1).
    pub fn start(dir: PathBuf, keep: usize, topo: &Topology) -> std::io::Result<PmWriter> {
        let cells: Vec<CellInfo> = topo
            .cells
            .iter()
            .map(|c| {
                let site = &topo.sites[c.site];
                CellInfo {
                    id: c.id.clone(),
                    site: site.id.clone(),
                    region: site.region.clone(),
                    nr: is_nr(c.arfcn),
                }
            })
            .collect();
        let mut regions: Vec<String> = cells.iter().map(|c| c.region.clone()).collect();
        regions.sort();
        regions.dedup();
        for r in &regions {
            std::fs::create_dir_all(dir.join(r))?;
        }
        let (tx, rx) = sync_channel::<Period>(QUEUE);
        std::thread::Builder::new()
            .name("pm-files".into())
            .spawn(move || {
                for (end_ms, period_ms, reports) in rx {
                    for region in &regions {
                        if let Err(e) =
                            write_region(&dir, region, &cells, end_ms, period_ms, &reports, keep)
                        {
                            tracing::warn!(region, dir = %dir.display(), error = %e, "PM file not written");
                        }
                    }
                }
            })?;
        Ok(PmWriter {
            tx,
            skipped: AtomicU64::new(0),
        })
    }

    /// Queues a period's reports (one per cell, in the topology's order) for writing.
    pub fn period(&self, end_ms: u64, period_ms: u32, reports: &[Report]) {
        // Unknown neighbours (`/PCI/ARFCN` entries) are UE measurements, not PM: they travel
        // only over the antenna session.
        let reports: Vec<Report> = reports
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.relations.retain(|rel| !rel.target.starts_with('/'));
                r
            })
            .collect();
        match self.tx.try_send((end_ms, period_ms, reports)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    end_ms,
                    skipped = n,
                    "PM files fall behind the period clock; this period is not written"
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the PM file writer stopped; no more PM files are written");
            }
        }
    }
}

/// Writes one region's file of a period and drops the oldest beyond `keep`.
fn write_region(
    dir: &Path,
    region: &str,
    cells: &[CellInfo],
    end_ms: u64,
    period_ms: u32,
    reports: &[Report],
    keep: usize,
) -> anyhow::Result<()> {
    let list: Vec<pm_xml::Cell<'_>> = cells
        .iter()
        .zip(reports)
        .filter(|(c, _)| c.region == region)
        .map(|(c, report)| pm_xml::Cell {
            id: &c.id,
            managed_element: &c.site,
            nr: c.nr,
            report,
        })
        .collect();
    let xml = pm_xml::write(region, end_ms, period_ms, &list)?;
    let folder = dir.join(region);
    let name = pm_xml::file_name(region, end_ms, period_ms);
    let tmp = folder.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, xml)?;
    std::fs::rename(&tmp, folder.join(&name))?;
    prune(&folder, keep)
}

/// Removes all but the newest `keep` measurement files (`A….xml`, which sort by time).
fn prune(folder: &Path, keep: usize) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('A') && n.ends_with(".xml"))
        .collect();
    if names.len() <= keep.max(1) {
        return Ok(());
    }
    names.sort();
    for n in &names[..names.len() - keep.max(1)] {
        std::fs::remove_file(folder.join(n))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn each_region_gets_its_cells_and_only_the_newest_files_stay() {
        let regions = vec!["site-a".to_string(), "site-b".to_string()];
        let topo = Topology::build(30, 1, &regions);
        let dir = tempfile::tempdir().unwrap();
        let writer = PmWriter::start(dir.path().to_path_buf(), 3, &topo).unwrap();
        let end = 1_764_713_700_000u64;
        let last = end + 4 * 1000;
        for k in 0..5u64 {
            let reports: Vec<Report> = (0..topo.cells.len())
                .map(|i| Report {
                    period_end_ms: end + k * 1000,
                    period_ms: 1000,
                    cell: [i as u64; sonraft_protocol::CELL_COUNTERS.len()],
                    relations: Vec::new(),
                })
                .collect();
            writer.period(end + k * 1000, 1000, &reports);
            // One period at a time, so that none is skipped.
            let name = pm_xml::file_name("site-b", end + k * 1000, 1000);
            wait_for("the period's file", || {
                dir.path().join("site-b").join(&name).exists()
            });
        }
        let a = dir.path().join("site-a");
        wait_for("pruning", || files(&a).len() == 3);
        let newest = files(&a).pop().unwrap();
        assert_eq!(newest, pm_xml::file_name("site-a", last, 1000));
        let bytes = std::fs::read(a.join(&newest)).unwrap();
        let f = pm_xml::parse(&newest, &bytes).unwrap();
        let want: Vec<&str> = topo
            .cells
            .iter()
            .filter(|c| topo.sites[c.site].region == "site-a")
            .map(|c| c.id.as_str())
            .collect();
        let mut want = want;
        want.sort();
        let got: Vec<&str> = f.reports.iter().map(|r| r.cell.as_str()).collect();
        assert_eq!(got, want);
        assert_eq!(f.end_ms, last);
    }
}
