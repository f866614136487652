//! What an operations team installs (issue 15, "Operations"): `bootstrap-cluster.sh hosts`
//! writes one bundle per site from `deploy/` and prints the steps with no secret on any command
//! line; `deploy/install.sh` installs a bundle with the secrets private and the config checked
//! by the binary; and the systemd unit starts exactly what `sonraft node` accepts: its
//! environment, with the credentials where systemd puts them, passes `--check-config`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The value of `KEY=` in `secrets.env`.
fn secret(run: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(run.join("secrets.env")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap()
        .to_string()
}

/// `bootstrap-cluster.sh hosts ARGS` with its run directory in `run`, and no secret from the
/// test's environment; what it printed.
fn hosts(run: &Path, args: &[&str]) -> String {
    let out = Command::new(repo().join("scripts/bootstrap-cluster.sh"))
        .arg("hosts")
        .args(args)
        .env("SONRAFT_RUN_DIR", run)
        .env("SONRAFT_BIN", binary())
        .env_remove("SONRAFT_TOKEN")
        .env_remove("SONRAFT_CLUSTER_SECRET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Installs `bundle` under the scratch `root`, which must succeed with the config checked;
/// what it said.
fn install(bundle: &Path, root: &Path) -> String {
    let out = Command::new("sh")
        .arg(bundle.join("install.sh"))
        .arg("--root")
        .arg(root)
        .env_remove("SONRAFT_TOKEN")
        .env_remove("SONRAFT_CLUSTER_SECRET")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("configuration ok"), "{said}");
    said
}

#[test]
fn hosts_mode_bundles_install_and_the_unit_starts_what_the_node_accepts() {
    let run = tempfile::tempdir().unwrap();
    let stdout = hosts(run.path(), &["10.1.0.5", "10.2.0.5", "site-c.example.net"]);
    // The printed steps hold no secret.
    for key in ["SONRAFT_TOKEN", "SONRAFT_CLUSTER_SECRET"] {
        let value = secret(run.path(), key);
        assert!(value.len() >= 16, "{key}");
        assert!(!stdout.contains(&value), "{key} printed:\n{stdout}");
    }
    assert!(stdout.contains("install.sh"), "{stdout}");

    for (site, host) in [("site-a", "10.1.0.5"), ("site-c", "site-c.example.net")] {
        let bundle = run.path().join("hosts").join(site);
        let config = std::fs::read_to_string(bundle.join("sonraft.toml")).unwrap();
        assert!(
            config.contains(&format!("advertise_api_addr = \"{host}:8001\"")),
            "{config}"
        );
        assert!(!config.contains('@'), "a placeholder is left:\n{config}");
        for f in ["token", "cluster-secret", "tokens"] {
            assert_eq!(mode(&bundle.join(f)), 0o600, "{site}/{f}");
        }

        // Installed under a scratch root: the config checked by the binary, secrets private.
        let root = tempfile::tempdir().unwrap();
        let said = install(&bundle, root.path());
        assert!(said.contains(&format!("of site {site}")), "{said}");
        let etc = root.path().join("etc/sonraft");
        assert_eq!(mode(&etc), 0o750);
        for f in ["token", "cluster-secret", "tokens"] {
            assert_eq!(mode(&etc.join(f)), 0o600, "{f}");
        }
        let unit = root.path().join("etc/systemd/system/sonraft.service");
        assert!(unit.exists());

        // The unit's environment, with `%d` where systemd puts the credentials, is accepted.
        let unit = std::fs::read_to_string(unit).unwrap();
        let creds = tempfile::tempdir().unwrap();
        let mut check = Command::new(binary());
        check
            .args(["node", "--check-config"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for line in unit.lines() {
            if let Some(kv) = line.strip_prefix("Environment=") {
                let (k, v) = kv.split_once('=').unwrap();
                let v = v
                    .replace("%d", &creds.path().display().to_string())
                    .replace("/etc/sonraft", &etc.display().to_string());
                check.env(k, v);
            }
            if let Some(cred) = line.strip_prefix("LoadCredential=") {
                let (name, source) = cred.split_once(':').unwrap();
                let source = source.replace("/etc/sonraft", &etc.display().to_string());
                let to = creds.path().join(name);
                std::fs::copy(&source, &to).unwrap();
                // systemd hands credentials over root-owned, 0400, with an ACL for the service
                // user whose mask shows as group read: 0440 to `stat`.
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o440)).unwrap();
            }
        }
        check.env("CREDENTIALS_DIRECTORY", creds.path());
        let out = check.output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains("tokens: 0 read-only, 0 operator, 1 admin"),
            "{said}"
        );
        assert!(
            unit.contains("ExecStart=/usr/local/bin/sonraft node\n"),
            "{unit}"
        );
        assert!(
            unit.contains("KillSignal=SIGTERM"),
            "the rolling upgrade needs a graceful stop"
        );
    }
}

#[test]
fn a_broken_config_fails_the_check_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sonraft.toml");
    std::fs::write(
        &config,
        "id = 1\nsite = \"a\"\ndata_dir = \"/x\"\nheartbeat_ms = \"fast\"\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["node", "--check-config", "--config"])
        .arg(&config)
        .env("SONRAFT_TOKEN", "admin-token-1")
        .env("SONRAFT_CLUSTER_SECRET", "0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("heartbeat_ms"), "{err}");
}

#[test]
fn with_tls_each_bundle_carries_its_certificate_and_key_and_installs_them_private() {
    let run = tempfile::tempdir().unwrap();
    let stdout = hosts(run.path(), &["10.1.0.5", "10.2.0.5", "10.3.0.5", "--tls"]);
    assert!(stdout.contains("https://10.1.0.5:8001"), "{stdout}");
    assert!(stdout.contains("--ca "), "{stdout}");
    let bundle = run.path().join("hosts/site-b");
    let config = std::fs::read_to_string(bundle.join("sonraft.toml")).unwrap();
    assert!(
        config.contains("tls_key = \"/etc/sonraft/tls/node.key\""),
        "{config}"
    );
    assert_eq!(mode(&bundle.join("tls/node.key")), 0o600);
    assert!(
        !bundle.join("tls/ca.key").exists(),
        "the CA's key left the run directory"
    );
    // The certificate names the site's address.
    let cert = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(bundle.join("tls/node.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&cert.stdout).contains("10.2.0.5"),
        "{}",
        String::from_utf8_lossy(&cert.stdout)
    );
    // install.sh checks the config with the bundle's TLS files, then installs the key private.
    let root = tempfile::tempdir().unwrap();
    install(&bundle, root.path());
    let tls = root.path().join("etc/sonraft/tls");
    assert_eq!(mode(&tls.join("node.key")), 0o600);
    assert_eq!(mode(&tls.join("node.pem")), 0o644);
}

// ---------------------------------------------------------------------------------------------
// `hosts H1 H2 H3 --run`, for real, against three local "hosts".

/// `ssh HOST CMD...`: logs its argv, then runs CMD as a remote shell would, "on" HOST: with
/// none of the operator's environment (the script exports the secrets; a real ssh does not
/// pass them on), and `FAKE_HOST` naming the host for the fake `sudo`.
const FAKE_SSH: &str = r#"#!/bin/sh
printf 'ssh %s\n' "$*" >> "$FAKE_LOG"
host=$1
shift
exec env -i PATH="$PATH" HOME="$HOME" FAKE_LOG="$FAKE_LOG" FAKE_HOSTS="$FAKE_HOSTS" \
    FAKE_BROKEN_HOST="${FAKE_BROKEN_HOST:-}" FAKE_HOST="$host" sh -c "$*"
"#;

/// `scp [-OPTS] SRC HOST:DST`: logs its argv, then copies locally.
const FAKE_SCP: &str = r#"#!/bin/sh
printf 'scp %s\n' "$*" >> "$FAKE_LOG"
while [ $# -gt 2 ]; do
    case "$1" in -*) shift ;; *) break ;; esac
done
[ $# -eq 2 ] || { echo "fake scp: want SRC HOST:DST, got $*" >&2; exit 2; }
exec cp -rp "$1" "${2#*:}"
"#;

/// `sudo CMD...`: logs its argv and runs CMD. `sudo sh BUNDLE/install.sh` installs under the
/// host's own root (`$FAKE_HOSTS/$FAKE_HOST`, so that the three hosts do not collide), then
/// does what `systemctl enable --now sonraft` would: starts the installed unit's
/// `ExecStartPre` and `ExecStart`, with the unit's `Environment=` and its `LoadCredential=`
/// files in a credentials directory (`%d`), all paths under the host's root. What the host
/// itself would give the node on top: its state directory as the data dir, and the listen
/// addresses on the host's own address (on a real host, 0.0.0.0 is that host's interfaces;
/// here the three hosts share one machine). The node's pid goes to `ROOT/node.pid`. On
/// `FAKE_BROKEN_HOST` the service fails at once instead, as a node that cannot start does.
const FAKE_SUDO: &str = r#"#!/bin/sh
printf 'sudo %s\n' "$*" >> "$FAKE_LOG"
case "$1 $2" in
    "sh "*/install.sh) ;;
    *) exec "$@" ;;
esac
set -eu
root=$FAKE_HOSTS/$FAKE_HOST
shift
installer=$1
shift
mkdir -p "$root"
sh "$installer" --root "$root" "$@"

unit=$root/etc/systemd/system/sonraft.service
config=$root/etc/sonraft/sonraft.toml
creds=$root/run/credentials/sonraft.service
state=$root/var/lib/sonraft
mkdir -p "$creds" "$state"
chmod 700 "$state"
sed -n 's/^LoadCredential=//p' "$unit" | while IFS=: read -r name source; do
    cp "$root$source" "$creds/$name"
    chmod 440 "$creds/$name"
done
under_root() { sed -e "s|%d|$creds|g" -e "s|/etc/sonraft|$root/etc/sonraft|g"; }
set --
while IFS= read -r line; do
    case "$line" in
        Environment=*) set -- "$@" "$(printf '%s\n' "${line#Environment=}" | under_root)" ;;
    esac
done < "$unit"
listen() { # the port of the config's KEY = "0.0.0.0:PORT", on this host's address
    sed -n "s/^$1 = \"0\.0\.0\.0:\([0-9]*\)\"/$FAKE_HOST:\1/p" "$config"
}
set -- "$@" CREDENTIALS_DIRECTORY="$creds" SONRAFT_DATA_DIR="$state" \
    SONRAFT_RAFT_ADDR="$(listen raft_addr)" SONRAFT_API_ADDR="$(listen api_addr)"
# The TLS files the config names (bootstrap --tls), under the root.
for f in cert key ca; do
    file=$(sed -n "s/^tls_$f = \"\(.*\)\"/\1/p" "$config")
    [ -z "$file" ] || set -- "$@" "SONRAFT_TLS_$(echo "$f" | tr a-z A-Z)=$root$file"
done
# The commands' absolute paths (the binary's first) are under the root too.
pre=$root$(sed -n 's/^ExecStartPre=//p' "$unit" | under_root)
start=$root$(sed -n 's/^ExecStart=//p' "$unit" | under_root)
if [ "$FAKE_HOST" = "${FAKE_BROKEN_HOST:-}" ]; then
    start=$root/broken-node
    printf '#!/bin/sh\necho "sonraft: this host is broken on purpose" >&2\nexit 1\n' > "$start"
    chmod 755 "$start"
fi
# shellcheck disable=SC2086
env -i PATH="$PATH" "$@" $pre
# shellcheck disable=SC2086
env -i PATH="$PATH" "$@" $start < /dev/null >> "$root/node.log" 2>&1 &
echo $! > "$root/node.pid"
echo "fake systemd: started sonraft on $FAKE_HOST (pid $!)"
"#;

/// Three local "hosts" on random loopback addresses 127.a.b.`first`.. (all of 127.0.0.0/8 is
/// local on Linux), each with its own install root under `dir`; dropping it kills the node
/// each one started.
struct FakeHosts {
    addrs: Vec<String>,
    dir: tempfile::TempDir,
}

impl FakeHosts {
    fn new(first: u8) -> FakeHosts {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let r = h.finish();
        let (a, b) = (1 + (r % 254), 1 + ((r >> 8) % 254));
        let addrs = (first..first + 3)
            .map(|c| format!("127.{a}.{b}.{c}"))
            .collect();
        FakeHosts {
            addrs,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    /// The pid of the node `host` started, if it is still that node.
    fn node_pid(&self, host: &str) -> Option<u32> {
        let root = self.root(host);
        let pid: u32 = std::fs::read_to_string(root.join("node.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&root.display().to_string())
            .then_some(pid)
    }

    fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.root(host).join("node.log")).unwrap_or_default()
    }
}

impl Drop for FakeHosts {
    fn drop(&mut self) {
        for host in &self.addrs {
            if let Some(pid) = self.node_pid(host) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `sonraft ctl ARGS` against `nodes` with the token file the bundles were written with (and
/// trusting `ca`, if any).
fn ctl_with(nodes: &str, token_file: &Path, ca: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut ctl = Command::new(binary());
    ctl.arg("ctl")
        .args(args)
        .env("SONRAFT_NODES", nodes)
        .env("SONRAFT_TOKEN_FILE", token_file)
        .env_remove("SONRAFT_TOKEN")
        .env_remove("SONRAFT_CA");
    if let Some(ca) = ca {
        ctl.env("SONRAFT_CA", ca);
    }
    let out = ctl.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn hosts_run_installs_over_ssh_starts_the_units_and_forms_the_cluster() {
    hosts_run(false);
}

#[test]
fn hosts_run_with_tls_forms_the_cluster_over_https() {
    hosts_run(true);
}

/// What `bootstrap-cluster.sh hosts H1 H2 H3 --run` did against fake hosts.
struct HostsRun {
    status: std::process::ExitStatus,
    /// Its stdout, then its stderr.
    said: String,
    stderr: String,
    /// The argv of every fake ssh, scp and sudo call, one a line.
    argv_log: PathBuf,
    run: tempfile::TempDir,
    _fakes: tempfile::TempDir,
}

/// Runs `bootstrap-cluster.sh hosts H1 H2 H3 --run [--tls]` against `hosts` through the fake
/// ssh, scp and sudo, with `env` on top.
fn run_hosts(hosts: &FakeHosts, tls: bool, env: &[(&str, &str)]) -> HostsRun {
    let run = tempfile::tempdir().unwrap();
    let fakes = tempfile::tempdir().unwrap();
    for (name, text) in [("ssh", FAKE_SSH), ("scp", FAKE_SCP), ("sudo", FAKE_SUDO)] {
        write_executable(&fakes.path().join(name), text);
    }
    let argv_log = fakes.path().join("argv.log");
    let path = format!(
        "{}:{}",
        fakes.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut args = vec!["hosts"];
    args.extend(hosts.addrs.iter().map(String::as_str));
    args.push("--run");
    if tls {
        args.push("--tls");
    }
    let out = Command::new(repo().join("scripts/bootstrap-cluster.sh"))
        .args(&args)
        .env("PATH", &path)
        .env("FAKE_LOG", &argv_log)
        .env("FAKE_HOSTS", hosts.dir.path())
        .env("SONRAFT_RUN_DIR", run.path())
        .env("SONRAFT_BIN", binary())
        .env_remove("SONRAFT_TOKEN")
        .env_remove("SONRAFT_CLUSTER_SECRET")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    HostsRun {
        status: out.status,
        said: format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)),
        stderr,
        argv_log,
        run,
        _fakes: fakes,
    }
}

/// `bootstrap-cluster.sh hosts H1 H2 H3 --run [--tls]` against three fake hosts: the script
/// succeeds, the cluster forms, and no secret is on a command line.
fn hosts_run(tls: bool) {
    // Distinct last bytes, should both tests draw the same 127.a.b.
    let hosts = FakeHosts::new(if tls { 4 } else { 1 });
    let r = run_hosts(&hosts, tls, &[]);
    let (said, run) = (&r.said, &r.run);
    let logs = || {
        hosts
            .addrs
            .iter()
            .map(|h| format!("--- {h} node.log:\n{}", hosts.log(h)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(r.status.success(), "{said}\n{}", logs());

    // Every host runs the node it installed, from its own root.
    for host in &hosts.addrs {
        assert!(
            hosts.node_pid(host).is_some(),
            "{host} runs no node\n{said}\n{}",
            logs()
        );
        assert!(hosts.root(host).join("etc/sonraft/sonraft.toml").exists());
        let log = hosts.log(host);
        assert!(log.contains(&format!("tls={tls}")), "{host}:\n{log}");
    }

    // `ctl init` formed the cluster: each node answers, one of them leads, all agree on it,
    // and the cluster's health shows three voters, every member answering.
    let token = run.path().join("hosts/token");
    let ca = run.path().join("certs/ca.pem");
    let (scheme, ca) = if tls {
        ("https", Some(ca.as_path()))
    } else {
        ("http", None)
    };
    let urls: Vec<String> = hosts
        .addrs
        .iter()
        .map(|h| format!("{scheme}://{h}:8001"))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = String::new();
    let formed = loop {
        let mut leaders = std::collections::BTreeSet::new();
        let mut leading = 0;
        let mut ok = true;
        for url in &urls {
            let (success, info) = ctl_with(url, &token, ca, &["node-info", url]);
            ok &= success;
            leading += info.lines().filter(|l| *l == "role=leader").count();
            leaders.extend(
                info.lines()
                    .filter_map(|l| l.strip_prefix("leader_id="))
                    .map(str::to_string),
            );
            last = format!("{last}\n{url}: {info}");
        }
        if ok && leading == 1 && leaders.len() == 1 {
            let mut healthy = 0;
            for url in &urls {
                let (success, text) = ctl_with(url, &token, ca, &["--json", "health"]);
                last = format!("{url}: {text}");
                let Ok(h) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let voters = h["voters"].as_array().map_or(0, Vec::len);
                let answering = h["members"]
                    .as_array()
                    .map_or(0, |m| m.iter().filter(|m| m["answers"] == true).count());
                if success && h["healthy"] == true && voters == 3 && answering == 3 {
                    healthy += 1;
                }
            }
            if healthy == urls.len() {
                break true;
            }
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        last.clear();
    };
    assert!(
        formed,
        "the cluster did not form:\n{last}\n{said}\n{}",
        logs()
    );

    // No secret on any command line: not on those the fakes saw, nor the nodes', nor printed.
    let argv = std::fs::read_to_string(&r.argv_log).unwrap();
    for word in ["ssh ", "scp ", "sudo "] {
        assert_eq!(
            argv.lines().filter(|l| l.starts_with(word)).count(),
            if word == "ssh " { 6 } else { 3 },
            "{argv}"
        );
    }
    let mut seen = argv.clone();
    for host in &hosts.addrs {
        let pid = hosts.node_pid(host).unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        seen.push_str(&String::from_utf8_lossy(&cmdline));
    }
    for key in ["SONRAFT_TOKEN", "SONRAFT_CLUSTER_SECRET"] {
        let value = secret(run.path(), key);
        assert!(value.len() >= 16, "{key}");
        assert!(!seen.contains(&value), "{key} on a command line:\n{seen}");
        assert!(!said.contains(&value), "{key} printed:\n{said}");
    }
}

#[test]
fn hosts_run_names_the_node_that_never_answered_and_does_not_init() {
    let hosts = FakeHosts::new(7);
    let broken = hosts.addrs[1].clone();
    // The broken node never answers: the wait is all the script spends on it.
    let r = run_hosts(
        &hosts,
        false,
        &[
            ("FAKE_BROKEN_HOST", &broken),
            ("SONRAFT_HEALTH_WAIT_S", "2"),
        ],
    );
    assert_eq!(r.status.code(), Some(1), "{}", r.said);
    assert!(
        r.stderr.contains(&format!(
            "site-b (node 2) on {broken} did not answer http://{broken}:8001/health within 2 s"
        )),
        "{}",
        r.said
    );
    assert!(
        r.stderr
            .contains(&format!("its log: ssh {broken} journalctl -u sonraft")),
        "{}",
        r.said
    );
    // It stopped there: `ctl init` was not run.
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.ends_with("error: 1 node(s) not up; the cluster was not initialised"),
        "{}",
        r.said
    );
    assert!(!r.said.contains("initialised; voters"), "{}", r.said);
    // The three bundles were installed all the same.
    let argv = std::fs::read_to_string(&r.argv_log).unwrap();
    assert_eq!(
        argv.lines().filter(|l| l.starts_with("sudo ")).count(),
        3,
        "{argv}"
    );
}
