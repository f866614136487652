//! The connector of every pooled hyper client that talks to a node: `http://` as before, and
//! `https://` verified against the configured CA, the server name being the host of the
//! address (a DNS name, or an IP address matched against the certificate's IP SANs).

use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::ClientConfig;

/// A connector for both schemes, over `http` (whose socket options it keeps: `TCP_NODELAY`,
/// timeouts, keep-alive).
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Wraps `http` so that `https://` addresses are reached with TLS under `tls`, and `http://`
/// ones without.
pub fn connector(mut http: HttpConnector, tls: Arc<ClientConfig>) -> Connector {
    // The TLS layer hands `https://` URIs down; the plain connector must not refuse them.
    http.enforce_http(false);
    // `with_tls_config` requires an ALPN list it fills itself; ours never sets one.
    let mut config = (*tls).clone();
    config.alpn_protocols.clear();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// Whether `e` (or an error under it) is a server certificate this client did not trust:
/// signed by another CA, expired, or not for the name or address connected to. Such a
/// failure will not heal by retrying, and its fix is the client's trust (`--ca`).
pub fn is_untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        // An `io::Error` wrapping another error reports that error's source, not the error
        // itself: step into it (hyper-rustls wraps tokio-rustls's io::Error in another).
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}
