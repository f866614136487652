//! Whether a node speaks TLS, from its three PEM files: this node's chain (`tls_cert`), its
//! key (`tls_key`) and the CA that signs every node (`tls_ca`).
//!
//! All three: the admin API serves HTTPS only, the Raft listener takes only peers with a
//! certificate the CA signed, and this node reaches its peers (and forwards to the leader's
//! API) over TLS, verifying their certificates against the CA for the host of their
//! advertised address. None: plain HTTP, as before TLS existed. Anything between is refused
//! at start-up: a node that silently fell back to plain HTTP would send the cluster secret
//! and the operator's token in clear. The files are read and checked here, so a bad one
//! stops the node before it listens, with an error naming it.

use std::path::PathBuf;

use anyhow::bail;
use sonraft_tls::NodeTls;

/// The node's TLS from the three settings (flag, environment or file already merged).
pub fn resolve(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Option<NodeTls>> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(NodeTls::load(&cert, &key, &ca)?)),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert (tls_cert, SONRAFT_TLS_CERT)"),
                (key.is_none(), "--tls-key (tls_key, SONRAFT_TLS_KEY)"),
                (ca.is_none(), "--tls-ca (tls_ca, SONRAFT_TLS_CA)"),
            ]
            .into_iter()
            .filter_map(|(absent, name)| absent.then_some(name))
            .collect();
            bail!(
                "TLS needs all three of --tls-cert, --tls-key and --tls-ca, or none of them \
                 (plain HTTP); missing: {}",
                missing.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::tests::base as args;
    use crate::config::{NodeArgs, NodeConfig};

    /// A CA and certificates for `a` and `b` from the operator's script.
    fn certs(dir: &Path) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-certs.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(dir)
            .args(["a=127.0.0.1", "b=localhost"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn without_any_tls_file_the_node_speaks_plain_http() {
        assert!(NodeConfig::resolve(args()).unwrap().tls.is_none());
    }

    #[test]
    fn a_partial_set_is_refused_naming_what_is_missing() {
        let err = NodeConfig::resolve(NodeArgs {
            tls_cert: Some("/etc/sonraft/a.pem".into()),
            ..args()
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("--tls-key")
                && text.contains("--tls-ca")
                && !text.contains("missing: --tls-cert"),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_file_from_the_config_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            "tls_cert = \"/no/such/cert.pem\"\ntls_key = \"/no/such/key.pem\"\ntls_ca = \"/no/such/ca.pem\"\n",
        )
        .unwrap();
        let err = NodeConfig::resolve(NodeArgs {
            config: Some(config),
            ..args()
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("/no/such/cert.pem") && text.contains("tls_cert"),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        certs(dir.path());
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = NodeConfig::resolve(NodeArgs {
            tls_cert: Some(dir.path().join("a.pem")),
            tls_key: Some(dir.path().join("a.key")),
            tls_ca: Some(junk),
            ..args()
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("junk.pem") && text.contains("tls_ca"),
            "{text}"
        );
    }

    #[test]
    fn the_scripts_certificates_load_and_a_key_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        certs(dir.path());
        let with = |key: &str| NodeArgs {
            tls_cert: Some(dir.path().join("a.pem")),
            tls_key: Some(dir.path().join(key)),
            tls_ca: Some(dir.path().join("ca.pem")),
            ..args()
        };
        assert!(NodeConfig::resolve(with("a.key")).unwrap().tls.is_some());
        let err = NodeConfig::resolve(with("b.key")).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("a.pem") && text.contains("b.key"), "{text}");
    }
}
