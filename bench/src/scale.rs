//! Scale: a large image in a local three-node cluster. Prints what issue 17 asks of a national
//! network: the import's time, each node's resident memory and disk with bytes per cell and
//! per relation, a backup's time and size, a restarted follower's time to ready, a new
//! learner's time to catch up, and a single change set's latency on a small image, on the
//! large one, during a backup and while every node builds a snapshot of it.
//!
//! The image is the simulator's network (`sonraft sim export --cells N`) with more relations
//! added per cell, to the next cells by id (the same and neighbouring sites), up to
//! `--relations-per-cell`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{Value, json};
use sonraft_client::ApiClient;
use sonraft_client::v1;
use sonraft_testkit::local_cluster::{LocalCluster, NodeProc, TOKEN};

use super::quantile;
use crate::waits;

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Cells in the large image.
    #[arg(long, default_value_t = 100_000)]
    pub cells: usize,
    /// Relations per cell (the simulator's own, ~6 a cell, then added ones up to this).
    #[arg(long, default_value_t = 30)]
    pub relations_per_cell: usize,
    /// Change sets timed, one after the other, on the small image and on the large one.
    #[arg(long, default_value_t = 300)]
    pub changes: usize,
    /// The binary whose nodes to run (default: this one); the measuring side is this one.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Where the nodes keep their data (default: a fresh directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Import as JSON lines, streamed (`application/x-ndjson`), instead of one JSON body.
    #[arg(long)]
    pub lines: bool,
    /// Extra flags for every node.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    pub node_args: Vec<String>,
    /// Times every node building a snapshot at once this many times (each against the change
    /// sets of the 15 s before it).
    #[arg(long, default_value_t = 1)]
    pub snapshot_rounds: usize,
    /// Leave the nodes' data directories behind (to profile a node loading the large image).
    #[arg(long)]
    pub keep: bool,
}

/// Runs `sonraft bench scale`.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let this = std::env::current_exe().context("cannot find this binary")?;
    let binary = args.binary.clone().unwrap_or_else(|| this.clone());
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sonraft-scale-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    let t = Instant::now();
    let small = image_body(&this, 300, 0, args.lines)?;
    let large = image_body(&this, args.cells, args.relations_per_cell, args.lines)?;
    println!(
        "image: {} cells, {} relations, {:.1} MB of JSON (built in {:.1} s)",
        large.cells,
        large.relations,
        large.body.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let mut node_args = args.node_args.clone();
    node_args.extend([
        "--max-import-bytes".to_string(),
        (large.body.len() + (1 << 20)).to_string(),
    ]);
    let mut cluster = LocalCluster::start(&binary, &dir, 3, &node_args).await?;
    // An import or a backup of a large image takes longer than the usual client's deadline.
    let client = ApiClient::new(Some(TOKEN.to_string()), Duration::from_secs(1800));
    let rss_empty = rss_kib(&cluster)?;

    import(&cluster, &client, &small.body, args.lines).await?;
    let small_lat = change_latencies(&cluster, &client, &small.first_cell, args.changes).await?;

    let t = Instant::now();
    let index = import(&cluster, &client, &large.body, args.lines).await?;
    let import_s = t.elapsed().as_secs_f64();
    cluster
        .wait_applied(index, Duration::from_secs(1800))
        .await?;
    let applied_s = t.elapsed().as_secs_f64();
    let applied_at = Instant::now();
    println!(
        "import: {import_s:.1} s acknowledged, {applied_s:.1} s applied on every node ({:.0} cells/s, {:.0} relations/s)",
        large.cells as f64 / import_s,
        large.relations as f64 / import_s
    );

    let large_lat = change_latencies(&cluster, &client, &large.first_cell, args.changes).await?;
    let rss = rss_kib(&cluster)?;
    let disk: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|p| dir_bytes(&dir.join(format!("node{}", p.id))))
        .collect();
    let entities = (large.cells + large.relations) as f64;
    for (i, p) in cluster.nodes.iter().enumerate() {
        let grew = rss[i].saturating_sub(rss_empty[i]) as f64 * 1024.0;
        println!(
            "node {}: resident {:.0} MB ({:.0} B per cell + relation over an empty node), disk {:.0} MB ({:.0} B per cell + relation)",
            p.id,
            rss[i] as f64 / 1024.0,
            grew / entities,
            disk[i] as f64 / 1e6,
            disk[i] as f64 / entities
        );
    }

    let leader = cluster.leader(Duration::from_secs(30)).await?;
    let backup_url = format!("{}/backup", client.base_url(&cluster.nodes[leader].api));
    let t = Instant::now();
    let backup_bytes = download_elsewhere(backup_url.clone()).await?;
    let backup_s = t.elapsed().as_secs_f64();
    println!(
        "backup: {:.1} MB in {backup_s:.1} s (right after the import)",
        backup_bytes as f64 / 1e6
    );
    // Again, with change sets one after the other meanwhile: what a snapshot's capture costs
    // the writes (a backup captures the state as a snapshot does).
    let t = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let backup = async {
        let r = download_elsewhere(backup_url).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let during = latencies_until(&cluster, &client, &large.first_cell, &done);
    let (again, during_lat) = tokio::join!(backup, during);
    let (again, during_lat) = (again?, during_lat?);
    let backup_again_s = t.elapsed().as_secs_f64();
    println!(
        "backup again: {:.1} MB in {backup_again_s:.1} s",
        again as f64 / 1e6
    );

    let follower = (leader + 1) % cluster.nodes.len();
    cluster.nodes[follower].stop()?;
    let t = Instant::now();
    cluster.nodes[follower].restart()?;
    let p = &cluster.nodes[follower];
    cluster.wait_ready(p, Duration::from_secs(600)).await?;
    let restart_s = t.elapsed().as_secs_f64();
    println!(
        "restart: node {} ready {restart_s:.1} s after its start",
        p.id
    );

    // Again once the import's checkpoint, the backup and the restart are behind (before a
    // fourth node shares the two cores): the checkpoint writers catch up for a minute and a
    // half after a national import, and a restored node's rewrites sled as long.
    checkpoints_in_sled(&cluster, &client).await?;
    let checkpoints_s = applied_at.elapsed().as_secs_f64();
    println!(
        "checkpoints: in sled on every node {checkpoints_s:.1} s after the import was applied"
    );
    let settled_lat = change_latencies(&cluster, &client, &large.first_cell, args.changes).await?;

    // Every node builds a snapshot of the whole image at once, as when the count falls due on
    // all three at the same index, with change sets one after the other meanwhile; against
    // as long a window of change sets just before (a p99 of 300 is the third worst).
    let mut rounds = Vec::new();
    for round in 1..=args.snapshot_rounds.max(1) {
        let at_rest = waits::read(&cluster, &client).await?;
        let quiet = latencies_for(&cluster, &client, &large.first_cell, QUIET_WINDOW).await?;
        let before = waits::read(&cluster, &client).await?;
        waits::print(
            &format!("before snapshots (round {round})"),
            &at_rest,
            &before,
        );
        let (lat, built_s) = snapshots_everywhere(&cluster, &client, &large.first_cell).await?;
        let after = waits::read(&cluster, &client).await?;
        waits::print(
            &format!("during snapshots (round {round})"),
            &before,
            &after,
        );
        println!(
            "snapshots (round {round}): built on every node at once in {built_s:.1} s; change sets p50 {:.2} ms, p99 {:.2} ms ({}) against p50 {:.2} ms, p99 {:.2} ms ({}) in the {} s before: p99 {:.1}x",
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            lat.len(),
            quantile(&quiet, 0.5),
            quantile(&quiet, 0.99),
            quiet.len(),
            QUIET_WINDOW.as_secs(),
            quantile(&lat, 0.99) / quantile(&quiet, 0.99),
        );
        rounds.push((quiet, lat, built_s));
    }
    let (_, snapshot_lat, snapshot_s) = &rounds[0];
    let (snapshot_lat, snapshot_s) = (snapshot_lat.clone(), *snapshot_s);

    let t = Instant::now();
    let caught_up_s = match join_learner(&mut cluster, &client, &binary, &node_args).await {
        Ok(()) => {
            let s = t.elapsed().as_secs_f64();
            println!("learner: caught up {s:.1} s after it was added");
            Some(s)
        }
        Err(e) => {
            println!("learner: {e:#}");
            None
        }
    };

    // Memory once the import's transient copies (its changes on their way to sled, the staged
    // parts) are gone: the three first nodes, after the backups, the restart and the join.
    let rss_end = rss_kib(&cluster)?;
    for (i, p) in cluster.nodes.iter().take(3).enumerate() {
        println!(
            "node {}: resident {:.0} MB at the end ({:.0} B per cell + relation over an empty node){}",
            p.id,
            rss_end[i] as f64 / 1024.0,
            rss_end[i].saturating_sub(rss_empty[i]) as f64 * 1024.0 / entities,
            if i == follower { ", restarted" } else { "" }
        );
    }
    for (name, l) in [
        ("small image", &small_lat),
        ("large image right after its import", &large_lat),
        ("large image later", &settled_lat),
        ("large image during a backup", &during_lat),
        ("large image during snapshots on every node", &snapshot_lat),
    ] {
        println!(
            "change set on the {name}: p50 {:.2} ms, p99 {:.2} ms ({} one after the other)",
            quantile(l, 0.5),
            quantile(l, 0.99),
            l.len()
        );
    }
    println!(
        "{}",
        json!({
            "bench": "scale",
            "cells": large.cells,
            "relations": large.relations,
            "json_bytes": large.body.len(),
            "import_s": import_s,
            "applied_s": applied_s,
            "checkpoints_s": checkpoints_s,
            "rss_kib": rss,
            "rss_empty_kib": rss_empty,
            "rss_end_kib": rss_end,
            "disk_bytes": disk,
            "backup_bytes": backup_bytes,
            "backup_s": backup_s,
            "backup_again_s": backup_again_s,
            "restart_s": restart_s,
            "learner_s": caught_up_s,
            "small_p50_ms": quantile(&small_lat, 0.5),
            "small_p99_ms": quantile(&small_lat, 0.99),
            "large_p50_ms": quantile(&large_lat, 0.5),
            "large_p99_ms": quantile(&large_lat, 0.99),
            "settled_p50_ms": quantile(&settled_lat, 0.5),
            "settled_p99_ms": quantile(&settled_lat, 0.99),
            "during_backup_p50_ms": quantile(&during_lat, 0.5),
            "during_backup_p99_ms": quantile(&during_lat, 0.99),
            "snapshot_s": snapshot_s,
            "during_snapshot_p50_ms": quantile(&snapshot_lat, 0.5),
            "during_snapshot_p99_ms": quantile(&snapshot_lat, 0.99),
            "snapshot_rounds": rounds.iter().map(|(quiet, during, built_s)| json!({
                "built_s": built_s,
                "before_p50_ms": quantile(quiet, 0.5),
                "before_p99_ms": quantile(quiet, 0.99),
                "during_p50_ms": quantile(during, 0.5),
                "during_p99_ms": quantile(during, 0.99),
            })).collect::<Vec<_>>(),
        })
    );
    drop(cluster);
    if args.keep {
        println!("data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

struct Image {
    body: Vec<u8>,
    cells: usize,
    relations: usize,
    first_cell: String,
}

/// The `POST /image/import` body of the simulator's network of `cells` cells, with relations
/// added up to `per_cell` a cell; as JSON lines with `lines`.
fn image_body(binary: &Path, cells: usize, per_cell: usize, lines: bool) -> anyhow::Result<Image> {
    let out = std::process::Command::new(binary)
        .args(["sim", "export", "--cells", &cells.to_string()])
        .output()
        .context("sonraft sim export")?;
    if !out.status.success() {
        bail!(
            "sim export: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut image: Value = serde_json::from_slice(&out.stdout)?;
    let ids: Vec<String> = image["cells"]
        .as_array()
        .context("an export without cells")?
        .iter()
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect();
    let relations = image["relations"].take();
    let relations = relations.as_array().cloned().unwrap_or_default();
    let mut have: HashSet<(String, String)> = relations
        .iter()
        .filter_map(|r| Some((r["source"].as_str()?.into(), r["target"].as_str()?.into())))
        .collect();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for (s, _) in &have {
        *counts.entry(s.clone()).or_default() += 1;
    }
    // Relations after the rest: written as they are made, never held as JSON values.
    let mut body = Vec::new();
    let tail = if lines {
        for (kind, list) in [("site", "sites"), ("cell", "cells")] {
            for v in image[list].as_array().into_iter().flatten() {
                serde_json::to_writer(&mut body, &json!({ kind: v }))?;
                body.push(b'\n');
            }
        }
        Vec::new()
    } else {
        image["relations"] = Value::Array(Vec::new());
        body = serde_json::to_vec(&image)?;
        let marker = b"\"relations\":[]";
        let at = body
            .windows(marker.len())
            .position(|w| w == marker)
            .context("no relations in the export")?
            + marker.len()
            - 1;
        body.split_off(at)
    };
    let mut n = 0usize;
    let next = |body: &mut Vec<u8>, n: &mut usize| {
        if lines {
            if *n > 0 {
                body.push(b'\n');
            }
            body.extend_from_slice(b"{\"relation\":");
        } else if *n > 0 {
            body.push(b',');
        }
        *n += 1;
    };
    let close = if lines { "}" } else { "" };
    for r in &relations {
        next(&mut body, &mut n);
        serde_json::to_writer(&mut body, r)?;
        body.extend_from_slice(close.as_bytes());
    }
    for (i, source) in ids.iter().enumerate() {
        let mut k = 1;
        let mut have_now = counts.get(source).copied().unwrap_or(0);
        while have_now < per_cell && k < ids.len() {
            let target = &ids[(i + k) % ids.len()];
            k += 1;
            if !have.insert((source.clone(), target.clone())) {
                continue;
            }
            next(&mut body, &mut n);
            write!(
                body,
                r#"{{"source":"{source}","target":"{target}"}}{close}"#
            )?;
            have_now += 1;
        }
    }
    if lines {
        body.push(b'\n');
    }
    body.extend_from_slice(&tail);
    Ok(Image {
        body,
        cells: ids.len(),
        relations: n,
        first_cell: ids.first().cloned().unwrap_or_default(),
    })
}

/// Imports `body` through the leader; the log index it was applied at.
async fn import(
    cluster: &LocalCluster,
    client: &ApiClient,
    body: &[u8],
    lines: bool,
) -> anyhow::Result<u64> {
    let leader = cluster.leader(Duration::from_secs(30)).await?;
    let url = format!(
        "{}/image/import",
        client.base_url(&cluster.nodes[leader].api)
    );
    let body = Bytes::copy_from_slice(body);
    let r = if lines {
        client
            .send_stream(
                Method::POST,
                &url,
                sonraft_client::whole_body(body),
                v1::IMPORT_LINES,
            )
            .await?
    } else {
        client.send(Method::POST, &url, Some(body), &[]).await?
    };
    if !r.status.is_success() {
        bail!("import: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    let answer: v1::Imported = r.parse().context("the import's answer")?;
    Ok(answer.index)
}

/// Latencies in ms of `n` change sets on `cell`, one after the other, through the leader.
/// `GET url` on a thread and runtime of its own, the body counted and dropped as it comes: a
/// backup client elsewhere. Received on the bench's runtime and held whole, the 434 MB of a
/// national image's backup delayed the change sets timed meanwhile on that runtime (their
/// p99 measured the bench, not the node).
async fn download_elsewhere(url: String) -> anyhow::Result<u64> {
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = ApiClient::new(Some(TOKEN.to_string()), Duration::from_secs(1800));
            let (status, mut body) = client.get_streamed(&url).await?;
            if !status.is_success() {
                bail!("{url}: {status}");
            }
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame.context("the backup was cut short")?.data_ref() {
                    bytes += data.len() as u64;
                }
            }
            Ok(bytes)
        })
    })
    .await?
}

/// Change sets one after the other on `cell` until `done`, sorted.
async fn latencies_until(
    cluster: &LocalCluster,
    client: &ApiClient,
    cell: &str,
    done: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        out.extend(change_latencies(cluster, client, cell, 2).await?);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// How long change sets are timed just before the snapshots, to compare with during them.
const QUIET_WINDOW: Duration = Duration::from_secs(15);

/// Change sets one after the other on `cell` for `window`, sorted.
async fn latencies_for(
    cluster: &LocalCluster,
    client: &ApiClient,
    cell: &str,
    window: Duration,
) -> anyhow::Result<Vec<f64>> {
    let done = std::sync::atomic::AtomicBool::new(false);
    let timer = async {
        tokio::time::sleep(window).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (lat, ()) = tokio::join!(latencies_until(cluster, client, cell, &done), timer);
    lat
}

/// Asks every node for a snapshot at once and times change sets on `cell` until each has
/// built it: the latencies, sorted, and the seconds it took.
async fn snapshots_everywhere(
    cluster: &LocalCluster,
    client: &ApiClient,
    cell: &str,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let mut up_to = Vec::new();
    for p in &cluster.nodes {
        let url = format!("{}/snapshot", client.base_url(&p.api));
        let r = client.send(Method::POST, &url, None, &[]).await?;
        let started: v1::SnapshotStarted = r.parse().context("POST /snapshot")?;
        up_to.push(started.up_to_index);
    }
    let t = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let built = async {
        let r = snapshots_at(cluster, &up_to, Duration::from_secs(600)).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let during = latencies_until(cluster, client, cell, &done);
    let (built, lat) = tokio::join!(built, during);
    built?;
    Ok((lat?, t.elapsed().as_secs_f64()))
}

/// Waits until each node's snapshot covers its index in `up_to`.
async fn snapshots_at(
    cluster: &LocalCluster,
    up_to: &[u64],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut behind = Vec::new();
        for (p, want) in cluster.nodes.iter().zip(up_to) {
            let at = cluster.status(p).await;
            let at = at.as_ref().and_then(|s| s["snapshot_index"].as_u64());
            if at.is_none_or(|at| at < *want) {
                behind.push(p.id);
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nodes {behind:?} built no snapshot within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn change_latencies(
    cluster: &LocalCluster,
    client: &ApiClient,
    cell: &str,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let leader = cluster.leader(Duration::from_secs(30)).await?;
    let url = format!(
        "{}/image/changesets",
        client.base_url(&cluster.nodes[leader].api)
    );
    // Read again while the cluster answers unavailable (a leader that lost its quorum for a
    // moment answers 503): that is a figure of the run, not its end.
    let mut tries = 0;
    let now: v1::Cell = loop {
        let r = client
            .get(&cluster.nodes[leader].api, &format!("/image/cells/{cell}"))
            .await?;
        match r.parse() {
            Ok(cell) => break cell,
            Err(e) if tries < 50 => {
                tries += 1;
                println!("reading cell {cell}: {e:#}; again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("reading the cell to change"),
        }
    };
    // Back and forth by one step, inside the rules' step limit.
    let (a, b) = (now.hysteresis, now.hysteresis.saturating_sub(1).max(1));
    let (a, b) = if a == b { (a, a + 1) } else { (a, b) };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!(
            r#"{{"origin":{{"function":"operator"}},"reason":"bench scale","read_set":[],"writes":[{{"entity":"cell/{cell}","param":"hysteresis","value":{}}}]}}"#,
            if i % 2 == 0 { b } else { a }
        );
        let t = Instant::now();
        let r = client
            .send(Method::POST, &url, Some(Bytes::from(body)), &[])
            .await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        // An unknown outcome (the leader lost its quorum for an election timeout) is a figure
        // of the run, not the end of it: the next change set does not depend on it.
        if r.status == hyper::StatusCode::SERVICE_UNAVAILABLE {
            println!(
                "change set {i}: answered 503 after {:.0} ms: {}",
                out.last().copied().unwrap_or_default(),
                String::from_utf8_lossy(&r.body)
            );
            continue;
        }
        if !r.status.is_success() {
            bail!(
                "change set: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Starts a fourth node, adds it as a learner, and waits until it applied what the leader had.
async fn join_learner(
    cluster: &mut LocalCluster,
    client: &ApiClient,
    binary: &Path,
    node_args: &[String],
) -> anyhow::Result<()> {
    let leader = cluster.leader(Duration::from_secs(30)).await?;
    let leader_api = cluster.nodes[leader].api.clone();
    let id = cluster.nodes.len() as u64 + 1;
    let p = NodeProc::start(
        binary,
        id,
        &cluster.dir.join(format!("node{id}")),
        "127.0.0.1:0",
        "127.0.0.1:0",
        node_args,
    )?;
    let target = status(client, &leader_api).await?.last_applied_index;
    let spec = v1::NodeSpec {
        id,
        site: format!("site-{id}"),
        raft_addr: p.raft.clone(),
        api_addr: p.api.clone(),
    };
    let api = p.api.clone();
    cluster.nodes.push(p);
    let r = client.post(&leader_api, "/cluster/learners", &spec).await?;
    if !r.status.is_success() {
        bail!(
            "add learner: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Ok(s) = status(client, &api).await
            && s.last_applied_index >= target
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the learner did not catch up within 30 min");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node's checkpoint in sled holds all it applied (a node that does not
/// report it counts as caught up).
async fn checkpoints_in_sled(cluster: &LocalCluster, client: &ApiClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    for p in &cluster.nodes {
        loop {
            // An answer that fails (a node busy for a moment) is asked again.
            if let Ok(s) = status(client, &p.api).await
                && s.checkpoint_pending.is_none_or(|n| n == 0)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {}: its checkpoint is still behind after 10 minutes",
                    p.id
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

async fn status(client: &ApiClient, api: &str) -> anyhow::Result<v1::Status> {
    let r = client.get(api, "/status").await?;
    Ok(r.parse()?)
}

/// Resident memory (VmRSS, KiB) of each node.
fn rss_kib(cluster: &LocalCluster) -> anyhow::Result<Vec<u64>> {
    cluster
        .nodes
        .iter()
        .map(|p| {
            let pid = p.pid().context("a node without a process")?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .context("no VmRSS")
        })
        .collect()
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
