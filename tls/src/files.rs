//! A node's PEM files (its chain, its key, the CA) into the rustls configurations it serves
//! and connects with, and a client's CA into the configuration it connects with.
//!
//! Every problem with a file (missing, unreadable, not PEM, nothing of the right kind in it, a
//! key that does not match the certificate) is a [`TlsError`] naming the file and its config
//! key, so a node refuses to start with a message an operator can act on, never a panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::accept::Acceptor;

/// Why TLS could not be set up from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // The io error is in the message rather than a `source`, so that the one line a user
    // of `to_string` prints says why, and a chain printer does not say it twice.
    #[error("cannot read the {what} {}: {error}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the {what} {} is not valid PEM: {reason}", .path.display())]
    BadPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the {what} {} holds no {expected}", .path.display())]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the {what} {} was not accepted: {reason}", .path.display())]
    Refused {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The TLS library refused a configuration built from files it accepted one by one.
    #[error("TLS could not be set up: {0}")]
    Setup(String),
}

/// What each file is, as errors name it (the config key with it).
const CERT: &str = "certificate (tls_cert)";
const KEY: &str = "key (tls_key)";
const CA: &str = "CA certificate (tls_ca)";
const CLIENT_CA: &str = "CA certificate (--ca)";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_path_buf(),
        error,
    })
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, SEC1 or PKCS#1).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: KEY,
            path: path.to_path_buf(),
            expected: "private key (-----BEGIN PRIVATE KEY-----)",
        },
        other => TlsError::BadPem {
            what: KEY,
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// The CA certificates in `path` as trust anchors.
fn roots(what: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(what, path)? {
        store.add(cert).map_err(|e| TlsError::Refused {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// A client configuration that trusts the CA in the PEM file at `ca` (a client's `--ca`).
pub fn trust_ca(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(CLIENT_CA, ca)?;
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A client configuration that trusts no certificate at all: what a client without a CA
/// meets an `https://` address with, so that it fails with "not trusted" rather than
/// trusting whatever answers.
pub fn trust_nothing() -> Result<Arc<ClientConfig>, TlsError> {
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    ))
}

/// A node's TLS: what its two listeners serve and what it connects to other nodes with.
///
/// The admin API asks clients for no certificate (operators authenticate with their token);
/// the Raft listener requires one the CA signed, so a process without such a certificate
/// cannot even reach the cluster-secret check.
#[derive(Clone)]
pub struct NodeTls {
    api: Arc<ServerConfig>,
    peer: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The files, as given (for logs and `Debug`).
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Reads and checks the node's chain (`cert`), key and CA.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<NodeTls, TlsError> {
        let chain = certificates(CERT, cert)?;
        let private = private_key(key)?;
        let roots = roots(CA, ca)?;
        let mismatch = |e: rustls::Error| TlsError::Refused {
            what: CERT,
            path: cert.to_path_buf(),
            reason: format!("{e} (with the key {})", key.display()),
        };
        let api = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), private.clone_key())
            .map_err(mismatch)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Refused {
                what: CA,
                path: ca.to_path_buf(),
                reason: e.to_string(),
            })?;
        let peer = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), private.clone_key())
            .map_err(mismatch)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(mismatch)?;
        Ok(NodeTls {
            api: Arc::new(api),
            peer: Arc::new(peer),
            client: Arc::new(client),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        })
    }

    /// The admin API's side: any client, this node's certificate.
    pub fn api_acceptor(&self) -> Acceptor {
        Acceptor::new(self.api.clone(), "admin API")
    }

    /// The Raft listener's side: only clients with a certificate the CA signed.
    pub fn peer_acceptor(&self) -> Acceptor {
        Acceptor::new(self.peer.clone(), "Raft listener")
    }

    /// How this node connects to other nodes (and forwards to the leader's admin API):
    /// trusting the CA, presenting its own certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_missing_file_is_named_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = NodeTls::load(&missing, &missing, &missing).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("tls_cert") && text.contains("nope.pem"),
            "{text}"
        );
    }

    #[test]
    fn a_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let junk = write(dir.path(), "junk.pem", "this is not PEM at all\n");
        let err = trust_ca(&junk).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("junk.pem") && text.contains("--ca"), "{text}");
    }

    #[test]
    fn a_broken_pem_block_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let broken = write(
            dir.path(),
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let err = trust_ca(&broken).unwrap_err();
        assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
        assert!(err.to_string().contains("broken.pem"), "{err}");
    }

    #[test]
    fn a_client_that_trusts_nothing_can_still_be_built() {
        assert!(trust_nothing().is_ok());
    }
}
