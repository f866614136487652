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
//! cluster_secret = "..."   # or SONRAFT_CLUSTER_SECRET
//! token = "..."            # or SONRAFT_TOKEN
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
    /// Secret every node-to-node RPC carries; nodes without it are refused.
    #[arg(long, env = "SONRAFT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Operator bearer token required by every mutating and reading admin route.
    #[arg(long, env = "SONRAFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    token: Option<String>,
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
    pm_dir: Option<PathBuf>,
    raw_counter_retention: Option<NumberOrText>,
    raw_counter_disk_cap: Option<NumberOrText>,
    store_cache: Option<NumberOrText>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
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
    pub cluster_secret: String,
    pub token: String,
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
        let cluster_secret = args
            .cluster_secret
            .or(file.cluster_secret)
            .context("--cluster-secret (or SONRAFT_CLUSTER_SECRET) is required: nodes refuse peers without it")?;
        if cluster_secret.len() < 16 {
            bail!("the cluster secret must be at least 16 characters");
        }
        let token = args.token.or(file.token).context(
            "--token (or SONRAFT_TOKEN) is required: the admin API refuses requests without it",
        )?;
        if token.len() < 8 {
            bail!("the operator token must be at least 8 characters");
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
            cluster_secret,
            token,
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
mod tests {
    use super::*;

    fn base() -> NodeArgs {
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
        assert!(err.to_string().contains("--cluster-secret"), "{err}");
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
