//! # sonraft-tls: TLS on the admin API and between sites
//!
//! An operator runs one private CA (`scripts/make-certs.sh`). It signs every node's
//! certificate, and every node and client trusts it alone: a node is configured with its own
//! chain and key and the CA (`tls_cert`, `tls_key`, `tls_ca`), a client with the CA only
//! (`sonraft ctl --ca`). The trust model is in docs/DESIGN.md ("Transport security").
//!
//! - [`files`]: PEM files into rustls configurations, with errors that name the file;
//! - [`connect`]: the connector of the pooled hyper clients (plain `http://` or `https://`
//!   verified against the CA), and how to tell a certificate the client did not trust;
//! - [`accept`]: the listeners' side: a handshake that never stalls or kills the accept loop,
//!   plain HTTP at a TLS port answered with a clear 400, failures logged without flooding;
//! - [`serve`]: the accept loop both listeners share when they speak TLS.
//!
//! rustls runs on the `ring` provider, chosen explicitly for every configuration (never the
//! process default, which panics when a dependency enables a second provider).
#![forbid(unsafe_code)]

pub mod accept;
pub mod connect;
pub mod files;
pub mod serve;

/// The rustls this crate builds on, for the types in its signatures.
pub use rustls;

pub use accept::Acceptor;
pub use connect::{Connector, connector, is_untrusted_certificate};
pub use files::{NodeTls, TlsError, trust_ca, trust_nothing};
pub use serve::serve;
