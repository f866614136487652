//! `sonraft ctl`: the admin API from a terminal. Human output by default, `--json` for
//! scripts. Node addresses come from `--nodes` or `SONRAFT_NODES` (space- or comma-separated
//! API URLs; the first that answers is used), the token from `SONRAFT_TOKEN` or `--token-file` (never the command line).
//!
//! Scripts can trust two things: the exit status says which kind of failure it was
//! ([`exit`]: 0 ok, 1 the cluster said no, 2 usage, 3 a change refused as given, 4 no node
//! answered), and the output never panics on a reader that went away ([`output`]).

pub(crate) mod exit;
pub(crate) mod output;
pub(crate) mod units;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sonraft_client::{ApiClient, ApiResponse, v1, with_query};

use self::exit::{Exit, Failure};
use self::output::outln;
use crate::upgrade;

/// Examples, before the exit statuses, after the flags in `sonraft ctl --help`.
const EXAMPLES: &str = "\
Examples:
  export SONRAFT_NODES=\"http://10.0.1.5:8001 http://10.0.2.5:8001 http://10.0.3.5:8001\"
  export SONRAFT_TOKEN=...
  sonraft ctl status
  sonraft ctl cells --site S00001 | head
  sonraft ctl propose --set cell/S00001-1:electrical_tilt=45 --reason \"tilt down\"
  sonraft ctl health || echo \"not healthy: exit $?\"
  sonraft ctl status --ca certs/ca.pem --nodes https://10.0.1.5:8001,https://10.0.2.5:8001";

#[derive(Args, Debug)]
#[command(after_help = format!("{EXAMPLES}\n\n{}", exit::TABLE))]
pub struct CtlArgs {
    /// API addresses of the cluster's nodes, space- or comma-separated; the first that answers
    /// is used. Required (here or in SONRAFT_NODES) by every command but node-info.
    #[arg(long, env = "SONRAFT_NODES", global = true, value_name = "ADDRS")]
    nodes: Option<String>,
    /// File holding the token (mode 600), if SONRAFT_TOKEN is not set. A token is never taken
    /// on the command line, where every user of the machine can read it.
    #[arg(long, env = "SONRAFT_TOKEN_FILE", global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Refused: a token on the command line is visible to every user (`ps`).
    #[arg(long = "token", hide = true, global = true, value_name = "TOKEN")]
    token_on_command_line: Option<String>,
    /// PEM file of the CA that signed the nodes' certificates, to reach them over https://
    /// (addresses without a scheme are then taken as https://).
    #[arg(long, env = "SONRAFT_CA", global = true, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Request timeout in seconds.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

/// `ctl control` actions.
#[derive(Subcommand, Debug)]
enum ControlAction {
    /// Give SITE's cell sites back to its node now, each at a new epoch.
    HandBack {
        /// The site, as `members` shows it.
        site: String,
    },
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Role, term, leader and indexes of every node in --nodes and every member they list
    /// (exit 1 unless each answers).
    #[command(
        after_help = "Example:\n  sonraft ctl status --nodes http://127.0.0.1:8001,http://127.0.0.1:8002"
    )]
    Status,
    /// Voters, learners and their addresses.
    #[command(after_help = "Example:\n  sonraft ctl members --json")]
    Members,
    /// Make every node in --nodes a voter of a new cluster.
    #[command(
        after_help = "Example:\n  SONRAFT_NODES=\"http://h1:8001 http://h2:8001 http://h3:8001\" sonraft ctl init"
    )]
    Init,
    /// Add the node at API address ADDR as a learner (and, with --voter, make it a voter;
    /// with --replace ID, in voter ID's place, which stays a learner until removed).
    #[command(after_help = "Examples:\n  \
        sonraft ctl join http://10.0.4.5:8001 --voter\n  \
        sonraft ctl join http://10.0.4.5:8001 --replace 3 && sonraft ctl remove 3")]
    Join {
        /// API address of the new node (already running, with an empty data directory).
        #[arg(value_name = "ADDR")]
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
    #[command(after_help = "Example:\n  sonraft ctl remove 3 --force")]
    Remove {
        /// The node's id, as `status` shows it.
        id: u64,
        /// Remove it even if it is a voter (the cluster tolerates fewer failures).
        #[arg(long)]
        force: bool,
    },
    /// Hand leadership to node ID, or with --away-from ID to the most caught-up other voter
    /// (nothing happens when ID does not lead).
    #[command(after_help = "Examples:\n  \
        sonraft ctl leader 2\n  \
        sonraft ctl leader --away-from 1   # before maintenance of node 1")]
    Leader {
        /// The voter that should lead.
        #[arg(required_unless_present = "away_from")]
        id: Option<u64>,
        /// If node ID leads, hand leadership to the most caught-up other ready voter and wait
        /// until the cluster agrees on it.
        #[arg(long, conflicts_with = "id", value_name = "ID")]
        away_from: Option<u64>,
    },
    /// Which site's node controls each cell site's antennas: per site, and the cell sites
    /// taken over from a lost site, with their fencing epochs; `hand-back SITE` gives a site's
    /// cell sites back to its node now.
    #[command(after_help = "Examples:\n  \
        sonraft ctl control\n  \
        sonraft ctl control hand-back site-2   # with control_hand_back = \"manual\"")]
    Control {
        #[command(subcommand)]
        action: Option<ControlAction>,
    },
    /// Exit 0 when there is a leader, the cluster can lose a voter and keep a quorum, every
    /// member answers, and no voter trails the leader by more than --max-lag entries;
    /// otherwise name what is wrong and exit 1.
    #[command(after_help = "Example:\n  \
        sonraft ctl health --allow-no-fault-tolerance || exit 1")]
    Health {
        /// A voter trailing the leader by more entries is a problem.
        #[arg(long, default_value_t = 1000, value_name = "ENTRIES")]
        max_lag: u64,
        /// Pass although the cluster could not lose another voter (e.g. during maintenance
        /// of a three-site cluster).
        #[arg(long)]
        allow_no_fault_tolerance: bool,
        /// Pass although some member does not answer.
        #[arg(long)]
        allow_unreachable: bool,
    },
    /// `key=value` lines about the node at API address ADDR (id, site, role, version...);
    /// needs no --nodes.
    #[command(after_help = "Example:\n  \
        sonraft ctl node-info http://10.0.1.5:8001 | sed -n 's/^role=//p'")]
    NodeInfo {
        /// API address of the node.
        #[arg(value_name = "ADDR")]
        api: String,
    },
    /// Wait until node ID is ready, follows the agreed leader and applied what the leader had
    /// applied when the wait began (exit 1 if it did not within --within seconds).
    #[command(after_help = "Example:\n  sonraft ctl wait-caught-up 2 --within 300")]
    WaitCaughtUp {
        /// The node's id.
        id: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        within: u64,
    },
    /// List cells.
    #[command(after_help = "Examples:\n  \
        sonraft ctl cells --site S00001\n  \
        sonraft ctl cells --consistency local --json")]
    Cells {
        /// Only the cells of this site.
        #[arg(long)]
        site: Option<String>,
        /// `linearizable` (the leader confirms it still leads), `leader` (the leader's image,
        /// unconfirmed) or `local` (this node's image, maybe stale, no leader needed).
        #[arg(long, default_value = "linearizable", value_name = "LEVEL")]
        consistency: String,
    },
    /// Show one cell.
    #[command(after_help = "Example:\n  sonraft ctl cell S00001-1")]
    Cell {
        /// The cell's id.
        id: String,
    },
    /// Propose a change set: `--set cell/S1-1:electrical_tilt=45` (read versions are fetched),
    /// or `--file changeset.json`.
    #[command(after_help = "Examples:\n  \
        sonraft ctl propose --set cell/S00001-1:electrical_tilt=45 --reason \"tilt down\"\n  \
        sonraft ctl propose --set relation/S00001-1/S00002-3:cio_db=2 --dry-run\n  \
        sonraft ctl propose --file changeset.json\n\n\
        Exit 3 when the change set is refused (conflict, rejected or invalid).")]
    Propose {
        /// The function it is proposed as, for the rules and the history: `operator` (a SON
        /// function's name only on a lab cluster started with --api-son-origins).
        #[arg(long, default_value = "operator")]
        function: String,
        /// Why, for the history.
        #[arg(long, default_value = "set by sonraft ctl")]
        reason: String,
        /// One write, `entity:param=value` (entity `cell/ID` or `relation/SOURCE/TARGET`);
        /// repeat for more. The value is read as JSON, else as a string.
        #[arg(long = "set", value_name = "ENTITY:PARAM=VALUE")]
        sets: Vec<String>,
        /// A whole change set as JSON (`origin`, `reason`, `read_set`, `writes`), sent as it is.
        #[arg(long, value_name = "FILE", conflicts_with = "sets")]
        file: Option<std::path::PathBuf>,
        /// Only judge it: say what it would apply or why it would be refused; apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Applied and refused change sets, newest first: log time (UTC), log index, function,
    /// outcome, what it wrote, why it was proposed and, when refused, why.
    #[command(after_help = "Examples:\n  \
        sonraft ctl history --limit 50\n  \
        sonraft ctl history --cell S00012-2 --since 2h\n  \
        sonraft ctl history --function load_balancing --outcome rejected\n  \
        sonraft ctl history --follow")]
    History {
        /// At most this many records.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only records older than this cursor: the last `cursor` of the previous page
        /// (`INDEX.POSITION`), or `INDEX` for everything before log entry INDEX.
        #[arg(long, value_name = "CURSOR")]
        before: Option<String>,
        /// Only records that write this cell or a relation from or to it.
        #[arg(long, value_name = "CELL")]
        cell: Option<String>,
        /// Only records of this function (operator, pci_conflict, mobility_robustness,
        /// load_balancing, energy_saving, anr_pruning, anr_add, coverage_capacity,
        /// outage_compensation, fallback, import).
        #[arg(long, value_name = "FUNCTION")]
        function: Option<String>,
        /// Only records with this outcome.
        #[arg(long, value_parser = ["applied", "conflict", "rejected", "invalid", "pending"])]
        outcome: Option<String>,
        /// Only records this recent: a duration back from now (`90s`, `10m`, `2h`, `3d`) or a
        /// time (`2026-12-02T22:15:00Z`).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Keep printing new records as they are committed (oldest first), until interrupted.
        #[arg(long, conflicts_with = "before")]
        follow: bool,
    },
    /// Follow the change stream: every change set as it is applied or refused (same columns as
    /// `history`, oldest first), leader and membership changes; reconnects to another node
    /// without losing or repeating a record. Until interrupted.
    #[command(after_help = "Examples:\n  \
        sonraft ctl watch\n  \
        sonraft ctl watch --from-index 1200 --function load_balancing\n  \
        sonraft ctl watch --json | jq -c 'select(.outcome.outcome == \"rejected\")'")]
    Watch {
        /// Start with the records of log entry N (default: what is applied from now on).
        #[arg(long, value_name = "N")]
        from_index: Option<u64>,
        /// Only records that write this cell or a relation from or to it.
        #[arg(long, value_name = "CELL")]
        cell: Option<String>,
        /// Only records of this function (as for `history`).
        #[arg(long, value_name = "FUNCTION")]
        function: Option<String>,
        /// Only records with this outcome.
        #[arg(long, value_parser = ["applied", "conflict", "rejected", "invalid", "pending"])]
        outcome: Option<String>,
        /// Also print a line per KPI period (cells, mean and highest load).
        #[arg(long)]
        kpis: bool,
    },
    /// Bulk-load a network image from a JSON file (`{"sites", "cells", "relations"}`): applied
    /// whole or not at all, and recorded in the history with what it changed.
    #[command(after_help = "Examples:\n  \
        sonraft ctl import network.json --dry-run\n  \
        sonraft ctl import network.json --reason \"spring re-plan\"")]
    Import {
        /// The image as JSON (`{"sites": [...], "cells": [...], ...}`), or, for an image of any
        /// size, as JSON lines (a name ending in `.jsonl` or `.ndjson`: one `{"site": {...}}`,
        /// `{"cell": {...}}`, `{"relation": {...}}` or `{"policy": {...}}` a line, as
        /// `sonraft sim export --lines` writes), streamed to the leader.
        file: std::path::PathBuf,
        /// Only show what it would change in the live image (created, updated, unchanged, and
        /// every parameter value it would replace); apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why, for the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// The operator's controls of the SON functions (mode, exclusions, change windows,
    /// verification); with --set FILE (`-` for stdin), replace them with FILE's JSON.
    #[command(after_help = "Example:\n  \
        sonraft ctl son-policy --json > policy.json && sonraft ctl son-policy --set policy.json")]
    SonPolicy {
        /// Replace the controls with this JSON file (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        set: Option<std::path::PathBuf>,
    },
    /// The SON functions' thresholds (per function: when MRO, MLB and ANR act, reserved PCIs);
    /// with --set FILE (`-` for stdin), replace them with FILE's JSON.
    #[command(after_help = "Example:\n  sonraft ctl son-tuning --set - < tuning.json")]
    SonTuning {
        /// Replace the thresholds with this JSON file (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        set: Option<std::path::PathBuf>,
    },
    /// Open-loop proposals waiting for an operator.
    #[command(after_help = "Example:\n  sonraft ctl pending")]
    Pending,
    /// Approve pending proposal ID: it is judged now and applies if the network did not change
    /// under it (exit 3 if it does not apply).
    #[command(after_help = "Example:\n  sonraft ctl approve 17 --note \"ok, ticket 4711\"")]
    Approve {
        /// The proposal's id, as `pending` shows it.
        id: u64,
        /// Who decides and why, for the history.
        #[arg(long, default_value = "approved with sonraft ctl")]
        note: String,
    },
    /// Reject pending proposal ID: it never applies.
    #[command(after_help = "Example:\n  sonraft ctl reject 17 --note \"not during the event\"")]
    Reject {
        /// The proposal's id, as `pending` shows it.
        id: u64,
        /// Who decides and why, for the history.
        #[arg(long, default_value = "rejected with sonraft ctl")]
        note: String,
    },
    /// SON changes under verification, the newest verified ones and the holds after undone
    /// changes.
    #[command(after_help = "Example:\n  sonraft ctl trials --limit 5")]
    Trials {
        /// At most this many verified changes.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Download a consistent backup to FILE.
    #[command(after_help = "Example:\n  sonraft ctl backup image-$(date +%F).backup")]
    Backup {
        /// Where to write it (replaced if it exists).
        file: std::path::PathBuf,
    },
    /// Load the image of a backup file into a new cluster (one that holds no cells yet).
    #[command(after_help = "Examples:\n  \
        sonraft ctl restore image-2026-12-01.backup\n  \
        sonraft ctl restore image-2026-12-01.backup --force   # replace a live image\n\n\
        Exit 3 when the cluster already holds cells and --force is not given.")]
    Restore {
        /// A file written by `ctl backup`.
        file: std::path::PathBuf,
        /// Replace the image of a cluster that already holds one: every change made since the
        /// backup is undone, on the live network too.
        #[arg(long)]
        force: bool,
    },
}

struct Ctl {
    client: ApiClient,
    nodes: Vec<String>,
    json: bool,
}

/// A successful answer: the node's JSON as it sent it (what `--json` prints) and read into `T`.
struct Answer<T> {
    raw: Bytes,
    body: T,
}

/// A request body as JSON.
fn json_body(body: &impl Serialize) -> anyhow::Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(body)?))
}

impl Ctl {
    /// Sends to the first node that answers; when none does, a failure naming why each did not
    /// (exit 4).
    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<ApiResponse> {
        let mut why = Vec::new();
        let mut exit = Exit::Unreachable;
        for n in &self.nodes {
            let url = format!("{}{path}", self.client.base_url(n));
            match self
                .client
                .send(method.clone(), &url, body.clone(), &[])
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if Exit::of_client_error(&e) == Exit::Usage {
                        exit = Exit::Usage;
                    }
                    why.push(e.to_string());
                }
            }
        }
        Err(Failure::of(
            exit,
            format!("no node answered: {}", why.join("; ")),
        ))
    }

    /// Sends to the first node that answers and reads a successful answer as `T`; an error
    /// answer is a failure naming its status and body.
    async fn ok<T: DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer<T>> {
        let r = self.call(method, path, body).await?;
        answer(r, path)
    }

    /// The node's JSON with `--json`, else `human`'s rendering of it.
    fn show<T>(&self, answer: &Answer<T>, human: impl FnOnce(&T)) {
        if self.json {
            outln!("{}", String::from_utf8_lossy(&answer.raw));
        } else {
            human(&answer.body);
        }
    }

    /// `v` with `--json` (what ctl itself reports), else `human`.
    fn print(&self, v: &Value, human: impl FnOnce()) {
        if self.json {
            outln!("{v}");
        } else {
            human();
        }
    }
}

/// `ctl approve` and `ctl reject`: exit 0 when the decision took effect (the proposal applied,
/// or was rejected as asked), 3 when an approved proposal did not apply, else by the answer.
async fn decide(ctl: &Ctl, id: u64, note: String, verb: &str) -> anyhow::Result<()> {
    let body = json_body(&v1::DecisionRequest { note })?;
    let r = ctl
        .call(
            hyper::Method::POST,
            &format!("/son/pending/{id}/{verb}"),
            Some(body),
        )
        .await?;
    let outcome = r.parse::<v1::DecisionAnswer>().map(|a| a.outcome).ok();
    if ctl.json {
        outln!("{}", String::from_utf8_lossy(&r.body));
    } else {
        match &outcome {
            Some(v1::Outcome::Applied { index, .. }) => {
                outln!("proposal {id} applied at index {}", opt(*index))
            }
            Some(v1::Outcome::Rejected { reason }) => outln!("proposal {id} rejected: {reason}"),
            Some(v1::Outcome::Conflict { current }) => outln!(
                "proposal {id} not applied: the network changed under it (current versions {})",
                json!(current)
            ),
            Some(v1::Outcome::Invalid { reason }) => outln!("proposal {id}: {reason}"),
            Some(v1::Outcome::Pending { .. }) | None => {}
        }
    }
    if r.status.is_success() {
        Ok(())
    } else if outcome.is_some() {
        // The outcome above says why.
        Err(Failure::quiet(Exit::of_status(r.status)))
    } else {
        Err(Failure::answer(r.status, &r.body))
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An optional number as a table shows it.
fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// A radio access technology as the API names it.
fn rat(r: v1::Rat) -> &'static str {
    match r {
        v1::Rat::Lte => "LTE",
        v1::Rat::Nr => "NR",
    }
}

/// Most nodes `status` reads, however many members the nodes list.
const MAX_MEMBERS: usize = 64;

/// The API URL of a member a node at `via` lists (`host:port`), in `via`'s scheme.
fn member_url(via: &str, api_addr: &str) -> String {
    if api_addr.contains("://") {
        return sonraft_client::base_url(api_addr);
    }
    let scheme = via.split_once("://").map_or("http", |(s, _)| s);
    format!("{scheme}://{}", api_addr.trim().trim_end_matches('/'))
}

/// What `--nodes` or `SONRAFT_NODES` holds, split into addresses: none is a usage error, as a
/// silent default address would send a script's commands to whatever listens there.
fn node_list(nodes: Option<&str>) -> anyhow::Result<Vec<String>> {
    let list: Vec<String> = nodes
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err(Failure::usage(
            "no node addresses: give --nodes ADDR[,ADDR...] or set SONRAFT_NODES \
             (e.g. SONRAFT_NODES=\"http://127.0.0.1:8001 http://127.0.0.1:8002\")",
        ));
    }
    Ok(list)
}

/// `entity param=value, ...` of a change set's writes.
fn writes_text(writes: &[v1::WriteSpec]) -> String {
    writes
        .iter()
        .map(|w| units::entity_write(&w.entity, &w.param, &json!(w.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Entities and their versions, `cell/A@7, relation/A/B@gone`, the first [`SHOWN`] of them and
/// how many more: a conflict on a PCI change reads twenty cells, and a line is for a person.
fn versions_text<'a>(versions: impl ExactSizeIterator<Item = (&'a String, Option<u64>)>) -> String {
    const SHOWN: usize = 3;
    let n = versions.len();
    let mut text = versions
        .take(SHOWN)
        .map(|(e, v)| format!("{e}@{}", v.map_or("gone".to_string(), |v| v.to_string())))
        .collect::<Vec<_>>()
        .join(", ");
    if n > SHOWN {
        text.push_str(&format!(" and {} more (--json lists them)", n - SHOWN));
    }
    text
}

/// What became of a proposed change set.
fn outcome_text(o: &v1::Outcome) -> String {
    match o {
        v1::Outcome::Applied { index, versions } => format!(
            "applied at index {}; new versions {}",
            opt(*index),
            versions_text(versions.iter().map(|(e, v)| (e, Some(*v))))
        ),
        v1::Outcome::Conflict { current } => format!(
            "conflict: a read version is stale; now {}",
            versions_text(current.iter().map(|(e, v)| (e, *v)))
        ),
        v1::Outcome::Rejected { reason } => format!("rejected: {reason}"),
        v1::Outcome::Invalid { reason } => format!("invalid: {reason}"),
        v1::Outcome::Pending { id } => {
            format!("pending as proposal {id}: it applies once an operator approves it")
        }
    }
}

/// What would become of a change set (`writes`, as [`writes_text`] shows them) proposed now:
/// a dry run applies nothing, so it has no log index to show.
fn dry_run_text(o: &v1::Outcome, writes: &str) -> String {
    let what = if writes.is_empty() {
        String::new()
    } else {
        format!(" {writes}")
    };
    match o {
        v1::Outcome::Applied { versions, .. } => format!(
            "dry run: would apply{what} (new versions {}); nothing was applied",
            json!(versions)
        ),
        v1::Outcome::Pending { .. } => {
            format!("dry run: would wait for an operator to approve{what}; nothing was proposed")
        }
        refused => format!("dry run: would be refused, {}", outcome_text(refused)),
    }
}

/// The token: `SONRAFT_TOKEN` (an empty one counts as unset), else `--token-file`; never from
/// the command line.
fn token(args: &CtlArgs) -> anyhow::Result<Option<String>> {
    if args.token_on_command_line.is_some() {
        return Err(Failure::usage(
            "a token is not taken on the command line, where every user of the machine can read it: set SONRAFT_TOKEN or --token-file FILE",
        ));
    }
    if let Some(t) = std::env::var("SONRAFT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(t));
    }
    args.token_file
        .as_deref()
        .map(|path| {
            sonraft_node::access::read_secret_file(path, "token")
                .map_err(|e| Failure::usage(format!("{e:#}")))
        })
        .transpose()
}

/// Runs one `ctl` command. A failure carries its exit status ([`exit::classify`]).
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let nodes = match args.command {
        // The one command that names its node itself.
        CtlCommand::NodeInfo { .. } => Vec::new(),
        _ => node_list(args.nodes.as_deref())?,
    };
    let token = token(&args)?;
    let tls = match &args.ca {
        Some(ca) => Some(sonraft_client::trust_ca(ca).map_err(|e| Failure::usage(e.to_string()))?),
        None => None,
    };
    let ctl = Ctl {
        client: ApiClient::with_tls(token, Duration::from_secs(args.timeout), tls),
        nodes,
        json: args.json,
    };
    use hyper::Method;
    match args.command {
        CtlCommand::Status => {
            // Each node's own JSON for `--json`; its status, or why there is none, for the table.
            // The members a node lists are read too, so one address finds the whole cluster.
            let mut raw = Vec::new();
            let mut rows = Vec::new();
            let (mut answered, mut refused) = (0, 0);
            let mut queue: std::collections::VecDeque<(String, bool)> = ctl
                .nodes
                .iter()
                .map(|n| (ctl.client.base_url(n), false))
                .collect();
            let mut seen: std::collections::BTreeSet<String> =
                queue.iter().map(|(n, _)| n.clone()).collect();
            while let Some((n, discovered)) = queue.pop_front() {
                let row = match ctl.client.get(&n, "/status").await {
                    Ok(r) if r.status.is_success() => {
                        answered += 1;
                        r.parse::<v1::Status>()
                            .map(|st| (r.json(), st))
                            .map_err(|e| format!("status not understood: {e}"))
                    }
                    Ok(r) => {
                        refused += 1;
                        Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Ok((_, st)) = &row {
                    for member in st.nodes.values() {
                        let url = member_url(&n, &member.api_addr);
                        if seen.len() < MAX_MEMBERS && seen.insert(url.clone()) {
                            queue.push_back((url, true));
                        }
                    }
                }
                match row {
                    Ok((json, st)) => {
                        raw.push(json);
                        rows.push(Ok((st, discovered)));
                    }
                    Err(e) => {
                        raw.push(json!({"node": n, "error": e}));
                        rows.push(Err((n, e)));
                    }
                }
            }
            ctl.print(&json!(raw), || {
                outln!(
                    "{:<4} {:<10} {:<10} {:>5} {:>7} {:>10} {:>10}  api",
                    "id",
                    "site",
                    "role",
                    "term",
                    "leader",
                    "last_log",
                    "applied"
                );
                for r in &rows {
                    match r {
                        Err((node, e)) => outln!("{:<4} {node}  ({e})", "?"),
                        Ok((st, discovered)) => outln!(
                            "{:<4} {:<10} {:<10} {:>5} {:>7} {:>10} {:>10}  {}{}",
                            st.id,
                            st.site,
                            s(&json!(st.role)),
                            st.term,
                            opt(st.leader_id),
                            st.last_log_index,
                            st.last_applied_index,
                            st.this.api_addr,
                            if *discovered {
                                "  (a member, not in --nodes)"
                            } else {
                                ""
                            }
                        ),
                    }
                }
            });
            // A table with holes is not a status a script may act on.
            let unread = rows.iter().filter(|r| r.is_err()).count();
            if answered + refused == 0 {
                return Err(Failure::of(Exit::Unreachable, "no node answered"));
            }
            if unread > 0 {
                return Err(Failure::of(
                    Exit::Refused,
                    format!(
                        "the status of {unread} of {} nodes could not be read",
                        rows.len()
                    ),
                ));
            }
        }
        CtlCommand::Members => {
            let v = ctl.ok::<v1::Status>(Method::GET, "/status", None).await?;
            ctl.show(&v, |st| {
                outln!("voters:   {}", json!(st.voters));
                outln!("learners: {}", json!(st.learners));
                for (id, n) in &st.nodes {
                    outln!(
                        "  {id:<4} {:<10} raft {:<22} api {}",
                        n.site,
                        n.raft_addr,
                        n.api_addr
                    );
                }
            });
        }
        CtlCommand::Init => {
            let mut list = Vec::new();
            for n in &ctl.nodes {
                let st = node_status(&ctl.client, n)
                    .await
                    .with_context(|| format!("node {n}"))?;
                list.push(node_spec(&st));
            }
            let init = v1::InitRequest { nodes: list };
            let v = ctl
                .ok::<v1::Initialized>(Method::POST, "/cluster/init", Some(json_body(&init)?))
                .await?;
            ctl.show(&v, |v| outln!("initialised; voters {}", json!(v.voters)));
        }
        CtlCommand::Join {
            addr,
            voter,
            replace,
            force,
        } => {
            let me = node_status(&ctl.client, &addr)
                .await
                .with_context(|| format!("the new node at {addr}"))?;
            let force_q = with_query("", &v1::ForceQuery { force });
            let added = ctl
                .ok::<v1::LearnerAdded>(
                    Method::POST,
                    &format!("/cluster/learners{force_q}"),
                    Some(json_body(&node_spec(&me))?),
                )
                .await?;
            let mut out = added.raw;
            if voter || replace.is_some() {
                let st = ctl.ok::<v1::Status>(Method::GET, "/status", None).await?;
                let mut ids = st.body.voters;
                if let Some(old) = replace {
                    let before = ids.len();
                    ids.retain(|v| *v != old);
                    if ids.len() == before {
                        return Err(Failure::of(
                            Exit::Conflict,
                            format!("node {old} is not a voter; nothing to replace"),
                        ));
                    }
                }
                ids.push(me.id);
                out = ctl
                    .ok::<v1::VotersChanged>(
                        Method::POST,
                        &format!("/cluster/voters{force_q}"),
                        Some(json_body(&v1::VotersRequest { ids })?),
                    )
                    .await?
                    .raw;
            }
            let out = String::from_utf8_lossy(&out);
            if ctl.json {
                outln!("{out}");
            } else {
                outln!("joined: {out}");
            }
        }
        CtlCommand::Remove { id, force } => {
            let path = with_query(&format!("/cluster/nodes/{id}"), &v1::ForceQuery { force });
            let v = ctl
                .ok::<v1::NodeRemoved>(Method::DELETE, &path, None)
                .await?;
            ctl.show(&v, |v| outln!("removed node {}", v.removed));
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
            ctl.print(&v, || outln!("node {leader} leads ({took_ms} ms)"));
        }
        CtlCommand::Leader { id, .. } => {
            let id = id.ok_or_else(|| Failure::usage("give a node ID or --away-from ID"))?;
            let v = ctl
                .ok::<v1::LeaderHandedOver>(
                    Method::POST,
                    "/cluster/leader",
                    Some(json_body(&v1::LeaderRequest { id })?),
                )
                .await?;
            ctl.show(&v, |v| {
                outln!("node {} leads (hand-over took {} ms)", v.leader, v.took_ms)
            });
        }
        CtlCommand::Control { action: None } => {
            let v = ctl
                .ok::<v1::ControlSummary>(Method::GET, "/control", None)
                .await?;
            ctl.show(&v, |c| {
                outln!("{:<12} {:>10} {:>11}", "SITE", "CELL SITES", "TAKEN OVER");
                for (site, n) in &c.sites {
                    outln!("{site:<12} {:>10} {:>11}", n.cell_sites, n.taken_over);
                }
                if c.away_from_home == 0 {
                    outln!("every cell site is controlled by its home site");
                    return;
                }
                outln!("\n{} cell sites away from home:", c.away_from_home);
                outln!(
                    "{:<12} {:<12} {:<12} {:>10}",
                    "CELL SITE",
                    "HOME",
                    "CONTROLLER",
                    "EPOCH"
                );
                for m in &c.moved {
                    outln!(
                        "{:<12} {:<12} {:<12} {:>10}",
                        m.cell_site,
                        m.home,
                        m.controller,
                        m.epoch
                    );
                }
                if (c.moved.len() as u64) < c.away_from_home {
                    outln!("({} more)", c.away_from_home - c.moved.len() as u64);
                }
            });
        }
        CtlCommand::Control {
            action: Some(ControlAction::HandBack { site }),
        } => {
            let v = ctl
                .ok::<v1::HandBackOutcome>(
                    Method::POST,
                    "/control/hand-back",
                    Some(json_body(&v1::HandBackRequest { site: site.clone() })?),
                )
                .await?;
            ctl.show(&v, |o| {
                outln!("{} cell sites handed back to {site}", o.moved);
                for r in &o.refused {
                    outln!("  refused: {r}");
                }
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
            ctl.print(&v, || {
                outln!("node {id} caught up ({} ms)", took.as_millis())
            });
        }
        CtlCommand::Cells { site, consistency } => {
            let mut query = vec![("consistency", consistency.as_str())];
            if let Some(site) = &site {
                query.push(("site", site));
            }
            let path = format!("/image/cells{}", query_string(&query));
            let v = ctl.ok::<Vec<v1::Cell>>(Method::GET, &path, None).await?;
            ctl.show(&v, |cells| {
                outln!(
                    "{:<12} {:<8} {:<4} {:>5} {:>7} {:>7} {:>8} {:>7} {:>8}  version",
                    "cell",
                    "site",
                    "rat",
                    "pci",
                    "arfcn",
                    "tilt(°)",
                    "hyst(dB)",
                    "ttt(ms)",
                    "pwr(dBm)"
                );
                for c in cells {
                    outln!(
                        "{:<12} {:<8} {:<4} {:>5} {:>7} {:>7.1} {:>8.1} {:>7} {:>8}  {}",
                        c.id,
                        c.site,
                        rat(c.rat),
                        c.pci,
                        c.arfcn,
                        f64::from(c.electrical_tilt) / 10.0,
                        f64::from(c.hysteresis) / 2.0,
                        c.time_to_trigger_ms,
                        c.max_tx_power_dbm,
                        c.version
                    );
                }
            });
        }
        CtlCommand::Cell { id } => {
            let v = ctl
                .ok::<Value>(
                    Method::GET,
                    &format!("/image/cells/{}", urlencode(&id)),
                    None,
                )
                .await?;
            ctl.show(&v, |v| {
                for line in units::cell_lines(v, utc) {
                    outln!("{line}");
                }
            });
        }
        CtlCommand::Propose {
            function,
            reason,
            sets,
            file,
            dry_run,
        } => {
            // A file is sent as it is, once it is known to be JSON: the node judges the rest.
            let body = match file {
                Some(f) => read_json(&f)?.0,
                None => json_body(&build_change_set(&ctl, &function, &reason, &sets).await?)?,
            };
            let path = with_query("/image/changesets", &v1::ProposeQuery { dry_run });
            let r = ctl.call(Method::POST, &path, Some(body.clone())).await?;
            let outcome = r.parse::<v1::ChangeSetAnswer>().map(|a| a.outcome).ok();
            if ctl.json {
                outln!("{}", String::from_utf8_lossy(&r.body));
            } else if let Some(o) = &outcome {
                if dry_run {
                    let writes = serde_json::from_slice::<v1::ChangeSetRequest>(&body)
                        .map(|cs| writes_text(&cs.writes))
                        .unwrap_or_default();
                    outln!("{}", dry_run_text(o, &writes));
                } else {
                    outln!("{}", outcome_text(o));
                }
            }
            if !r.status.is_success() {
                return Err(match outcome {
                    // The outcome above says why.
                    Some(_) => Failure::quiet(Exit::of_status(r.status)),
                    None => Failure::answer(r.status, &r.body),
                });
            }
        }
        CtlCommand::SonPolicy { set } => show_or_set(&ctl, "/son/policy", set).await?,
        CtlCommand::SonTuning { set } => show_or_set(&ctl, "/son/tuning", set).await?,
        CtlCommand::Pending => {
            let v = ctl
                .ok::<Vec<v1::PendingProposal>>(Method::GET, "/son/pending", None)
                .await?;
            ctl.show(&v, |list| {
                if list.is_empty() {
                    outln!("no proposal is waiting for an operator");
                }
                for p in list {
                    let writes: Vec<String> = p
                        .writes
                        .iter()
                        .map(|w| units::entity_write(&w.entity, &w.param, &json!(w.value)))
                        .collect();
                    outln!(
                        "{:>8} {:<20} {}  [{}]  expires at {}",
                        p.id,
                        p.origin.function,
                        writes.join(", "),
                        p.reason,
                        utc(p.expires_at_ms)
                    );
                }
            });
        }
        CtlCommand::Approve { id, note } => decide(&ctl, id, note, "approve").await?,
        CtlCommand::Reject { id, note } => decide(&ctl, id, note, "reject").await?,
        CtlCommand::Trials { limit } => {
            let path = with_query("/son/trials", &v1::TrialsQuery { limit: Some(limit) });
            let v = ctl.ok::<v1::Trials>(Method::GET, &path, None).await?;
            ctl.show(&v, |t| {
                let line = |t: &v1::Trial| {
                    let writes: Vec<String> = t
                        .writes
                        .iter()
                        .map(|w| format!("{} {} {}->{}", w.entity, w.param, w.before, w.after))
                        .collect();
                    outln!(
                        "{:>8} {:<20} {:<10} {}{}",
                        t.index,
                        t.function,
                        t.state,
                        writes.join(", "),
                        t.reason
                            .as_deref()
                            .map(|r| format!("  [{r}]"))
                            .unwrap_or_default()
                    );
                };
                outln!("under verification: {}", t.open.len());
                t.open.iter().for_each(line);
                outln!("verified (newest first):");
                t.closed.iter().for_each(line);
                for h in &t.holds {
                    outln!(
                        "hold: {} leaves {} alone until {}",
                        h.function,
                        h.cell,
                        h.until_ms
                    );
                }
            });
        }
        CtlCommand::History {
            limit,
            before,
            cell,
            function,
            outcome,
            since,
            follow,
        } => {
            let since_ms = since
                .as_deref()
                .map(|s| parse_since(s, unix_ms()))
                .transpose()
                .map_err(Failure::usage)?;
            let mut query = v1::HistoryQuery {
                limit: Some(limit as u64),
                before,
                consistency: None,
                cell,
                function,
                outcome,
                since_ms,
            };
            if follow {
                return follow_history(&ctl, query).await;
            }
            let path = with_query("/image/history", &query);
            let v = ctl
                .ok::<Vec<v1::HistoryRecord>>(Method::GET, &path, None)
                .await?;
            ctl.show(&v, |page| {
                for h in page {
                    outln!("{}", history_line(h));
                }
                // A full page may have more behind it; say how to get it.
                if page.len() == limit
                    && let Some(last) = page.last()
                {
                    query.before = Some(last.cursor.clone());
                    query.limit = None;
                    outln!(
                        "more: sonraft ctl history --limit {limit} --before {}{}",
                        last.cursor,
                        filter_flags(&query)
                    );
                }
            });
        }
        CtlCommand::Watch {
            from_index,
            cell,
            function,
            outcome,
            kpis,
        } => {
            let filter = v1::HistoryQuery {
                cell,
                function,
                outcome,
                ..Default::default()
            };
            let args = watch::WatchArgs {
                from_index,
                filter,
                kpis,
                json: ctl.json,
            };
            // A stream has no deadline: only the wait for each answer's head has one.
            return watch::watch(&ctl.client, &ctl.nodes, args).await;
        }
        CtlCommand::Import {
            file,
            dry_run,
            reason,
        } => {
            let path = with_query("/image/import", &v1::ImportQuery { dry_run, reason });
            let v = if is_lines_file(&file) {
                import_lines(&ctl, &file, &path).await?
            } else {
                let (_, body) = read_json(&file)?;
                ctl.ok::<v1::ImportAnswer>(Method::POST, &path, Some(json_body(&body)?))
                    .await?
            };
            ctl.show(&v, print_import);
        }
        CtlCommand::Backup { file } => {
            let written = download_backup(&ctl, &file).await?;
            outln!("backup of {written} bytes written to {}", file.display());
        }
        CtlCommand::Restore { file, force } => {
            let f = std::fs::File::open(&file)
                .map_err(|e| Failure::usage(format!("cannot open {}: {e}", file.display())))?;
            let (meta, body) = sonraft_storage::snapshot::decode_snapshot(f).map_err(|e| {
                Failure::usage(format!("{} is not a sonraft backup: {e}", file.display()))
            })?;
            // A restore is for a new cluster: into a live one it would roll the network back to
            // the backup's day, so it takes --force.
            if !force {
                let held = ctl
                    .ok::<Vec<v1::Cell>>(
                        Method::GET,
                        "/image/cells?limit=1&consistency=linearizable",
                        None,
                    )
                    .await?;
                if !held.body.is_empty() {
                    return Err(Failure::of(
                        Exit::Conflict,
                        format!(
                            "the cluster already holds an image; restoring {} would replace it and undo every change since the backup (index {}). Add --force to do that",
                            file.display(),
                            meta.last_log_id.map_or(0, |l| l.index)
                        ),
                    ));
                }
            }
            let (policy, tuning) = (body.image.son.policy.clone(), body.image.son.tuning.clone());
            let v = restore_lines(&ctl, body).await?;
            // The operator's SON controls travel with the image (pending proposals and trials
            // belong to the old cluster's network and do not).
            if policy != v1::SonPolicy::default() {
                ctl.ok::<Value>(Method::PUT, "/son/policy", Some(json_body(&policy)?))
                    .await
                    .context("the image was restored, but not the SON policy")?;
            }
            if tuning != v1::Tuning::default() {
                ctl.ok::<Value>(Method::PUT, "/son/tuning", Some(json_body(&tuning)?))
                    .await
                    .context("the image and SON policy were restored, but not the SON tuning")?;
            }
            ctl.show(&v, |v| {
                let counts = match v {
                    v1::ImportAnswer::Imported(i) => json!(i.imported),
                    v1::ImportAnswer::DryRun(_) => Value::Null,
                };
                outln!(
                    "restored the image of index {} ({counts})",
                    meta.last_log_id.map_or(0, |l| l.index),
                )
            });
        }
    }
    Ok(())
}

/// `GET /status` of the node at `addr`, a failure classed by what went wrong.
pub(crate) async fn node_status(client: &ApiClient, addr: &str) -> anyhow::Result<v1::Status> {
    let r = client
        .get(addr, "/status")
        .await
        .map_err(Failure::no_answer)?;
    if !r.status.is_success() {
        return Err(Failure::answer(r.status, &r.body));
    }
    r.parse()
        .map_err(|e| Failure::of(Exit::Refused, format!("status not understood: {e}")))
}

/// What a node's status says to add it as a member.
fn node_spec(st: &v1::Status) -> v1::NodeSpec {
    v1::NodeSpec {
        id: st.id,
        site: st.site.clone(),
        raft_addr: st.this.raft_addr.clone(),
        api_addr: st.this.api_addr.clone(),
    }
}

/// Builds a change set from `--set entity:param=value` items, reading each entity's version.
async fn build_change_set(
    ctl: &Ctl,
    function: &str,
    reason: &str,
    sets: &[String],
) -> anyhow::Result<v1::ChangeSetRequest> {
    if sets.is_empty() {
        return Err(Failure::usage(
            "give at least one --set entity:param=value, or --file",
        ));
    }
    let mut writes = Vec::new();
    let mut read_set: Vec<v1::ReadVersion> = Vec::new();
    for item in sets {
        let (entity, rest) = item.split_once(':').ok_or_else(|| {
            Failure::usage("--set takes entity:param=value, e.g. cell/S1-1:electrical_tilt=45")
        })?;
        let (param, value) = rest
            .split_once('=')
            .ok_or_else(|| Failure::usage("--set takes entity:param=value"))?;
        let value: Value = serde_json::from_str(value).unwrap_or(Value::String(value.to_string()));
        writes.push(v1::WriteSpec {
            entity: entity.to_string(),
            param: param.to_string(),
            value,
        });
        if read_set.iter().any(|r| r.entity == entity) {
            continue;
        }
        let version = match entity.split('/').collect::<Vec<_>>().as_slice() {
            ["cell", id] => {
                let path = format!("/image/cells/{}", urlencode(id));
                let r = ctl.call(hyper::Method::GET, &path, None).await?;
                // Like a change set naming an unknown cell: invalid (exit 3), not a refusal.
                if r.status == hyper::StatusCode::NOT_FOUND {
                    return Err(Failure::of(
                        Exit::Conflict,
                        format!("invalid: there is no cell {id}"),
                    ));
                }
                if !r.status.is_success() {
                    return Err(Failure::answer(r.status, &r.body));
                }
                r.parse::<v1::Cell>()
                    .map_err(|e| {
                        Failure::of(Exit::Refused, format!("cell {id} not understood: {e}"))
                    })?
                    .version
            }
            ["relation", src, tgt] => {
                let query = v1::RelationsQuery {
                    source: Some(src.to_string()),
                    ..Default::default()
                };
                ctl.ok::<Vec<v1::Relation>>(
                    hyper::Method::GET,
                    &with_query("/image/relations", &query),
                    None,
                )
                .await?
                .body
                .into_iter()
                .find(|r| r.target == *tgt)
                .map(|r| r.version)
                .ok_or_else(|| {
                    Failure::of(Exit::Conflict, format!("invalid: no relation {entity}"))
                })?
            }
            _ => {
                return Err(Failure::usage(format!(
                    "{entity:?} is not cell/<id> or relation/<source>/<target>"
                )));
            }
        };
        read_set.push(v1::ReadVersion {
            entity: entity.to_string(),
            version,
        });
    }
    Ok(v1::ChangeSetRequest {
        origin: v1::OriginSpec {
            function: function.to_string(),
            node: None,
        },
        reason: reason.to_string(),
        read_set,
        writes,
        proposed_at_ms: None,
    })
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
fn print_import(v: &v1::ImportAnswer) {
    let kinds = |d: &v1::ImportChanges| {
        [
            ("sites", d.sites),
            ("cells", d.cells),
            ("relations", d.relations),
        ]
        .iter()
        .map(|(k, c)| {
            format!(
                "{k}: {} created, {} updated, {} unchanged",
                c.created, c.updated, c.unchanged
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
    };
    match v {
        v1::ImportAnswer::DryRun(dry) => {
            let Some(d) = dry.would_change.as_ref().filter(|_| dry.valid) else {
                outln!(
                    "the import would be refused: {}",
                    dry.reason.as_deref().unwrap_or("?")
                );
                return;
            };
            outln!("dry run, nothing applied. It would change {}", kinds(d));
            outln!(
                "{} parameter values would be replaced{}:",
                d.changed_params,
                if d.policy_changed {
                    ", and the policy"
                } else {
                    ""
                }
            );
            let listed = d.changes.as_deref().unwrap_or_default();
            for c in listed {
                outln!(
                    "  {} {}: {} -> {}",
                    c.entity,
                    c.param,
                    json!(c.from),
                    json!(c.to)
                );
            }
            let listed = d.changes_listed.unwrap_or(listed.len() as u64);
            if d.changed_params > listed {
                outln!("  ... and {} more", d.changed_params - listed);
            }
        }
        v1::ImportAnswer::Imported(i) => match &i.changed {
            None => outln!("imported {} at index {}", json!(i.imported), i.index),
            Some(c) => {
                outln!("imported at index {}: {}", i.index, kinds(c));
                outln!(
                    "{} parameter values replaced (listed in `sonraft ctl history`)",
                    c.changed_params
                );
            }
        },
    }
}

/// The bytes of FILE (`-`: standard input) and their JSON; a usage failure (exit 2) when it
/// cannot be read or is not JSON, as nothing was sent.
/// Whether `file` holds JSON lines (by its name).
fn is_lines_file(file: &std::path::Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"))
}

/// Streams a JSON-lines image to the leader (which stages each part as its lines arrive; a
/// follower would have to hold the body whole), showing progress on a terminal.
async fn import_lines(
    ctl: &Ctl,
    file: &std::path::Path,
    path: &str,
) -> anyhow::Result<Answer<v1::ImportAnswer>> {
    use std::io::IsTerminal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let total = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let node = leader_or_first(ctl).await;
    let sent = Arc::new(AtomicU64::new(0));
    let body = sonraft_client::file_body(f, sent.clone());
    let progress = std::io::stderr().is_terminal().then(|| {
        let sent = sent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let n = sent.load(Ordering::Relaxed);
                let pct = (n as f64 * 100.0 / total.max(1) as f64).min(100.0);
                eprint!(
                    "\rimport: {:.1} of {:.1} MB sent ({pct:.0} %)",
                    n as f64 / 1e6,
                    total as f64 / 1e6
                );
                if n >= total {
                    eprint!(", the last part is being applied");
                }
            }
        })
    });
    let url = format!("{}{path}", ctl.client.base_url(&node));
    let r = ctl
        .client
        .send_stream(hyper::Method::POST, &url, body, v1::IMPORT_LINES)
        .await;
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let r = r.map_err(|e| Failure::of(Exit::of_client_error(&e), e.to_string()))?;
    answer(r, path)
}

/// Downloads a backup from the leader into `file` as it comes, never holding it whole: written
/// beside `file` and renamed to it only once its CRC holds, so a transfer that breaks off
/// leaves no cut-short backup under the name asked for. Answers the bytes written.
async fn download_backup(ctl: &Ctl, file: &std::path::Path) -> anyhow::Result<u64> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let node = leader_or_first(ctl).await;
    let url = format!("{}/backup", ctl.client.base_url(&node));
    let (status, mut body) = ctl
        .client
        .get_streamed(&url)
        .await
        .map_err(|e| Failure::of(Exit::of_client_error(&e), e.to_string()))?;
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(Failure::answer(status, &bytes));
    }
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    // A write that fails (a full disk) leaves no partial copy behind either.
    let cannot = |e: std::io::Error| {
        let _ = std::fs::remove_file(&partial);
        Failure::usage(format!("cannot write {}: {e}", partial.display()))
    };
    let mut out = tokio::fs::File::create(&partial).await.map_err(cannot)?;
    let mut check = sonraft_storage::snapshot::StreamCheck::default();
    let mut written = 0u64;
    let broke = |written: u64, e: &dyn std::fmt::Display| {
        Failure::of(
            Exit::Unreachable,
            format!("the backup from {node} broke off after {written} bytes: {e}"),
        )
    };
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                drop(out);
                let _ = std::fs::remove_file(&partial);
                return Err(broke(written, &e));
            }
        };
        if let Ok(data) = frame.into_data() {
            check.update(&data);
            out.write_all(&data).await.map_err(cannot)?;
            written += data.len() as u64;
        }
    }
    out.sync_all().await.map_err(cannot)?;
    drop(out);
    if let Err(e) = check.finish() {
        let _ = std::fs::remove_file(&partial);
        return Err(broke(written, &e));
    }
    std::fs::rename(&partial, file)
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", file.display())))?;
    Ok(written)
}

/// Imports a backup's image at the leader as JSON lines written while they are sent: a
/// national image is larger than any one JSON body a node takes, and is never held twice here.
async fn restore_lines(
    ctl: &Ctl,
    backup: sonraft_storage::snapshot::SnapshotBody,
) -> anyhow::Result<Answer<v1::ImportAnswer>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<bytes::Bytes>>(4);
    let producer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut out = sonraft_client::ChunkWriter::new(tx);
        // Only a body written to its end is ended: a failure drops the writer unfinished,
        // which fails the request instead; a request that ended (its answer says why) stops it.
        match write_image(&mut out, &backup).and_then(|()| out.finish()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            written => written,
        }
    });
    let path = "/image/import";
    let node = leader_or_first(ctl).await;
    let url = format!("{}{path}", ctl.client.base_url(&node));
    let r = ctl
        .client
        .send_stream(
            hyper::Method::POST,
            &url,
            sonraft_client::channel_body(rx),
            v1::IMPORT_LINES,
        )
        .await;
    match producer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::usage(format!("cannot write the image: {e}"))),
        Err(e) => return Err(Failure::usage(format!("cannot write the image: {e}"))),
    }
    let r = r.map_err(|e| Failure::of(Exit::of_client_error(&e), e.to_string()))?;
    answer(r, path)
}

/// Writes a backup's image as import lines (`{"KIND": VALUE}`).
fn write_image(
    out: &mut impl std::io::Write,
    backup: &sonraft_storage::snapshot::SnapshotBody,
) -> std::io::Result<()> {
    fn line<T: serde::Serialize>(
        out: &mut impl std::io::Write,
        kind: &str,
        value: &T,
    ) -> std::io::Result<()> {
        write!(out, "{{\"{kind}\":")?;
        // An I/O error keeps its kind through serde_json (a receiver gone is a broken pipe).
        serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
        out.write_all(b"}\n")
    }
    let image = &backup.image;
    for s in image.sites.values() {
        line(out, "site", s)?;
    }
    for c in image.cells.values() {
        line(out, "cell", c)?;
    }
    for r in image.relations.values() {
        line(out, "relation", r)?;
    }
    line(out, "policy", &image.policy)
}

/// A successful answer to `path` read as `T`; an error answer is a failure naming its status
/// and body.
fn answer<T: DeserializeOwned>(r: ApiResponse, path: &str) -> anyhow::Result<Answer<T>> {
    if !r.status.is_success() {
        return Err(Failure::answer(r.status, &r.body));
    }
    let body = r.parse().map_err(|e| {
        Failure::of(
            Exit::Refused,
            format!("the answer to {path} is not understood: {e}"),
        )
    })?;
    Ok(Answer { raw: r.body, body })
}

/// The leader's API address as the first node that answers names it, else the first node.
async fn leader_or_first(ctl: &Ctl) -> String {
    for n in &ctl.nodes {
        let Ok(r) = ctl.client.get(n, "/status").await else {
            continue;
        };
        let Ok(s) = r.parse::<v1::Status>() else {
            continue;
        };
        if let Some(addr) = s
            .leader_id
            .and_then(|l| s.nodes.get(&l))
            .map(|m| m.api_addr.clone())
        {
            return addr;
        }
    }
    ctl.nodes.first().cloned().unwrap_or_default()
}

fn read_json(file: &std::path::Path) -> anyhow::Result<(Bytes, Value)> {
    let text = if file.as_os_str() == "-" {
        let mut t = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut t)
            .map_err(|e| Failure::usage(format!("cannot read the standard input: {e}")))?;
        t
    } else {
        std::fs::read(file)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?
    };
    let json = serde_json::from_slice(&text).map_err(|e| {
        // The one binary file an operator has at hand: say what to do with it.
        let hint = if text.starts_with(b"SRSNAP") {
            " (it is a backup: load it into a new cluster with `sonraft ctl restore FILE`)"
        } else {
            ""
        };
        Failure::usage(format!("{} is not JSON: {e}{hint}", file.display()))
    })?;
    Ok((Bytes::from(text), json))
}

/// Shows the JSON document at `path`, or replaces it with FILE's (`-`: stdin) and shows what
/// the cluster now holds.
/// Milliseconds since the Unix epoch, now.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `--since`: a duration back from `now_ms` (`90s`, `10m`, `2h`, `3d`) or a date and time.
fn parse_since(s: &str, now_ms: u64) -> Result<u64, String> {
    let unit = |c: char| match c {
        's' => Some(1_000u64),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    if let Some(last) = s.chars().last()
        && let Some(ms) = unit(last)
        && let Ok(n) = s[..s.len() - 1].parse::<u64>()
    {
        return Ok(now_ms.saturating_sub(n.saturating_mul(ms)));
    }
    let time = s
        .strip_suffix('Z')
        .map_or(s.to_string(), |t| format!("{t}+00:00"));
    sonraft_protocol::pm_xml::time::parse_date_time(&time).map_err(|_| {
        format!("--since {s:?}: expected a duration like 90s, 10m, 2h or 3d, or a time like 2026-12-02T22:15:00Z")
    })
}

/// The filter flags of `query`, as they would be typed again.
fn filter_flags(q: &v1::HistoryQuery) -> String {
    let mut out = String::new();
    for (flag, v) in [
        ("cell", &q.cell),
        ("function", &q.function),
        ("outcome", &q.outcome),
    ] {
        if let Some(v) = v {
            out.push_str(&format!(" --{flag} {v}"));
        }
    }
    if let Some(t) = q.since_ms {
        out.push_str(&format!(
            " --since {}",
            sonraft_protocol::pm_xml::time::format_date_time(t).replace("+00:00", "Z")
        ));
    }
    out
}

/// A log time as `2026-12-03 07:01:02Z` (whole seconds, UTC).
fn utc(ms: u64) -> String {
    sonraft_protocol::pm_xml::time::format_date_time(ms - ms % 1000)
        .replace('T', " ")
        .replace("+00:00", "Z")
}

/// One history record as a line: log time (UTC), index, function, outcome, writes, reason and,
/// for a refusal, why.
fn history_line(h: &v1::HistoryRecord) -> String {
    let writes: Vec<String> = h
        .writes
        .iter()
        .map(|w| units::entity_write(&w.entity, &w.param, &json!(w.value)))
        .collect();
    let time = utc(h.log_time_ms);
    let why = match &h.outcome {
        v1::Outcome::Rejected { reason } | v1::Outcome::Invalid { reason } => {
            format!("  refused: {reason}")
        }
        v1::Outcome::Conflict { current } => format!(
            "  stale read: now {}",
            versions_text(current.iter().map(|(e, v)| (e, *v)))
        ),
        v1::Outcome::Pending { id } => format!("  waits for approval as pending {id}"),
        v1::Outcome::Applied { .. } => String::new(),
    };
    format!(
        "{time} {:>8} {:<20} {:<9} {}  [{}]{why}",
        h.index,
        h.origin.function,
        h.outcome.kind(),
        writes.join(", "),
        h.reason
    )
}

/// A cursor `INDEX.POSITION` as a pair that orders like the history.
fn cursor_key(c: &str) -> (u64, u64) {
    let (i, p) = c.split_once('.').unwrap_or((c, "0"));
    (i.parse().unwrap_or(0), p.parse().unwrap_or(0))
}

/// `history --follow`: the newest page once (oldest first), then every second what is newer
/// than the last record printed, until interrupted.
async fn follow_history(ctl: &Ctl, mut query: v1::HistoryQuery) -> anyhow::Result<()> {
    let mut last: Option<(u64, u64)> = None;
    let first_limit = query.limit.unwrap_or(20);
    loop {
        query.limit = Some(if last.is_none() { first_limit } else { 1000 });
        let path = with_query("/image/history", &query);
        let page = ctl
            .ok::<Vec<v1::HistoryRecord>>(hyper::Method::GET, &path, None)
            .await?;
        for h in page.body.iter().rev() {
            let key = cursor_key(&h.cursor);
            if last.is_some_and(|l| key <= l) {
                continue;
            }
            if ctl.json {
                outln!("{}", serde_json::to_string(h)?);
            } else {
                outln!("{}", history_line(h));
            }
            last = Some(key);
        }
        if last.is_none() {
            last = Some((0, 0));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn show_or_set(ctl: &Ctl, path: &str, set: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let answer = match set {
        Some(file) => {
            let (text, _) = read_json(&file)?;
            ctl.ok::<Value>(hyper::Method::PUT, path, Some(text))
                .await?
        }
        None => ctl.ok::<Value>(hyper::Method::GET, path, None).await?,
    };
    ctl.show(&answer, |p| {
        outln!("{}", serde_json::to_string_pretty(p).unwrap_or_default())
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ctl_flag_and_argument_says_what_it_does_and_every_command_has_an_example() {
        use clap::Args;
        let ctl = CtlArgs::augment_args(clap::Command::new("ctl"));
        assert!(ctl.get_after_help().is_some());
        for arg in ctl.get_arguments() {
            assert!(arg.get_help().is_some(), "ctl --{}", arg.get_id());
        }
        for command in ctl.get_subcommands() {
            let name = command.get_name();
            assert!(command.get_about().is_some(), "ctl {name}");
            assert!(
                command.get_after_help().is_some(),
                "ctl {name} has no example"
            );
            for arg in command.get_arguments() {
                assert!(arg.get_help().is_some(), "ctl {name}: {}", arg.get_id());
            }
        }
    }

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
