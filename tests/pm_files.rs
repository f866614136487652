//! PM files (issue 13): the periods the simulator writes as TS 32.435 files, ingested by a node
//! with `--pm-dir`, give the same replicated KPI summaries as the same periods' session
//! reports; a bad file in the directory is listed and does not stop the others.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sonraft_client::v1;
use sonraft_testkit::local_cluster::SimProc;

const CELLS: usize = 30;

fn export() -> Value {
    let out = std::process::Command::new(binary())
        .args([
            "sim",
            "export",
            "--cells",
            &CELLS.to_string(),
            "--regions",
            "site-1",
        ])
        .output()
        .expect("sim export");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("image json")
}

/// The node's replicated KPI summaries, by cell.
async fn kpis(c: &Cluster) -> BTreeMap<String, v1::KpiSummary> {
    let r = c
        .client
        .get(&c.nodes[0].api, "/image/kpis?consistency=local")
        .await
        .expect("GET /image/kpis");
    let list: Vec<v1::KpiSummary> = r.parse().expect("KPI summaries");
    list.into_iter().map(|k| (k.cell.to_string(), k)).collect()
}

async fn antennas(c: &Cluster) -> v1::Antennas {
    let r = c
        .client
        .get(&c.nodes[0].api, "/antennas")
        .await
        .expect("GET /antennas");
    r.parse().expect("antennas")
}

fn period_ends(k: &BTreeMap<String, v1::KpiSummary>) -> Vec<u64> {
    let mut ends: Vec<u64> = k.values().map(|s| s.period_end_ms).collect();
    ends.dedup();
    ends
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pm_directory_gives_the_same_kpi_summaries_as_the_session_reports_of_the_same_periods() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pm = dir.path().join("pm");
    let sim = SimProc::start(
        binary(),
        dir.path(),
        &[
            "--cells",
            &CELLS.to_string(),
            "--period-ms",
            "1000",
            "--regions",
            "site-1",
            "--pm-dir",
            pm.to_str().expect("utf-8 path"),
        ],
    )
    .expect("simulator");
    // Two one-node clusters of the same site: one takes the sessions' reports, the other the
    // files of the same simulator, so both see the very same periods.
    let by_sessions = Cluster::start_with(1, &["--antennas", &sim.antennas.join(",")]).await;
    let site_dir = pm.join("site-1");
    let by_files =
        Cluster::start_with(1, &["--pm-dir", site_dir.to_str().expect("utf-8 path")]).await;
    let image = export();
    by_sessions.import(&image).await;
    by_files.import(&image).await;
    // A bad file, named to sort after every file the simulator writes.
    let bad = "A29991231.2359+0000-0000+0000_site-1.xml";
    std::fs::write(
        Path::new(&site_dir).join(bad),
        "<?xml version=\"1.0\"?>\n<measCollecFile>\n<fileHeader/>",
    )
    .expect("bad file");

    let deadline = Instant::now() + Duration::from_secs(25);
    let mut equal_periods = Vec::new();
    while equal_periods.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no two periods with the same summaries on both nodes; compared: {equal_periods:?}"
        );
        let (a, b) = (kpis(&by_sessions).await, kpis(&by_files).await);
        let (ends_a, ends_b) = (period_ends(&a), period_ends(&b));
        if a.len() == CELLS && ends_a.len() == 1 && ends_a == ends_b {
            let differ: Vec<(&v1::KpiSummary, Option<&v1::KpiSummary>)> = a
                .values()
                .filter(|k| b.get(k.cell.as_str()) != Some(*k))
                .map(|k| (k, b.get(k.cell.as_str())))
                .collect();
            assert!(
                differ.is_empty() && a.len() == b.len(),
                "period {ends_a:?}: (from sessions, from PM files) differ: {differ:?}"
            );
            if !equal_periods.contains(&ends_a[0]) {
                equal_periods.push(ends_a[0]);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let status = antennas(&by_files).await;
    let pm_status = status.pm_dir.expect("pm_dir in GET /antennas");
    assert!(pm_status.files_ingested >= 2, "{pm_status:?}");
    assert!(pm_status.reports >= 2 * CELLS as u64, "{pm_status:?}");
    // Files written before the image was imported waited for it rather than being skipped.
    assert_eq!(pm_status.foreign_reports, 0, "{pm_status:?}");
    assert_eq!(status.summary.sessions, 0, "no sessions without --antennas");
    let refused: Vec<&v1::BadPmFile> = pm_status
        .bad_files
        .iter()
        .filter(|b| b.file == bad)
        .collect();
    assert_eq!(refused.len(), 1, "{pm_status:?}");
    assert!(
        refused[0].error.starts_with(&format!("{bad} line ")),
        "{}",
        refused[0].error
    );
    assert!(
        std::fs::read_to_string(site_dir.join(bad))
            .expect("the bad file is still there")
            .ends_with("<fileHeader/>"),
        "the bad file was changed"
    );
    assert!(
        antennas(&by_sessions).await.pm_dir.is_none(),
        "no PM status without --pm-dir"
    );
    drop(sim);
}
