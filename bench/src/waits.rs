//! What a node's writes waited for during a phase of a bench: its latency histograms (log
//! syncs, Raft round trips, applies) and its threads' time waiting for a core, each read
//! before and after the phase and printed as the difference.
//!
//! A p99 that grows while something else runs (a snapshot build, a backup) says that the
//! change sets waited, not for what; these say which of disk, network and CPU it was.

use std::collections::BTreeMap;

use anyhow::Context;
use sonraft_client::ApiClient;
use sonraft_testkit::local_cluster::LocalCluster;

/// The histograms a change set's path runs through.
const HISTOGRAMS: &[&str] = &[
    "sonraft_http_request_seconds",
    "sonraft_commit_seconds",
    "sonraft_raft_rpc_seconds",
    "sonraft_raft_rpc_handle_seconds",
    "sonraft_log_sync_seconds",
    "sonraft_apply_wait_sync_seconds",
    "sonraft_apply_seconds",
];

/// Thresholds, in seconds, of the counts printed.
const OVER: &[f64] = &[0.002, 0.005, 0.01];

/// One node's reading: each histogram's cumulative bucket counts (summed over its labels),
/// and each thread's time spent runnable but waiting for a core (ns), by thread name. A thread
/// that ended between two readings (a snapshot's own) drops out of the difference.
#[derive(Default)]
pub struct Reading {
    buckets: BTreeMap<&'static str, BTreeMap<String, f64>>,
    run_delay_ns: BTreeMap<String, u64>,
}

/// Reads every running node.
pub async fn read(cluster: &LocalCluster, client: &ApiClient) -> anyhow::Result<Vec<Reading>> {
    let mut out = Vec::new();
    for p in &cluster.nodes {
        let mut r = Reading::default();
        let text = client
            .get(&p.api, "/metrics")
            .await
            .context("GET /metrics")?;
        let text = String::from_utf8_lossy(&text.body).into_owned();
        for line in text.lines() {
            let Some(name) = HISTOGRAMS.iter().find(|h| {
                line.strip_prefix(**h)
                    .is_some_and(|rest| rest.starts_with("_bucket{"))
            }) else {
                continue;
            };
            let (Some(le), Some(count)) = (
                line.split("le=\"").nth(1).and_then(|s| s.split('"').next()),
                line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
            ) else {
                continue;
            };
            *r.buckets
                .entry(name)
                .or_default()
                .entry(le.to_string())
                .or_default() += count;
        }
        if let Some(pid) = p.pid() {
            r.run_delay_ns = run_delays(pid);
        }
        out.push(r);
    }
    Ok(out)
}

/// Each thread's run delay (`/proc/PID/task/TID/schedstat`, second field), summed by name.
fn run_delays(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let delay = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
        if let Some(delay) = delay {
            *out.entry(name.trim().to_string()).or_default() += delay;
        }
    }
    out
}

/// Prints, per histogram, each node's count over the phase and how many were over each of
/// [`OVER`]; then the threads that waited longest for a core.
pub fn print(phase: &str, before: &[Reading], after: &[Reading]) {
    println!("waits {phase}:");
    for name in HISTOGRAMS {
        let short = name
            .trim_start_matches("sonraft_")
            .trim_end_matches("_seconds");
        let mut line = format!("  {short}:");
        for (i, (b, a)) in before.iter().zip(after).enumerate() {
            let count = |r: &Reading, le: &str| {
                r.buckets
                    .get(name)
                    .and_then(|m| m.get(le))
                    .copied()
                    .unwrap_or(0.0)
            };
            let during = |le: &str| count(a, le) - count(b, le);
            let total = during("+Inf");
            line.push_str(&format!(" node {} {total:.0}", i + 1));
            for t in OVER {
                let le = format!("{t}");
                let over = total - during(&le);
                line.push_str(&format!(" >{:.0}ms {over:.0}", t * 1e3));
            }
            line.push(';');
        }
        println!("{}", line.trim_end_matches(';'));
    }
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let mut waited: Vec<(u64, &String)> = a
            .run_delay_ns
            .iter()
            .map(|(name, ns)| {
                (
                    ns.saturating_sub(b.run_delay_ns.get(name).copied().unwrap_or(0)),
                    name,
                )
            })
            .collect();
        waited.sort_unstable_by(|x, y| y.cmp(x));
        let top: Vec<String> = waited
            .iter()
            .take(4)
            .map(|(ns, name)| format!("{name} {:.0} ms", *ns as f64 / 1e6))
            .collect();
        println!("  node {} waited for a core: {}", i + 1, top.join(", "));
    }
}
