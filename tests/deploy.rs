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
