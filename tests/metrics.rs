//! `/metrics` as an operations team consumes it (issue 15): every `sonraft_` family a running
//! node exports has `# HELP` and `# TYPE`, is typed as `telemetry::METRICS` says (totals are
//! counters, nothing else ends in `_total`), `sonraft_build_info` names the release, and
//! `promtool check metrics` finds nothing to lint. The alert rules and the dashboard under
//! `deploy/` pass `promtool check rules` and name only metrics a node exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sonraft_node::telemetry::{Kind, METRICS};

fn promtool() -> &'static str {
    assert!(
        Command::new("promtool")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "promtool is missing: install Debian's prometheus package (.ci/run does)"
    );
    "promtool"
}

/// The base family of a sample name: histograms' `_bucket`, `_sum` and `_count` series belong
/// to the histogram.
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    name
}

/// `sonraft_` metric names in `text`, histogram series folded into their family.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sonraft_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_is_described_and_typed_and_the_deploy_files_use_real_names() {
    let promtool = promtool();
    let dir = tempfile::tempdir().unwrap();
    let (_sim, c) = simulated_site(dir.path(), &[]).await;
    // A few closed periods: the antenna and SON metrics exist by then.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&c, "sonraft_periods_closed_total ").await < 3.0 {
        assert!(Instant::now() < deadline, "no counter period closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.client.get(&c.nodes[0].api, "/metrics").await.unwrap();
    let text = String::from_utf8(r.body.to_vec()).unwrap();

    let mut help = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            types.insert(name.to_string(), kind.to_string());
        } else if line.starts_with("sonraft_") {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    let known: BTreeMap<&str, Kind> = METRICS.iter().map(|(n, k, _)| (*n, *k)).collect();
    let families: BTreeSet<&str> = samples.iter().map(|s| family(s, &types)).collect();
    assert!(
        families.len() >= 25,
        "only {} families exported: {families:?}",
        families.len()
    );
    for f in &families {
        let kind = known
            .get(f)
            .unwrap_or_else(|| panic!("{f} is exported but not in telemetry::METRICS"));
        assert!(help.contains(*f), "{f} has no # HELP");
        assert_eq!(
            types.get(*f).map(String::as_str),
            Some(kind.name()),
            "{f} is not typed {}",
            kind.name()
        );
        assert_eq!(
            f.ends_with("_total"),
            *kind == Kind::Counter,
            "{f}: counters, and only counters, end in _total"
        );
    }
    let build = text
        .lines()
        .find(|l| l.starts_with("sonraft_build_info{"))
        .expect("sonraft_build_info");
    assert!(
        build.contains(&format!("version=\"{}\"", sonraft_node::RELEASE)) && build.ends_with(" 1"),
        "{build}"
    );

    // promtool lints the exposition itself.
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The alert rules and the dashboard.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rules = root.join("prometheus/alerts.yml");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dashboard = std::fs::read_to_string(root.join("grafana/sonraft-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(!parsed["panels"].as_array().unwrap().is_empty());
    for (file, text) in [
        ("alerts.yml", std::fs::read_to_string(&rules).unwrap()),
        ("sonraft-dashboard.json", dashboard),
    ] {
        let names = names_in(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        for n in names {
            assert!(
                known.contains_key(n.as_str()),
                "{file} uses {n}, which no node exports"
            );
        }
    }
}
