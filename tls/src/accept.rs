//! The server side of a TLS connection, run in the connection's own task so that a slow or
//! broken client never holds up the accept loop.
//!
//! A client that speaks plain HTTP to a TLS port gets a plain `400` saying the port speaks
//! HTTPS and is closed: without it, it would get TLS alert bytes it cannot read, or hang on a
//! server waiting for a ClientHello. A failed handshake is a fact about the client (no
//! certificate of this CA, another CA's, a port scanner), not about this node: it is logged
//! at debug, and at most once a minute at warn with the count, since anyone who can reach the
//! port can cause it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The longest a client may take from connecting to the end of its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two warnings about failed handshakes on one listener.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts TLS connections for one listener. Cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    tls: TlsAcceptor,
    listener: &'static str,
    failures: Arc<FailureLog>,
}

impl Acceptor {
    /// `listener` names the listener in logs ("admin API", "Raft listener").
    pub fn new(config: Arc<ServerConfig>, listener: &'static str) -> Acceptor {
        Acceptor {
            tls: TlsAcceptor::from(config),
            listener,
            failures: Arc::default(),
        }
    }

    /// The listener's name in logs.
    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// Runs the handshake on `stream` from `peer`; `None` when there is no TLS connection to
    /// serve (plain HTTP, answered with a 400; a failed or timed-out handshake, logged).
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(why)) => {
                self.failures.record(self.listener, peer, &why);
                None
            }
            Err(_) => {
                let why = format!("no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
                self.failures.record(self.listener, peer, &why);
                None
            }
        }
    }

    async fn handshake(&self, mut stream: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let mut first = [0u8; 1];
        let n = stream
            .peek(&mut first)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("closed before a handshake".into());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            let body = "this port speaks HTTPS only: use https:// and the cluster's CA\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            // The client may be gone already; it was refused either way.
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
            return Err("plain HTTP (or not TLS) at a TLS port; answered 400".into());
        }
        self.tls
            .accept(stream)
            .await
            .map_err(|e| format!("handshake failed: {}", chain(&e)))
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Failed handshakes of one listener since the last warning.
#[derive(Default)]
struct FailureLog {
    state: Mutex<FailureState>,
}

#[derive(Default)]
struct FailureState {
    last_warn: Option<Instant>,
    since_warn: u64,
}

impl FailureLog {
    /// Logs one refused connection; returns whether it was also a warning.
    fn record(&self, listener: &'static str, peer: SocketAddr, why: &str) -> bool {
        tracing::debug!(%peer, listener, reason = why, "TLS connection refused");
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.since_warn += 1;
        let due = s.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            tracing::warn!(
                %peer,
                listener,
                refused = s.since_warn,
                reason = why,
                "TLS connections refused since the last such warning (at most one a minute); \
                 clients need https:// and a certificate signed by this cluster's CA"
            );
            s.last_warn = Some(Instant::now());
            s.since_warn = 0;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refused_handshakes_warns_once_a_minute() {
        let log = FailureLog::default();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(
            log.record("admin API", peer, "first"),
            "the first one warns"
        );
        let warned = (0..1000)
            .filter(|_| log.record("admin API", peer, "again"))
            .count();
        assert_eq!(warned, 0, "the next thousand within the minute only count");
        if let Ok(mut s) = log.state.lock() {
            s.last_warn = Instant::now().checked_sub(WARN_EVERY);
        }
        assert!(
            log.record("admin API", peer, "later"),
            "a minute on, it warns again"
        );
    }
}
