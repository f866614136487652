//! Node configuration: command-line flags, then environment variables, then a TOML file,
//! then defaults — the first that sets a value wins.
//!
//! ```toml
//! # sonraft.toml
//! id = 1
//! site = "site-a"
//! data_dir = "/var/lib/sonraft"
//! raft_addr = "0.0.0.0:7001"
//! api_addr = "0.0.0.0:8001"
//! advertise_raft_addr = "10.0.1.5:7001"
//! advertise_api_addr = "10.0.1.5:8001"
//! cluster_secret_file = "/etc/sonraft/cluster-secret"  # or SONRAFT_CLUSTER_SECRET
//! token_file = "/etc/sonraft/token"    # the admin token; or SONRAFT_TOKEN
//! tokens_file = "/etc/sonraft/tokens"  # more tokens: `read-only|operator|admin TOKEN` a line
//! timing = "wan"           # loopback | wan
//! pm_dir = "/var/lib/pm/site-a"  # counters from TS 32.435 files instead of sessions
//! raw_counter_retention = "24h"   # or a number of periods, e.g. 96
//! raw_counter_disk_cap = "2GiB"
//! store_cache = "64MiB"
//! tls_cert = "/etc/sonraft/site-a.pem"  # all three, or none (plain HTTP)
//! tls_key = "/etc/sonraft/site-a.key"
//! tls_ca = "/etc/sonraft/ca.pem"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::access::{self, MIN_TOKEN_LEN, Tokens};
use crate::antennas::period_files::{RawLimits, Retention};

/// Raft timing presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// Nodes on one machine or LAN: heartbeat 50 ms, election timeout 150-300 ms.
    #[default]
    Loopback,
    /// Sites about 50 ms apart: heartbeat 100 ms, election timeout 1000-2000 ms.
    Wan,
}

impl Timing {
    /// (heartbeat, election min, election max) in milliseconds.
    pub fn millis(self) -> (u64, u64, u64) {
        match self {
            Timing::Loopback => (50, 150, 300),
            Timing::Wan => (100, 1000, 2000),
        }
    }
}

/// How the node's antenna sessions are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// One session per base station (cell site), carrying all its cells.
    #[default]
    Station,
    /// One session per cell.
    Cell,
}

/// Whether antennas taken over go back to their home site by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum HandBack {
    /// Once the home site's node is back and caught up for the hold time.
    #[default]
    Auto,
    /// Only when an operator says so (`ctl control hand-back`).
    Manual,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A size in bytes: a number of bytes, or a number with a unit, `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000), case ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Why a size was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a size (e.g. 2GiB, 500MB or a number of bytes)")]
pub struct BadSize(pub String);

impl std::str::FromStr for ByteSize {
    type Err = BadSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSize(s.to_string());
        let t = s.trim();
        let unit_at = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(unit_at);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(scale).map(ByteSize).ok_or_else(bad)
    }
}

/// A value in the TOML file that may be written as a number or as text (`96` or `"24h"`,
/// `1073741824` or `"1GiB"`).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl NumberOrText {
    fn parse<T: std::str::FromStr>(self, key: &str) -> anyhow::Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let text = match self {
            NumberOrText::Number(n) => n.to_string(),
            NumberOrText::Text(t) => t,
        };
        text.parse()
            .with_context(|| format!("{key} in the config file"))
    }
}

/// Applied entries between snapshots unless set (`--snapshot-every`). The log on disk holds up
/// to this many entries plus those kept behind a snapshot, and its entries are not small:
/// every site replicates one KPI summary per own cell every period (about 30 bytes each), so
/// at 1 000 cells a site a period adds ~30 KB of log, and 20 000 entries were 600 MB. A snapshot of the
/// image is cheap by comparison (1.2 MB for the 3 000-cell demo).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 2_000;
/// Log bytes since the last snapshot that also trigger one, unless set
/// (`--snapshot-log-bytes`); the last snapshot's size if that is larger.
pub const DEFAULT_SNAPSHOT_LOG_BYTES: u64 = 4 << 20;
/// Entries kept behind a snapshot, so that a follower back from a restart or a short
/// partition needs no snapshot: at 6 entries a second under the 500 ms demo, half a minute.
pub const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 200;
/// Sled page cache of the image store unless set (`--store-cache`).
pub const DEFAULT_STORE_CACHE: u64 = 64 << 20;
/// Smallest sled page cache accepted.
const MIN_STORE_CACHE: u64 = 1 << 20;

/// `sonraft node` flags. Every flag can also come from the environment or the config file.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct NodeArgs {
    /// TOML configuration file.
    #[arg(long, env = "SONRAFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's Raft id (a positive integer, unique in the cluster).
    #[arg(long, env = "SONRAFT_NODE_ID")]
    pub id: Option<u64>,
    /// The site this node serves.
    #[arg(long, env = "SONRAFT_SITE")]
    pub site: Option<String>,
    /// Data directory (created if missing).
    #[arg(long, env = "SONRAFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address for node-to-node Raft traffic (port 0: the OS picks one).
    #[arg(long, env = "SONRAFT_RAFT_ADDR")]
    pub raft_addr: Option<String>,
    /// Listen address of the admin HTTP API (port 0: the OS picks one).
    #[arg(long, env = "SONRAFT_API_ADDR")]
    pub api_addr: Option<String>,
    /// Raft address other nodes use to reach this one (default: the bound listen address).
    #[arg(long, env = "SONRAFT_ADVERTISE_RAFT_ADDR")]
    pub advertise_raft_addr: Option<String>,
    /// API address other nodes and clients use (default: the bound listen address).
    #[arg(long, env = "SONRAFT_ADVERTISE_API_ADDR")]
    pub advertise_api_addr: Option<String>,
    /// Secret every node-to-node RPC carries (nodes without it are refused): from
    /// SONRAFT_CLUSTER_SECRET, never a flag (see `--cluster-secret-file`).
    #[arg(skip)]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (mode 600), if SONRAFT_CLUSTER_SECRET is not set.
    #[arg(long, env = "SONRAFT_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The admin bearer token: from SONRAFT_TOKEN, never a flag (see `--token-file`).
    #[arg(skip)]
    pub token: Option<String>,
    /// File holding the admin token (mode 600), if SONRAFT_TOKEN is not set.
    #[arg(long, env = "SONRAFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File of more tokens with roles (mode 600), one `ROLE TOKEN` a line, ROLE one of
    /// read-only, operator, admin.
    #[arg(long, env = "SONRAFT_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Secrets are not taken on the command line (every user of the machine can read it).
    #[arg(long = "cluster-secret", hide = true, value_name = "SECRET")]
    pub cluster_secret_on_command_line: Option<String>,
    /// Secrets are not taken on the command line (every user of the machine can read it).
    #[arg(long = "token", hide = true, value_name = "TOKEN")]
    pub token_on_command_line: Option<String>,
    /// Check the configuration (file, secrets, tokens, addresses) and exit: 0 and a summary
    /// without secrets, or 1 and what is wrong. For `ExecStartPre=` and before an upgrade.
    #[arg(long)]
    pub check_config: bool,
    /// Lab and test setting: let admin tokens propose change sets in a SON function's name
    /// (otherwise only the nodes' own SON functions propose those, and the API takes operator
    /// change sets only).
    #[arg(long, env = "SONRAFT_API_SON_ORIGINS")]
    pub api_son_origins: bool,
    /// Raft timing preset.
    #[arg(long, env = "SONRAFT_TIMING", value_enum)]
    pub timing: Option<Timing>,
    /// Heartbeat interval in ms (overrides the preset).
    #[arg(long, env = "SONRAFT_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Minimum election timeout in ms (overrides the preset).
    #[arg(long, env = "SONRAFT_ELECTION_MIN_MS")]
    pub election_min_ms: Option<u64>,
    /// Maximum election timeout in ms (overrides the preset).
    #[arg(long, env = "SONRAFT_ELECTION_MAX_MS")]
    pub election_max_ms: Option<u64>,
    /// Longest wait in ms for a proposal's outcome before it is answered "outcome unknown"
    /// (default: four times the maximum election timeout, at least 2 s).
    #[arg(long, env = "SONRAFT_OUTCOME_TIMEOUT_MS")]
    pub outcome_timeout_ms: Option<u64>,
    /// Build a snapshot (and purge the log behind it) every this many applied entries
    /// (default 2000).
    #[arg(long, env = "SONRAFT_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Also build a snapshot once the log written since the last one holds this many bytes,
    /// or as many as the last snapshot if it is larger (default 4MiB): the log on disk stays
    /// near the image's own size whatever the entries' size.
    #[arg(long, env = "SONRAFT_SNAPSHOT_LOG_BYTES")]
    pub snapshot_log_bytes: Option<ByteSize>,
    /// Largest admin request body in bytes (except imports).
    #[arg(long, env = "SONRAFT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest `POST /image/import` body in bytes.
    #[arg(long, env = "SONRAFT_MAX_IMPORT_BYTES")]
    pub max_import_bytes: Option<usize>,
    /// Log format.
    #[arg(long, env = "SONRAFT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Address of the antenna endpoint (the fleet simulator, or a southbound gateway);
    /// several, comma-separated, spread the sessions.
    #[arg(long, env = "SONRAFT_ANTENNAS")]
    pub antennas: Option<String>,
    /// Start the antenna sessions only this many milliseconds after the node started (used by
    /// the fleet benchmark to measure memory before and after).
    #[arg(long, env = "SONRAFT_ANTENNAS_AFTER_MS")]
    pub antennas_after_ms: Option<u64>,
    /// One session per base station (cell site) carrying all its cells (`station`, the
    /// default), or one per cell (`cell`, for antennas that speak per cell).
    #[arg(long, env = "SONRAFT_ANTENNA_SESSIONS", value_enum)]
    pub antenna_sessions: Option<SessionKind>,
    /// Milliseconds a site's node may go unheard by the leader before the surviving nodes take
    /// its antennas over (default 4000 with `loopback` timing, 30000 with `wan`). Use the same
    /// value on every node: a node stops pushing to its antennas after a third of it without
    /// proof that it still belongs to the majority.
    #[arg(long, env = "SONRAFT_CONTROL_CLAIM_MS")]
    pub control_claim_ms: Option<u64>,
    /// Whether antennas taken over go back to their home site's node by themselves once it is
    /// back and caught up for `--control-hold-ms` (`auto`), or only with `ctl control
    /// hand-back` (`manual`).
    #[arg(long, env = "SONRAFT_CONTROL_HAND_BACK", value_enum)]
    pub control_hand_back: Option<HandBack>,
    /// Milliseconds a returning site's node must stay heard and caught up before its antennas
    /// go back to it (default 5000 with `loopback` timing, 60000 with `wan`).
    #[arg(long, env = "SONRAFT_CONTROL_HOLD_MS")]
    pub control_hold_ms: Option<u64>,
    /// Read this site's counters from the TS 32.435 measurement files in this directory
    /// (`A….xml`, e.g. what `sonraft sim --pm-dir` writes into `<dir>/<site>`) instead of the
    /// antenna sessions' reports; sessions, if `--antennas` is given too, still push
    /// configuration.
    #[arg(long, env = "SONRAFT_PM_DIR")]
    pub pm_dir: Option<PathBuf>,
    /// How much raw counter history to keep on disk: a number of periods (e.g. 96) or a
    /// duration (e.g. 90s, 30m, 24h, 7d). Default 96 periods.
    #[arg(long, env = "SONRAFT_RAW_COUNTER_RETENTION")]
    pub raw_counter_retention: Option<Retention>,
    /// Most disk space for raw counters (e.g. 2GiB); past it the oldest periods are dropped
    /// even inside the retention. Default 2GiB.
    #[arg(long, env = "SONRAFT_RAW_COUNTER_DISK_CAP")]
    pub raw_counter_disk_cap: Option<ByteSize>,
    /// Sled page cache of the image store (Raft log and state checkpoint), e.g. 64MiB.
    #[arg(long, env = "SONRAFT_STORE_CACHE")]
    pub store_cache: Option<ByteSize>,
    /// This node's certificate chain (PEM). With --tls-key and --tls-ca: the admin API serves
    /// HTTPS only and nodes talk to each other over TLS (see crate::tls).
    #[arg(long, env = "SONRAFT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SONRAFT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signs every node's certificate (PEM): the only one trusted for peers.
    #[arg(long, env = "SONRAFT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl NodeArgs {
    /// Takes the secrets that come only from the environment: `SONRAFT_CLUSTER_SECRET` and
    /// `SONRAFT_TOKEN` (an empty variable counts as unset).
    pub fn with_secrets_from_env(mut self) -> NodeArgs {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.cluster_secret = self
            .cluster_secret
            .or_else(|| var("SONRAFT_CLUSTER_SECRET"));
        self.token = self.token.or_else(|| var("SONRAFT_TOKEN"));
        self
    }
}

/// The same keys in a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    site: Option<String>,
    data_dir: Option<PathBuf>,
    raft_addr: Option<String>,
    api_addr: Option<String>,
    advertise_raft_addr: Option<String>,
    advertise_api_addr: Option<String>,
    cluster_secret: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    tokens_file: Option<PathBuf>,
    api_son_origins: Option<bool>,
    timing: Option<Timing>,
    heartbeat_ms: Option<u64>,
    election_min_ms: Option<u64>,
    election_max_ms: Option<u64>,
    outcome_timeout_ms: Option<u64>,
    snapshot_every: Option<u64>,
    snapshot_log_bytes: Option<NumberOrText>,
    max_body_bytes: Option<usize>,
    max_import_bytes: Option<usize>,
    log_format: Option<LogFormat>,
    antennas: Option<String>,
    antennas_after_ms: Option<u64>,
    antenna_sessions: Option<SessionKind>,
    control_claim_ms: Option<u64>,
    control_hand_back: Option<HandBack>,
    control_hold_ms: Option<u64>,
    pm_dir: Option<PathBuf>,
    raw_counter_retention: Option<NumberOrText>,
    raw_counter_disk_cap: Option<NumberOrText>,
    store_cache: Option<NumberOrText>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
}

/// A secret (the cluster secret, a token): `Debug` says that it is set, never what it is, so a
/// configuration printed for a bug report or a log line does not carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A complete, checked node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub site: String,
    pub data_dir: PathBuf,
    pub raft_listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub advertise_raft_addr: Option<String>,
    pub advertise_api_addr: Option<String>,
    pub cluster_secret: Secret,
    /// The admin token: what this node presents to other nodes' APIs.
    pub token: Secret,
    /// Every token the admin API takes, with its role.
    pub tokens: Tokens,
    /// Whether the API takes change sets in a SON function's name (`--api-son-origins`).
    pub api_son_origins: bool,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Longest wait for a proposal's outcome (see [`NodeConfig::outcome_bound`]).
    pub outcome_timeout_ms: u64,
    pub snapshot_every: u64,
    /// Snapshot by log size (see [`crate::compaction`]).
    pub snapshot_log_bytes: u64,
    pub max_body_bytes: usize,
    pub max_import_bytes: usize,
    pub log_format: LogFormat,
    pub antennas: Option<String>,
    pub antennas_after_ms: u64,
    pub antenna_sessions: SessionKind,
    /// When antennas move between nodes (see [`crate::control`]).
    pub control: crate::control::ControlTiming,
    /// The PM directory the counters are read from, if any (`--pm-dir`).
    pub pm_dir: Option<PathBuf>,
    /// Retention and disk cap of the raw counter store.
    pub raw_counters: RawLimits,
    /// Sled page cache of the image store, in bytes.
    pub store_cache_bytes: u64,
    /// TLS on both listeners and to peers, loaded and checked (`tls_cert`, `tls_key`,
    /// `tls_ca`); `None`: plain HTTP.
    pub tls: Option<sonraft_tls::NodeTls>,
}

impl NodeConfig {
    /// What `--check-config` prints: the settings that matter for deployment, no secret.
    pub fn summary(&self) -> String {
        let roles = self
            .tokens
            .counts()
            .iter()
            .map(|(role, n)| format!("{n} {}", role.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let or_bound =
            |a: &Option<String>| a.clone().unwrap_or_else(|| "(the bound address)".into());
        format!(
            "node {} of site {}\ndata dir: {}\nraft: listen {}, advertise {}\napi: listen {}, advertise {}\ntiming: heartbeat {} ms, election {}-{} ms\ntokens: {roles}\nantennas: {}\npm dir: {}\nSON origins from the API: {}\ncontrol: {}",
            self.id,
            self.site,
            self.data_dir.display(),
            self.raft_listen,
            or_bound(&self.advertise_raft_addr),
            self.api_listen,
            or_bound(&self.advertise_api_addr),
            self.heartbeat_ms,
            self.election_min_ms,
            self.election_max_ms,
            self.antennas.as_deref().unwrap_or("none"),
            self.pm_dir
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
            if self.api_son_origins {
                "admin tokens (lab setting)"
            } else {
                "no"
            },
            self.control,
        )
    }

    /// How long a proposal waits for its outcome before it is answered "outcome unknown": long
    /// enough for a new leader to be elected and to commit it, short enough that no client
    /// waits on a leader that lost its quorum.
    pub fn outcome_bound(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.outcome_timeout_ms)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

/// A secret from, in this order: the environment (already in `env`), a file named by a flag or
/// the environment, the config file's value, a file the config file names.
fn secret(
    env: Option<String>,
    path: Option<PathBuf>,
    in_file: Option<String>,
    file_path: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    if let Some(s) = env {
        return Ok(Some(s));
    }
    if let Some(p) = path {
        return access::read_secret_file(&p, what).map(Some);
    }
    if let Some(s) = in_file {
        return Ok(Some(s));
    }
    file_path
        .map(|p| access::read_secret_file(&p, what))
        .transpose()
}

fn parse_addr(what: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{what} {s:?} is not an ip:port address (e.g. 127.0.0.1:7001)"))
}

impl NodeConfig {
    /// Merges flags/environment (already in `args`) over the file over defaults, and checks
    /// the result.
    pub fn resolve(args: NodeArgs) -> anyhow::Result<NodeConfig> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let id = args
            .id
            .or(file.id)
            .context("--id (or SONRAFT_NODE_ID) is required")?;
        if let Err(e) = crate::membership::check_node_id(id) {
            bail!("--id: {e}");
        }
        let site = args
            .site
            .or(file.site)
            .context("--site (or SONRAFT_SITE) is required")?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .context("--data-dir (or SONRAFT_DATA_DIR) is required")?;
        let raft = args
            .raft_addr
            .or(file.raft_addr)
            .unwrap_or_else(|| "127.0.0.1:7001".into());
        let api = args
            .api_addr
            .or(file.api_addr)
            .unwrap_or_else(|| "127.0.0.1:8001".into());
        if args.cluster_secret_on_command_line.is_some() || args.token_on_command_line.is_some() {
            bail!(
                "secrets are not taken on the command line, where every user of the machine can read them: set SONRAFT_CLUSTER_SECRET and SONRAFT_TOKEN, or --cluster-secret-file and --token-file"
            );
        }
        let cluster_secret = secret(
            args.cluster_secret,
            args.cluster_secret_file,
            file.cluster_secret,
            file.cluster_secret_file,
            "cluster secret",
        )?
        .context("SONRAFT_CLUSTER_SECRET (or --cluster-secret-file) is required: nodes refuse peers without it")?;
        if cluster_secret.len() < 16 {
            bail!("the cluster secret must be at least 16 characters");
        }
        let token = secret(args.token, args.token_file, file.token, file.token_file, "token")?
            .context(
                "SONRAFT_TOKEN (or --token-file) is required: the admin API refuses requests without it",
            )?;
        if token.len() < MIN_TOKEN_LEN {
            bail!("the admin token must be at least {MIN_TOKEN_LEN} characters");
        }
        let mut tokens = Tokens::new(token.clone());
        if let Some(path) = args.tokens_file.or(file.tokens_file) {
            access::read_tokens_file(&path, &mut tokens)?;
        }
        let timing = args.timing.or(file.timing).unwrap_or_default();
        let (hb, emin, emax) = timing.millis();
        let heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(hb);
        let election_min_ms = args
            .election_min_ms
            .or(file.election_min_ms)
            .unwrap_or(emin);
        let election_max_ms = args
            .election_max_ms
            .or(file.election_max_ms)
            .unwrap_or(emax);
        if !(heartbeat_ms < election_min_ms && election_min_ms < election_max_ms) {
            bail!(
                "Raft timing needs heartbeat < election min < election max; got {heartbeat_ms} / {election_min_ms} / {election_max_ms} ms"
            );
        }
        let retention = match args.raw_counter_retention {
            Some(r) => r,
            None => file
                .raw_counter_retention
                .map(|v| v.parse("raw_counter_retention"))
                .transpose()?
                .unwrap_or_default(),
        };
        let disk_cap = match args.raw_counter_disk_cap {
            Some(b) => b.0,
            None => file
                .raw_counter_disk_cap
                .map(|v| v.parse::<ByteSize>("raw_counter_disk_cap"))
                .transpose()?
                .map_or(RawLimits::default().disk_cap_bytes, |b| b.0),
        };
        if disk_cap == 0 {
            bail!("--raw-counter-disk-cap must be above zero");
        }
        let store_cache_bytes = match args.store_cache {
            Some(b) => b.0,
            None => file
                .store_cache
                .map(|v| v.parse::<ByteSize>("store_cache"))
                .transpose()?
                .map_or(DEFAULT_STORE_CACHE, |b| b.0),
        };
        let snapshot_log_bytes = match args.snapshot_log_bytes {
            Some(b) => b.0,
            None => file
                .snapshot_log_bytes
                .map(|v| v.parse::<ByteSize>("snapshot_log_bytes"))
                .transpose()?
                .map_or(DEFAULT_SNAPSHOT_LOG_BYTES, |b| b.0),
        };
        if snapshot_log_bytes == 0 {
            bail!("--snapshot-log-bytes must be above zero");
        }
        if store_cache_bytes < MIN_STORE_CACHE {
            bail!("--store-cache must be at least 1MiB; got {store_cache_bytes} bytes");
        }
        let tls = crate::tls::resolve(
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_ca.or(file.tls_ca),
        )?;
        Ok(NodeConfig {
            id,
            site,
            data_dir,
            raft_listen: parse_addr("--raft-addr", &raft)?,
            api_listen: parse_addr("--api-addr", &api)?,
            advertise_raft_addr: args.advertise_raft_addr.or(file.advertise_raft_addr),
            advertise_api_addr: args.advertise_api_addr.or(file.advertise_api_addr),
            cluster_secret: Secret(cluster_secret),
            token: Secret(token),
            tokens,
            api_son_origins: args.api_son_origins || file.api_son_origins.unwrap_or(false),
            heartbeat_ms,
            election_min_ms,
            election_max_ms,
            outcome_timeout_ms: args
                .outcome_timeout_ms
                .or(file.outcome_timeout_ms)
                .unwrap_or((4 * election_max_ms).max(2000)),
            snapshot_every: args
                .snapshot_every
                .or(file.snapshot_every)
                .unwrap_or(DEFAULT_SNAPSHOT_EVERY),
            snapshot_log_bytes,
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(1 << 20),
            max_import_bytes: args
                .max_import_bytes
                .or(file.max_import_bytes)
                .unwrap_or(256 << 20),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            antennas: args.antennas.or(file.antennas),
            antennas_after_ms: args
                .antennas_after_ms
                .or(file.antennas_after_ms)
                .unwrap_or(0),
            antenna_sessions: args
                .antenna_sessions
                .or(file.antenna_sessions)
                .unwrap_or_default(),
            control: crate::control::ControlTiming::new(
                timing,
                args.control_claim_ms.or(file.control_claim_ms),
                args.control_hand_back.or(file.control_hand_back),
                args.control_hold_ms.or(file.control_hold_ms),
                election_max_ms,
            )?,
            pm_dir: args.pm_dir.or(file.pm_dir),
            raw_counters: RawLimits {
                retention,
                disk_cap_bytes: disk_cap,
            },
            store_cache_bytes,
            tls,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::access::Role;

    /// The least a node needs, for tests here and of the TLS settings.
    pub(crate) fn base() -> NodeArgs {
        NodeArgs {
            id: Some(1),
            site: Some("site-a".into()),
            data_dir: Some("/tmp/x".into()),
            cluster_secret: Some("0123456789abcdef".into()),
            token: Some("operator-token".into()),
            ..NodeArgs::default()
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "site = \"from-file\"\nheartbeat_ms = 70\ntiming = \"wan\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::resolve(NodeArgs {
            config: Some(path),
            ..base()
        })
        .unwrap();
        assert_eq!(cfg.site, "site-a");
        assert_eq!(cfg.heartbeat_ms, 70);
        assert_eq!((cfg.election_min_ms, cfg.election_max_ms), (1000, 2000));
    }

    #[test]
    fn a_missing_secret_is_refused_with_the_flag_to_set() {
        let err = NodeConfig::resolve(NodeArgs {
            cluster_secret: None,
            ..base()
        })
        .unwrap_err();
        assert!(err.to_string().contains("SONRAFT_CLUSTER_SECRET"), "{err}");
    }

    #[test]
    fn secrets_come_from_the_environment_or_files_never_from_flags() {
        use std::os::unix::fs::PermissionsExt;
        let err = NodeConfig::resolve(NodeArgs {
            token_on_command_line: Some("operator-token".into()),
            ..base()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("not taken on the command line"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let private = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let secret = private("secret", "fedcba9876543210\n");
        let token = private("token", "admin-from-file\n");
        let tokens = private("tokens", "read-only wall-screen-1\noperator night-shift\n");
        let config = private(
            "c.toml",
            &format!(
                "cluster_secret_file = {:?}\ntokens_file = {:?}\n",
                secret, tokens
            ),
        );
        let cfg = NodeConfig::resolve(NodeArgs {
            config: Some(config),
            cluster_secret: None,
            token: None,
            token_file: Some(token.clone()),
            ..base()
        })
        .unwrap();
        assert_eq!(cfg.cluster_secret.expose(), "fedcba9876543210");
        assert_eq!(cfg.token.expose(), "admin-from-file");
        // Printed, the configuration names no secret and no token.
        let printed = format!("{cfg:?}");
        for secret in [
            "fedcba9876543210",
            "admin-from-file",
            "wall-screen-1",
            "night-shift",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert_eq!(cfg.tokens.role_of("admin-from-file"), Some(Role::Admin));
        assert_eq!(cfg.tokens.role_of("wall-screen-1"), Some(Role::ReadOnly));
        assert_eq!(cfg.tokens.role_of("night-shift"), Some(Role::Operator));
        assert!(!cfg.api_son_origins);
        // The environment wins over a file.
        let cfg = NodeConfig::resolve(NodeArgs {
            token_file: Some(token.clone()),
            ..base()
        })
        .unwrap();
        assert_eq!(cfg.token.expose(), "operator-token");
        // A secret file others may read is refused, with the fix.
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeConfig::resolve(NodeArgs {
            token: None,
            token_file: Some(token),
            ..base()
        })
        .unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn storage_limits_default_to_96_periods_2_gib_a_64_mib_cache_and_a_snapshot_every_2000_entries()
    {
        let cfg = NodeConfig::resolve(base()).unwrap();
        assert_eq!(cfg.raw_counters.retention, Retention::Periods(96));
        assert_eq!(cfg.raw_counters.disk_cap_bytes, 2 << 30);
        assert_eq!(cfg.store_cache_bytes, 64 << 20);
        assert_eq!(cfg.snapshot_every, 2_000);
        assert_eq!(cfg.snapshot_log_bytes, 4 << 20);
    }

    #[test]
    fn storage_limits_come_from_the_file_as_numbers_or_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "raw_counter_retention = \"24h\"\nraw_counter_disk_cap = 1000000\nstore_cache = \"16MiB\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::resolve(NodeArgs {
            config: Some(path.clone()),
            ..base()
        })
        .unwrap();
        assert_eq!(
            cfg.raw_counters.retention,
            Retention::Duration(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(cfg.raw_counters.disk_cap_bytes, 1_000_000);
        assert_eq!(cfg.store_cache_bytes, 16 << 20);
        std::fs::write(&path, "raw_counter_retention = 12\n").unwrap();
        let cfg = NodeConfig::resolve(NodeArgs {
            config: Some(path.clone()),
            raw_counter_disk_cap: Some("3GB".parse().unwrap()),
            ..base()
        })
        .unwrap();
        assert_eq!(cfg.raw_counters.retention, Retention::Periods(12));
        assert_eq!(cfg.raw_counters.disk_cap_bytes, 3_000_000_000);
        std::fs::write(&path, "raw_counter_retention = \"soon\"\n").unwrap();
        let err = NodeConfig::resolve(NodeArgs {
            config: Some(path),
            ..base()
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("raw_counter_retention"),
            "{err:#}"
        );
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!("2GiB".parse(), Ok(ByteSize(2 << 30)));
        assert_eq!("500mb".parse(), Ok(ByteSize(500_000_000)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        for bad in ["", "GiB", "1.5GiB", "-1", "12 parsecs", "99999999999TiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_pm_dir_comes_from_the_flag_or_else_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "pm_dir = \"/pm/from-file\"\n").unwrap();
        let file = NodeConfig::resolve(NodeArgs {
            config: Some(path.clone()),
            ..base()
        })
        .unwrap();
        assert_eq!(file.pm_dir, Some(PathBuf::from("/pm/from-file")));
        let flag = NodeConfig::resolve(NodeArgs {
            config: Some(path),
            pm_dir: Some("/pm/flag".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(flag.pm_dir, Some(PathBuf::from("/pm/flag")));
        assert_eq!(NodeConfig::resolve(base()).unwrap().pm_dir, None);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "hearbeat_ms = 70\n").unwrap();
        let err = NodeConfig::resolve(NodeArgs {
            config: Some(path),
            ..base()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("hearbeat_ms"), "{err:#}");
    }
}
