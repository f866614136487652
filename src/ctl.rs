//! `sonraft ctl`: the admin API from a terminal. Human output by default, `--json` for
//! scripts. Node addresses come from `--nodes` or `SONRAFT_NODES` (space- or comma-separated
//! API URLs; the first that answers is used), the token from `--token` or `SONRAFT_TOKEN`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sonraft_client::{ApiClient, ApiResponse};

use crate::upgrade;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// API addresses of the cluster's nodes.
    #[arg(
        long,
        env = "SONRAFT_NODES",
        global = true,
        default_value = "127.0.0.1:8001"
    )]
    nodes: String,
    /// Operator token.
    #[arg(long, env = "SONRAFT_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Request timeout in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Role, term, leader and indexes of every node.
    Status,
    /// Voters, learners and their addresses.
    Members,
    /// Make every node in --nodes a voter of a new cluster.
    Init,
    /// Add the node at API address ADDR as a learner (and, with --voter, make it a voter;
    /// with --replace ID, in voter ID's place, which stays a learner until removed).
    Join {
        addr: String,
        /// Make it a voter once it caught up (refused if that leaves an even number of
        /// voters; use --replace, or --force).
        #[arg(long)]
        voter: bool,
        /// Make it a voter in place of voter ID (replacing a lost site); implies --voter.
        #[arg(long, value_name = "ID")]
        replace: Option<u64>,
        /// Do it even where the cluster refuses (the node does not answer, an even number of
        /// voters, less fault tolerance).
        #[arg(long)]
        force: bool,
    },
    /// Remove node ID from the cluster (a voter only with --force, as that lowers the fault
    /// tolerance: to replace a site, `join NEW --replace ID` first).
    Remove {
        id: u64,
        #[arg(long)]
        force: bool,
    },
    /// Hand leadership to node ID, or with --away-from ID to the most caught-up other voter
    /// (nothing happens when ID does not lead).
    Leader {
        #[arg(required_unless_present = "away_from")]
        id: Option<u64>,
        #[arg(long, conflicts_with = "id")]
        away_from: Option<u64>,
    },
    /// Exit 0 when there is a leader, the cluster can lose a voter and keep a quorum, every
    /// member answers, and no voter trails the leader by more than --max-lag entries;
    /// otherwise name what is wrong and exit 1.
    Health {
        /// A voter trailing the leader by more entries is a problem.
        #[arg(long, default_value_t = 1000)]
        max_lag: u64,
        /// Pass although the cluster could not lose another voter (e.g. during maintenance
        /// of a three-site cluster).
        #[arg(long)]
        allow_no_fault_tolerance: bool,
        /// Pass although some member does not answer.
        #[arg(long)]
        allow_unreachable: bool,
    },
    /// `key=value` lines about the node at API address ADDR (id, site, role, version...).
    NodeInfo { api: String },
    /// Wait until node ID is ready, follows the agreed leader and applied what the leader had
    /// applied when the wait began.
    WaitCaughtUp {
        id: u64,
        /// Seconds.
        #[arg(long, default_value_t = 120)]
        within: u64,
    },
    /// List cells.
    Cells {
        #[arg(long)]
        site: Option<String>,
        #[arg(long, default_value = "linearizable")]
        consistency: String,
    },
    /// Show one cell.
    Cell { id: String },
    /// Propose a change set: `--set cell/S1-1:electrical_tilt=45` (read versions are fetched),
    /// or `--file changeset.json`.
    Propose {
        #[arg(long, default_value = "operator")]
        function: String,
        #[arg(long, default_value = "set by sonraft ctl")]
        reason: String,
        #[arg(long = "set")]
        sets: Vec<String>,
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Applied and refused change sets, newest first.
    History {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only records older than this cursor: the last `cursor` of the previous page
        /// (`INDEX.POSITION`), or `INDEX` for everything before log entry INDEX.
        #[arg(long, value_name = "CURSOR")]
        before: Option<String>,
    },
    /// Bulk-load a network image from a JSON file (`{"sites", "cells", "relations"}`): applied
    /// whole or not at all, and recorded in the history with what it changed.
    Import {
        file: std::path::PathBuf,
        /// Only show what it would change in the live image (created, updated, unchanged, and
        /// every parameter value it would replace); apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why, for the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Download a consistent backup to FILE.
    Backup { file: std::path::PathBuf },
    /// Load the image of a backup file into the (new) cluster.
    Restore { file: std::path::PathBuf },
}

struct Ctl {
    client: ApiClient,
    nodes: Vec<String>,
    json: bool,
}

impl Ctl {
    /// Sends to the first node that answers.
    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<ApiResponse> {
        let mut last = None;
        for n in &self.nodes {
            let url = format!("{}{path}", sonraft_client::base_url(n));
            let bytes = body.as_ref().map(|b| bytes::Bytes::from(b.to_string()));
            match self.client.send(method.clone(), &url, bytes, &[]).await {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e.into()),
            None => bail!("no node address given (--nodes or SONRAFT_NODES)"),
        }
    }

    async fn ok(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let r = self.call(method, path, body).await?;
        let v = r.json();
        if !r.status.is_success() {
            bail!(
                "{} {}",
                r.status,
                if v.is_null() {
                    String::from_utf8_lossy(&r.body).into_owned()
                } else {
                    v.to_string()
                }
            );
        }
        Ok(v)
    }

    fn print(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{v}");
        } else {
            human(v);
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Runs one `ctl` command.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let nodes: Vec<String> = args
        .nodes
        .split([' ', ','])
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    let ctl = Ctl {
        client: ApiClient::new(args.token, Duration::from_secs(args.timeout)),
        nodes,
        json: args.json,
    };
    use hyper::Method;
    match args.command {
        CtlCommand::Status => {
            let mut rows = Vec::new();
            for n in &ctl.nodes {
                match ctl.client.get(n, "/status").await {
                    Ok(r) if r.status.is_success() => rows.push(r.json()),
                    Ok(r) => rows.push(json!({"node": n, "error": format!("{} {}", r.status, String::from_utf8_lossy(&r.body))})),
                    Err(e) => rows.push(json!({"node": n, "error": e.to_string()})),
                }
            }
            ctl.print(&json!(rows), |_| {
                println!(
                    "{:<4} {:<10} {:<10} {:>5} {:>7} {:>10} {:>10}  api",
                    "id", "site", "role", "term", "leader", "last_log", "applied"
                );
                for r in &rows {
                    if let Some(e) = r.get("error") {
                        println!("{:<4} {}  ({})", "?", s(&r["node"]), s(e));
                        continue;
                    }
                    println!(
                        "{:<4} {:<10} {:<10} {:>5} {:>7} {:>10} {:>10}  {}",
                        s(&r["id"]),
                        s(&r["site"]),
                        s(&r["role"]),
                        s(&r["term"]),
                        s(&r["leader_id"]),
                        s(&r["last_log_index"]),
                        s(&r["last_applied_index"]),
                        s(&r["self"]["api_addr"])
                    );
                }
            });
        }
        CtlCommand::Members => {
            let v = ctl.ok(Method::GET, "/status", None).await?;
            ctl.print(&v, |v| {
                println!("voters:   {}", v["voters"]);
                println!("learners: {}", v["learners"]);
                if let Some(nodes) = v["nodes"].as_object() {
                    for (id, n) in nodes {
                        println!(
                            "  {id:<4} {:<10} raft {:<22} api {}",
                            s(&n["site"]),
                            s(&n["raft_addr"]),
                            s(&n["api_addr"])
                        );
                    }
                }
            });
        }
        CtlCommand::Init => {
            let mut list = Vec::new();
            for n in &ctl.nodes {
                let r = ctl
                    .client
                    .get(n, "/status")
                    .await
                    .with_context(|| format!("node {n}"))?;
                let v = r.json();
                list.push(json!({"id": v["id"], "site": v["site"], "raft_addr": v["self"]["raft_addr"], "api_addr": v["self"]["api_addr"]}));
            }
            let v = ctl
                .ok(Method::POST, "/cluster/init", Some(json!({"nodes": list})))
                .await?;
            ctl.print(&v, |v| println!("initialised; voters {}", v["voters"]));
        }
        CtlCommand::Join {
            addr,
            voter,
            replace,
            force,
        } => {
            let r = ctl
                .client
                .get(&addr, "/status")
                .await
                .with_context(|| format!("the new node at {addr}"))?;
            let me = r.json();
            let body = json!({"id": me["id"], "site": me["site"], "raft_addr": me["self"]["raft_addr"], "api_addr": me["self"]["api_addr"]});
            let force_q = if force { "?force=true" } else { "" };
            ctl.ok(
                Method::POST,
                &format!("/cluster/learners{force_q}"),
                Some(body),
            )
            .await?;
            let mut out = json!({"learner": me["id"]});
            if voter || replace.is_some() {
                let st = ctl.ok(Method::GET, "/status", None).await?;
                let mut ids: Vec<Value> = st["voters"].as_array().cloned().unwrap_or_default();
                if let Some(old) = replace {
                    let before = ids.len();
                    ids.retain(|v| v.as_u64() != Some(old));
                    if ids.len() == before {
                        bail!("node {old} is not a voter; nothing to replace");
                    }
                }
                ids.push(me["id"].clone());
                out = ctl
                    .ok(
                        Method::POST,
                        &format!("/cluster/voters{force_q}"),
                        Some(json!({"ids": ids})),
                    )
                    .await?;
            }
            ctl.print(&out, |v| println!("joined: {v}"));
        }
        CtlCommand::Remove { id, force } => {
            let force_q = if force { "?force=true" } else { "" };
            let v = ctl
                .ok(
                    Method::DELETE,
                    &format!("/cluster/nodes/{id}{force_q}"),
                    None,
                )
                .await?;
            ctl.print(&v, |_| println!("removed node {id}"));
        }
        CtlCommand::Leader {
            away_from: Some(from),
            ..
        } => {
            let started = std::time::Instant::now();
            let leader = upgrade::leader_away(
                &ctl.client,
                &ctl.nodes,
                from,
                Duration::from_secs(args.timeout),
            )
            .await?;
            let took_ms = started.elapsed().as_millis() as u64;
            let v = json!({"leader_id": leader, "moved": leader != from, "took_ms": took_ms});
            ctl.print(&v, |_| println!("node {leader} leads ({took_ms} ms)"));
        }
        CtlCommand::Leader { id, .. } => {
            let id = id.context("give a node ID or --away-from ID")?;
            let v = ctl
                .ok(Method::POST, "/cluster/leader", Some(json!({"id": id})))
                .await?;
            ctl.print(&v, |v| {
                println!("node {id} leads (hand-over took {} ms)", s(&v["took_ms"]))
            });
        }
        CtlCommand::Health {
            max_lag,
            allow_no_fault_tolerance,
            allow_unreachable,
        } => {
            let relaxed = upgrade::Relaxed {
                no_fault_tolerance: allow_no_fault_tolerance,
                unreachable: allow_unreachable,
            };
            upgrade::health(&ctl.client, &ctl.nodes, max_lag, relaxed, ctl.json).await?;
        }
        CtlCommand::NodeInfo { api } => upgrade::node_info(&ctl.client, &api).await?,
        CtlCommand::WaitCaughtUp { id, within } => {
            let took =
                upgrade::wait_caught_up(&ctl.client, &ctl.nodes, id, Duration::from_secs(within))
                    .await?;
            let v = json!({"id": id, "took_ms": took.as_millis() as u64});
            ctl.print(&v, |_| {
                println!("node {id} caught up ({} ms)", took.as_millis())
            });
        }
        CtlCommand::Cells { site, consistency } => {
            let mut query = vec![("consistency", consistency.as_str())];
            if let Some(site) = &site {
                query.push(("site", site));
            }
            let path = format!("/image/cells{}", query_string(&query));
            let v = ctl.ok(Method::GET, &path, None).await?;
            ctl.print(&v, |v| {
                println!(
                    "{:<12} {:<8} {:<4} {:>5} {:>7} {:>5} {:>5} {:>5} {:>5}  version",
                    "cell", "site", "rat", "pci", "arfcn", "tilt", "hyst", "ttt", "pwr"
                );
                for c in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<12} {:<8} {:<4} {:>5} {:>7} {:>5} {:>5} {:>5} {:>5}  {}",
                        s(&c["id"]),
                        s(&c["site"]),
                        s(&c["rat"]),
                        s(&c["pci"]),
                        s(&c["arfcn"]),
                        s(&c["electrical_tilt"]),
                        s(&c["hysteresis"]),
                        s(&c["time_to_trigger_ms"]),
                        s(&c["max_tx_power_dbm"]),
                        s(&c["version"])
                    );
                }
            });
        }
        CtlCommand::Cell { id } => {
            let v = ctl
                .ok(
                    Method::GET,
                    &format!("/image/cells/{}", urlencode(&id)),
                    None,
                )
                .await?;
            println!(
                "{}",
                if ctl.json {
                    v.to_string()
                } else {
                    serde_json::to_string_pretty(&v)?
                }
            );
        }
        CtlCommand::Propose {
            function,
            reason,
            sets,
            file,
            dry_run,
        } => {
            let body = match file {
                Some(f) => serde_json::from_slice(
                    &std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
                )
                .with_context(|| format!("{} is not JSON", f.display()))?,
                None => build_change_set(&ctl, &function, &reason, &sets).await?,
            };
            let path = if dry_run {
                "/image/changesets?dry_run=true"
            } else {
                "/image/changesets"
            };
            let r = ctl.call(Method::POST, path, Some(body)).await?;
            let v = r.json();
            ctl.print(&v, |v| match v["outcome"].as_str() {
                Some("applied") => {
                    println!("applied at index {}: {}", s(&v["index"]), v["versions"])
                }
                Some("conflict") => println!("conflict: current versions {}", v["current"]),
                Some(o) => println!("{o}: {}", s(&v["reason"])),
                None => println!("{} {}", r.status, v),
            });
            if !r.status.is_success() {
                std::process::exit(2);
            }
        }
        CtlCommand::History { limit, before } => {
            let limit_text = limit.to_string();
            let mut query = vec![("limit", limit_text.as_str())];
            if let Some(b) = &before {
                query.push(("before", b));
            }
            let path = format!("/image/history{}", query_string(&query));
            let v = ctl.ok(Method::GET, &path, None).await?;
            ctl.print(&v, |v| {
                let page = v.as_array().map(Vec::as_slice).unwrap_or_default();
                for h in page {
                    let writes: Vec<String> = h["writes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|w| format!("{} {}={}", s(&w["entity"]), s(&w["param"]), w["value"]))
                        .collect();
                    println!(
                        "{:>8} {:<20} {:<9} {}  [{}]",
                        s(&h["index"]),
                        s(&h["origin"]["function"]),
                        s(&h["outcome"]["outcome"]),
                        writes.join(", "),
                        s(&h["reason"])
                    );
                }
                // A full page may have more behind it; say how to get it.
                if page.len() == limit
                    && let Some(cursor) = page.last().and_then(|h| h["cursor"].as_str())
                {
                    println!("more: sonraft ctl history --limit {limit} --before {cursor}");
                }
            });
        }
        CtlCommand::Import {
            file,
            dry_run,
            reason,
        } => {
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let mut query = Vec::new();
            if dry_run {
                query.push(("dry_run", "true"));
            }
            if let Some(r) = &reason {
                query.push(("reason", r));
            }
            let path = format!("/image/import{}", query_string(&query));
            let v = ctl.ok(Method::POST, &path, Some(body)).await?;
            ctl.print(&v, print_import);
        }
        CtlCommand::Backup { file } => {
            let r = ctl.call(Method::GET, "/backup", None).await?;
            if !r.status.is_success() {
                bail!("{} {}", r.status, String::from_utf8_lossy(&r.body));
            }
            std::fs::write(&file, &r.body)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!(
                "backup of {} bytes written to {}",
                r.body.len(),
                file.display()
            );
        }
        CtlCommand::Restore { file } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let (meta, body) = sonraft_storage::snapshot::decode_snapshot(f)
                .with_context(|| format!("{} is not a sonraft backup", file.display()))?;
            let image = body.image;
            let import = json!({
                "sites": image.sites.values().collect::<Vec<_>>(),
                "cells": image.cells.values().collect::<Vec<_>>(),
                "relations": image.relations.values().collect::<Vec<_>>(),
                "policy": image.policy,
            });
            let v = ctl.ok(Method::POST, "/image/import", Some(import)).await?;
            ctl.print(&v, |v| {
                println!(
                    "restored the image of index {} ({})",
                    meta.last_log_id.map_or(0, |l| l.index),
                    v["imported"]
                )
            });
        }
    }
    Ok(())
}

/// Builds a change set from `--set entity:param=value` items, reading each entity's version.
async fn build_change_set(
    ctl: &Ctl,
    function: &str,
    reason: &str,
    sets: &[String],
) -> anyhow::Result<Value> {
    if sets.is_empty() {
        bail!("give at least one --set entity:param=value, or --file");
    }
    let mut writes = Vec::new();
    let mut read_set: Vec<Value> = Vec::new();
    for item in sets {
        let (entity, rest) = item
            .split_once(':')
            .context("--set takes entity:param=value, e.g. cell/S1-1:electrical_tilt=45")?;
        let (param, value) = rest
            .split_once('=')
            .context("--set takes entity:param=value")?;
        let value: Value = serde_json::from_str(value).unwrap_or(Value::String(value.to_string()));
        writes.push(json!({"entity": entity, "param": param, "value": value}));
        if read_set.iter().any(|r| r["entity"] == entity) {
            continue;
        }
        let version = match entity.split('/').collect::<Vec<_>>().as_slice() {
            ["cell", id] => ctl
                .ok(
                    hyper::Method::GET,
                    &format!("/image/cells/{}", urlencode(id)),
                    None,
                )
                .await?["version"]
                .clone(),
            ["relation", src, tgt] => {
                let rels = ctl
                    .ok(
                        hyper::Method::GET,
                        &format!("/image/relations{}", query_string(&[("source", src)])),
                        None,
                    )
                    .await?;
                rels.as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["target"] == *tgt)
                    .map(|r| r["version"].clone())
                    .with_context(|| format!("no relation {entity}"))?
            }
            _ => bail!("{entity:?} is not cell/<id> or relation/<source>/<target>"),
        };
        read_set.push(json!({"entity": entity, "version": version}));
    }
    Ok(
        json!({"origin": {"function": function}, "reason": reason, "read_set": read_set, "writes": writes}),
    )
}

/// Percent-encodes a path segment or a query value: every byte but RFC 3986's unreserved
/// characters, so that ids and reasons with spaces, `&`, `=`, `/`, `%`, `+` or non-ASCII
/// letters reach the node as they were typed (axum decodes both). Ten lines of our own rather
/// than a direct dependency on `percent-encoding`: the one encoding set we need is this one.
fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?k=v&...` with every value percent-encoded, or nothing for no pairs.
fn query_string(pairs: &[(&str, &str)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// What an import did, or would do.
fn print_import(v: &Value) {
    let kinds = |d: &Value| {
        ["sites", "cells", "relations"]
            .iter()
            .map(|k| {
                format!(
                    "{k}: {} created, {} updated, {} unchanged",
                    d[k]["created"], d[k]["updated"], d[k]["unchanged"]
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if v["dry_run"] == true {
        if v["valid"] == false {
            println!(
                "the import would be refused: {}",
                v["reason"].as_str().unwrap_or("?")
            );
            return;
        }
        let d = &v["would_change"];
        println!("dry run, nothing applied. It would change {}", kinds(d));
        println!(
            "{} parameter values would be replaced{}:",
            d["changed_params"],
            if d["policy_changed"] == true {
                ", and the policy"
            } else {
                ""
            }
        );
        for c in d["changes"].as_array().into_iter().flatten() {
            println!(
                "  {} {}: {} -> {}",
                c["entity"].as_str().unwrap_or("?"),
                c["param"].as_str().unwrap_or("?"),
                c["from"],
                c["to"]
            );
        }
        if d["changed_params"].as_u64() > d["changes_listed"].as_u64() {
            println!(
                "  ... and {} more",
                d["changed_params"].as_u64().unwrap_or(0)
                    - d["changes_listed"].as_u64().unwrap_or(0)
            );
        }
    } else if v["changed"].is_null() {
        println!("imported {} at index {}", v["imported"], v["index"]);
    } else {
        println!("imported at index {}: {}", v["index"], kinds(&v["changed"]));
        if let Some(n) = v["changed"]["changed_params"].as_u64() {
            println!("{n} parameter values replaced (listed in `sonraft ctl history`)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_path_segments_are_percent_encoded_so_the_node_reads_them_back() {
        assert_eq!(urlencode("North Hill"), "North%20Hill");
        assert_eq!(urlencode("a&b=c/d%e+f?"), "a%26b%3Dc%2Fd%25e%2Bf%3F");
        assert_eq!(urlencode("Zürich"), "Z%C3%BCrich");
        assert_eq!(urlencode("S1-2_x.y~"), "S1-2_x.y~");
        assert_eq!(
            query_string(&[("consistency", "local"), ("site", "North Hill")]),
            "?consistency=local&site=North%20Hill"
        );
        assert_eq!(query_string(&[]), "");
        // What axum's `Query` decodes on the node is what was typed.
        for typed in ["North Hill", "a&b=c/d%e+f?", "Zürich", ""] {
            let uri: axum::http::Uri = format!("/image/cells{}", query_string(&[("site", typed)]))
                .parse()
                .unwrap();
            let axum::extract::Query(decoded) =
                axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).unwrap();
            assert_eq!(decoded, [("site".to_string(), typed.to_string())]);
        }
    }
}
