//! A WAN link in user space: a TCP proxy that holds every chunk of bytes for a one-way delay
//! (with jitter and TCP-like loss) before passing it on, in both directions.
//!
//! `tc netem` needs the `sch_netem` kernel module, which the machines this runs on do not
//! have; a proxy on the node-to-node path gives the same delay to the bytes Raft sends. What
//! it models, and why so:
//!
//! - **Delay and jitter** per chunk: each chunk read from one side is written to the other at
//!   `read time + one_way ± jitter` (uniform), but never before the chunk ahead of it: TCP
//!   delivers a connection's bytes in order, so jitter can bunch chunks up, never swap them.
//! - **Loss as TCP shows it**: TCP never loses bytes, it resends them. A segment (1448 bytes)
//!   is lost with probability `loss_permille / 1000`, and a chunk with a lost segment arrives
//!   `retransmit` later (by default 200 ms, Linux's minimum retransmission timeout); the
//!   chunks behind it wait for it (head-of-line blocking), as they would.
//! - **Connection set-up** costs one round trip before the first byte travels (SYN, SYN-ACK):
//!   the proxy waits `2 × one_way` before it dials the far side. A far side that refuses is
//!   answered with a reset, as a refused SYN would be.
//! - **Bounded**: at most [`MAX_CONNECTIONS`] connections a link, and at most
//!   [`MAX_CHUNKS_IN_FLIGHT`] chunks of at most [`CHUNK_BYTES`] held per direction; a full
//!   buffer stops the reading side, so the sender's TCP window closes as on a real path.
//!   Bandwidth is not limited.
//!
//! Every socket has `TCP_NODELAY`, as the node's own sockets do, so the proxy adds no
//! Nagle delay of its own. It runs on plain threads (two per connection) that sleep to the
//! microsecond: a tokio timer rounds each wait up to the next millisecond, which would add
//! up to 2 ms a round trip to a figure the WAN benchmark compares against 1 RTT + 2 ms.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Most bytes one read takes from a socket, and so the largest chunk delayed as one.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks held per direction of a connection before the proxy stops reading that side.
pub const MAX_CHUNKS_IN_FLIGHT: usize = 256;
/// Connections a link carries at once; further ones are reset.
pub const MAX_CONNECTIONS: usize = 64;
/// Payload of one TCP segment on a 1500-byte Ethernet path (with timestamps).
const SEGMENT_BYTES: usize = 1448;

/// What a link does to the bytes that cross it, the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSpec {
    /// One-way delay.
    pub one_way: Duration,
    /// Each chunk's delay is `one_way` plus a uniform sample of `-jitter..=jitter` (never
    /// below zero).
    pub jitter: Duration,
    /// Chance per thousand that a TCP segment is lost (and sent again).
    pub loss_permille: u32,
    /// How much later a chunk with a lost segment arrives.
    pub retransmit: Duration,
}

impl LinkSpec {
    /// Linux's minimum retransmission timeout (`TCP_RTO_MIN`).
    pub const RTO_MIN: Duration = Duration::from_millis(200);

    /// A link of `one_way` delay, no jitter, no loss.
    pub fn delay(one_way: Duration) -> LinkSpec {
        LinkSpec {
            one_way,
            jitter: Duration::ZERO,
            loss_permille: 0,
            retransmit: Self::RTO_MIN,
        }
    }

    /// The round trip without jitter or loss: the floor of anything that needs an answer.
    pub fn rtt(&self) -> Duration {
        2 * self.one_way
    }

    /// Chance that a chunk of `bytes` has at least one lost segment.
    fn chunk_loss(&self, bytes: usize) -> f64 {
        let p = f64::from(self.loss_permille.min(1000)) / 1000.0;
        let segments = bytes.div_ceil(SEGMENT_BYTES).max(1);
        1.0 - (1.0 - p).powi(i32::try_from(segments).unwrap_or(i32::MAX))
    }
}

/// The delay line of one direction of one connection: when each chunk may be delivered.
struct DelayLine {
    spec: LinkSpec,
    rng: StdRng,
    /// When the previous chunk is delivered: a chunk never overtakes it.
    last: Instant,
}

impl DelayLine {
    fn new(spec: LinkSpec, seed: u64, not_before: Instant) -> DelayLine {
        DelayLine {
            spec,
            rng: StdRng::seed_from_u64(seed),
            last: not_before,
        }
    }

    /// When a chunk of `bytes` read at `now` is to be written on.
    fn deliver_at(&mut self, now: Instant, bytes: usize) -> Instant {
        let jitter = self.spec.jitter.as_micros().min(u128::from(u32::MAX)) as i64;
        let offset = if jitter > 0 {
            self.rng.random_range(-jitter..=jitter)
        } else {
            0
        };
        let base = self.spec.one_way.as_micros().min(u128::from(u32::MAX)) as i64;
        let mut at = now + Duration::from_micros((base + offset).max(0) as u64);
        let loss = self.spec.chunk_loss(bytes);
        if loss > 0.0 && self.rng.random_bool(loss.min(1.0)) {
            at += self.spec.retransmit;
        }
        self.last = self.last.max(at);
        self.last
    }
}

/// A chunk on its way, and when it arrives.
struct Chunk {
    at: Instant,
    bytes: Vec<u8>,
}

/// What the link's threads share.
#[derive(Default)]
struct Shared {
    /// The link is dropped: every thread returns.
    closed: AtomicBool,
    /// The far side refuses connections, so the link's own port is closed too.
    dark: AtomicBool,
    /// Both sockets of each live connection, by number, so that dropping the link can close
    /// them.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    /// How many connections are being carried.
    live: AtomicUsize,
}

/// How often a link checks whether its far side refuses connections.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// One proxied link: connections to [`WanLink::addr`] are carried to the upstream address
/// through the delay of its [`LinkSpec`]. Dropping it closes the listener and every
/// connection.
///
/// While the upstream port refuses connections (its process is gone), so does the link's:
/// a node's watchdog takes a refused connection to the leader's Raft port as proof that the
/// leader's process is gone, and a proxy that accepted for a dead node would hide that. The
/// link notices within [`PROBE_EVERY`] and then refuses at once, where a real path would
/// take a round trip to answer a SYN with a reset.
pub struct WanLink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl WanLink {
    /// Listens on a free loopback port and carries what arrives there to `upstream`.
    /// `seed` makes the jitter and loss of a run repeatable.
    pub fn start(upstream: SocketAddr, spec: LinkSpec, seed: u64) -> io::Result<WanLink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let mut link = WanLink {
            addr,
            shared: shared.clone(),
            threads: Vec::new(),
        };
        let s = shared.clone();
        link.threads.push(
            std::thread::Builder::new()
                .name(format!("wan-{}", addr.port()))
                .spawn(move || accept_loop(Some(listener), addr, upstream, spec, seed, &s))?,
        );
        link.threads.push(
            std::thread::Builder::new()
                .name(format!("wan-probe-{}", addr.port()))
                .spawn(move || mirror_refusal(addr, upstream, &shared))?,
        );
        Ok(link)
    }

    /// Where to connect to cross the link.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for WanLink {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees `closed` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|p| p.into_inner()));
        for (near, far) in open.into_values() {
            let _ = near.shutdown(Shutdown::Both);
            let _ = far.shutdown(Shutdown::Both);
        }
    }
}

/// Keeps [`Shared::dark`] equal to "the upstream port refuses connections".
fn mirror_refusal(addr: SocketAddr, upstream: SocketAddr, shared: &Shared) {
    while !shared.closed.load(Ordering::SeqCst) {
        std::thread::sleep(PROBE_EVERY);
        match TcpStream::connect_timeout(&upstream, Duration::from_secs(1)) {
            Ok(_) => shared.dark.store(false, Ordering::SeqCst),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                if !shared.dark.swap(true, Ordering::SeqCst) {
                    // Wake the blocking accept, which then closes the port.
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
                }
            }
            // A timeout says nothing about the process: leave the port as it is.
            Err(_) => {}
        }
    }
}

/// Accepts on `addr` (closing the port while the link is dark) and starts a thread per
/// connection.
fn accept_loop(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    upstream: SocketAddr,
    spec: LinkSpec,
    seed: u64,
    shared: &Arc<Shared>,
) {
    let mut n = 0u64;
    let mut rebind_failures = 0u32;
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let l = match listener.take() {
            Some(l) => l,
            None if shared.dark.load(Ordering::SeqCst) => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            // std sets SO_REUSEADDR, so the port is free again at once.
            None => match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    rebind_failures += 1;
                    if rebind_failures == 1 {
                        eprintln!("wan link {addr}: cannot listen again: {e}; retrying");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        for incoming in l.incoming() {
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            if shared.dark.load(Ordering::SeqCst) {
                // Dropping the listener refuses what comes next (and resets the backlog).
                break;
            }
            let Ok(near) = incoming else {
                // Out of descriptors, say: wait rather than spin.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let accepted = Instant::now();
            if shared.live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                reset(&near);
                continue;
            }
            n += 1;
            let setup = Setup {
                accepted,
                upstream,
                spec,
                seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(n),
                id: n,
            };
            let s = shared.clone();
            shared.live.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name("wan-conn".into())
                .spawn(move || {
                    carry(near, &setup, &s.open, &s.closed);
                    s.open
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&setup.id);
                    s.live.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                // The connection went with the closure: the dialer sees it closed.
                shared.live.fetch_sub(1, Ordering::SeqCst);
                eprintln!("wan link to {upstream}: no thread for a connection: {e}");
            }
        }
    }
}

/// Closes `s` with a reset (`SO_LINGER` 0), as a refused or aborted connection is seen.
fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(Shutdown::Both);
}

/// What a connection's thread needs to know of it.
#[derive(Clone, Copy)]
struct Setup {
    accepted: Instant,
    upstream: SocketAddr,
    spec: LinkSpec,
    /// Seeds both directions' jitter and loss.
    seed: u64,
    /// Its key in the link's open connections.
    id: u64,
}

/// One connection: waits a round trip (the handshake), dials upstream, then pumps both ways
/// until either side closes.
fn carry(
    near: TcpStream,
    setup: &Setup,
    open: &Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    closed: &AtomicBool,
) {
    let Setup {
        accepted,
        upstream,
        spec,
        seed,
        id,
    } = *setup;
    std::thread::sleep(spec.rtt());
    let far = match TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) {
        Ok(far) => far,
        Err(_) => {
            // The refusal travels back to the dialer.
            std::thread::sleep(spec.one_way);
            reset(&near);
            return;
        }
    };
    let _ = near.set_nodelay(true);
    let _ = far.set_nodelay(true);
    let clones = (
        near.try_clone(),
        far.try_clone(),
        near.try_clone(),
        far.try_clone(),
    );
    let (Ok(near2), Ok(far2), Ok(near_reg), Ok(far_reg)) = clones else {
        reset(&near);
        return;
    };
    {
        let mut list = open.lock().unwrap_or_else(|p| p.into_inner());
        if closed.load(Ordering::SeqCst) {
            reset(&near);
            return;
        }
        list.insert(id, (near_reg, far_reg));
    }
    // The first bytes left the dialer right after the handshake.
    let first = accepted + spec.rtt();
    let back = std::thread::Builder::new()
        .name("wan-back".into())
        .spawn(move || pump(far2, near2, DelayLine::new(spec, !seed, first)));
    pump(near, far, DelayLine::new(spec, seed, first));
    if let Ok(b) = back {
        let _ = b.join();
    }
}

/// Carries `from` to `to` through `line`: a reader fills a bounded queue, a writer empties
/// it at each chunk's time. Ends when either side ends, closing the other.
fn pump(from: TcpStream, to: TcpStream, mut line: DelayLine) {
    let (tx, rx) = sync_channel::<Chunk>(MAX_CHUNKS_IN_FLIGHT);
    let Ok(from_reader) = from.try_clone() else {
        let _ = to.shutdown(Shutdown::Both);
        return;
    };
    let writer = std::thread::Builder::new()
        .name("wan-write".into())
        .spawn(move || deliver(rx, to, from));
    read_chunks(from_reader, tx, &mut line);
    if let Ok(w) = writer {
        let _ = w.join();
    }
}

fn read_chunks(mut from: TcpStream, tx: SyncSender<Chunk>, line: &mut DelayLine) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = line.deliver_at(Instant::now(), n);
        if tx
            .send(Chunk {
                at,
                bytes: buf[..n].to_vec(),
            })
            .is_err()
        {
            return;
        }
    }
}

/// Writes each chunk at its time; when the queue ends (the reading side closed), passes the
/// close on after the last chunk; when writing fails, closes the reading side too.
fn deliver(rx: Receiver<Chunk>, mut to: TcpStream, from: TcpStream) {
    while let Ok(chunk) = rx.recv() {
        let wait = chunk.at.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if to.write_all(&chunk.bytes).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port, one thread per connection; it lives as long as the test.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let _ = s.set_nodelay(true);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(link: &WanLink) -> TcpStream {
        let s = TcpStream::connect(link.addr()).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    }

    /// Sends one byte and waits for its echo.
    fn round_trip(s: &mut TcpStream) -> Duration {
        let started = Instant::now();
        s.write_all(&[7]).expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("echo");
        started.elapsed()
    }

    #[test]
    fn a_round_trip_through_the_link_takes_two_one_way_delays() {
        let spec = LinkSpec::delay(Duration::from_millis(20));
        let link = WanLink::start(echo_server(), spec, 1).expect("link");
        let mut s = connect(&link);
        // The first one also pays for the handshake.
        let first = round_trip(&mut s);
        assert!(first >= 2 * spec.rtt(), "first round trip {first:?}");
        let mut rtts: Vec<Duration> = (0..5).map(|_| round_trip(&mut s)).collect();
        rtts.sort();
        assert!(rtts[0] >= spec.rtt(), "fastest round trip {:?}", rtts[0]);
        // Generous: a busy machine may run the threads late, never early.
        assert!(
            rtts[2] < spec.rtt() + Duration::from_millis(60),
            "median round trip {:?}",
            rtts[2]
        );
    }

    #[test]
    fn jitter_never_reorders_the_bytes_of_a_connection() {
        let spec = LinkSpec {
            jitter: Duration::from_millis(5),
            ..LinkSpec::delay(Duration::from_millis(5))
        };
        let link = WanLink::start(echo_server(), spec, 2).expect("link");
        let mut s = connect(&link);
        let mut reader = s.try_clone().expect("clone");
        let sent = 2000u32;
        let collect = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut b = [0u8; 4];
            for _ in 0..sent {
                reader.read_exact(&mut b).expect("echo");
                got.push(u32::from_be_bytes(b));
            }
            got
        });
        for i in 0..sent {
            s.write_all(&i.to_be_bytes()).expect("write");
        }
        let got = collect.join().expect("reader");
        assert_eq!(got, (0..sent).collect::<Vec<_>>());
    }

    #[test]
    fn a_lost_segment_arrives_one_retransmission_later_instead_of_never() {
        let spec = LinkSpec {
            loss_permille: 1000,
            retransmit: Duration::from_millis(100),
            ..LinkSpec::delay(Duration::from_millis(10))
        };
        let link = WanLink::start(echo_server(), spec, 3).expect("link");
        let mut s = connect(&link);
        let rtt = round_trip(&mut s);
        // Lost on the way there and on the way back, and resent both times.
        let floor = spec.rtt() + 2 * spec.retransmit;
        assert!(rtt >= floor, "round trip {rtt:?} under {floor:?}");
    }

    #[test]
    fn a_far_side_that_refuses_makes_the_link_refuse_until_it_listens_again() {
        let far = TcpListener::bind("127.0.0.1:0").expect("bind");
        let upstream = far.local_addr().expect("addr");
        drop(far);
        let link =
            WanLink::start(upstream, LinkSpec::delay(Duration::from_millis(1)), 4).expect("link");
        let refused = |link: &WanLink| matches!(TcpStream::connect(link.addr()), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !refused(&link) {
            assert!(Instant::now() < deadline, "the link still accepts");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The far side comes back on the same port, as a restarted node does.
        let far = TcpListener::bind(upstream).expect("rebind");
        std::thread::spawn(move || {
            for s in far.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    while let Ok(1) = s.read(&mut b) {
                        let _ = s.write_all(&b);
                    }
                });
            }
        });
        while refused(&link) {
            assert!(Instant::now() < deadline, "the link still refuses");
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut s = connect(&link);
        round_trip(&mut s);
    }

    #[test]
    fn dropping_the_link_closes_its_connections() {
        let link = WanLink::start(echo_server(), LinkSpec::delay(Duration::ZERO), 5).expect("link");
        let mut s = connect(&link);
        round_trip(&mut s);
        drop(link);
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    }

    #[test]
    fn a_chunk_is_never_delivered_before_the_one_ahead_of_it() {
        let spec = LinkSpec {
            jitter: Duration::from_millis(20),
            loss_permille: 100,
            ..LinkSpec::delay(Duration::from_millis(25))
        };
        let start = Instant::now();
        let mut line = DelayLine::new(spec, 6, start);
        let mut last = start;
        for i in 0..10_000u64 {
            let now = start + Duration::from_micros(i * 100);
            let at = line.deliver_at(now, 100);
            assert!(at >= last && at >= now + Duration::from_millis(5));
            last = at;
        }
    }

    #[test]
    fn the_chance_a_chunk_is_resent_grows_with_its_segments() {
        let spec = LinkSpec {
            loss_permille: 1,
            ..LinkSpec::delay(Duration::ZERO)
        };
        assert!((spec.chunk_loss(100) - 0.001).abs() < 1e-9);
        let big = spec.chunk_loss(CHUNK_BYTES);
        assert!(big > 0.04 && big < 0.05, "{big}");
        assert_eq!(LinkSpec::delay(Duration::ZERO).chunk_loss(CHUNK_BYTES), 0.0);
    }
}
