//! Sockets for many sessions: a listen backlog sized for reconnect storms, and the open-files
//! limit.
//!
//! Both ends of the antenna protocol hold one socket per antenna (a node its sessions, the
//! simulator its antennas, the fleet benchmark both), so both raise the open-files limit and
//! listen with a deep backlog; the node's API and Raft listeners use the same backlog.
//!
//! tokio's `TcpListener::bind` listens with a backlog of 128 here. When more clients than that
//! connect at once (every SON client and operator tool after a leader change, a load generator
//! starting 256 clients, a fleet of antennas reconnecting), the kernel drops the extra SYNs and
//! the clients retry one second later: a one-second stall seen as `TcpExtListenOverflows` in
//! `nstat`.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// How many connections may wait to be accepted (the kernel caps it at `net.core.somaxconn`).
pub const BACKLOG: u32 = 4096;

/// Binds `addr` and listens with [`BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std does on Unix: a restarted node may bind its port while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Raises the open-files limit to the hard limit: every session is a socket.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}
