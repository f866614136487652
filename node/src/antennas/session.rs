//! One antenna session: connect, HELLO, reports in, configuration out, acknowledgements
//! checked against the image, reconnect with exponential back-off and jitter.
//!
//! An idle session holds no buffers: its read buffer is dropped whenever it is empty, and
//! its state is a few counters and a hash of the configuration the antenna acknowledged.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use rand::Rng;
use serde::Serialize;
use sonraft_protocol::{self as protocol, CellConfig, Frame, code, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::fleet::Fleet;

/// What `GET /antennas` shows of a session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionState {
    pub connected: bool,
    pub connects: u32,
    pub failures: u32,
    pub last_error: Option<String>,
    pub reports: u64,
    pub last_period_end_ms: u64,
    pub pushes: u64,
    pub acks: u64,
    /// The antenna acknowledged values that differ from the image; a re-push is scheduled.
    pub diverged: bool,
    /// The antenna's configuration equals the image's.
    pub in_sync: bool,
    /// Log index of the image the acknowledged configuration was built from.
    pub acked_index: u64,
    /// The antenna refused this session's epoch (another node controls the cell now): why.
    pub fenced: Option<String>,
}

/// The antenna refused this session's epoch: another node controls the cell now.
#[derive(Debug)]
struct Fenced(String);

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the antenna refused this node's control epoch: {}",
            self.0
        )
    }
}

impl std::error::Error for Fenced {}

/// A session's handle, shared with the fleet.
pub struct Session {
    pub cell: Arc<str>,
    /// The control epoch of the cell's cell site this session speaks with.
    pub epoch: u64,
    pub notify: Notify,
    pub stop: AtomicBool,
    pub state: std::sync::Mutex<SessionState>,
    /// The report period the antenna announced in its last `WELCOME` (0: none yet).
    period_ms: std::sync::atomic::AtomicU32,
    /// The antenna does not know the fenced frames (a release before them): plain `HELLO` and
    /// `CONFIG_SET`, which it takes as epoch 0 — only ever set at epoch 0.
    legacy: AtomicBool,
}

/// The longest pause between reconnects: half the antenna's report period, between 1 s and
/// 30 s, so that a cell back from an outage is heard from (and its outage ends, and its
/// neighbours' compensation is reverted) within about a period whatever the period is.
pub fn reconnect_cap(period_ms: u32) -> Duration {
    if period_ms == 0 {
        return Duration::from_secs(30);
    }
    (Duration::from_millis(u64::from(period_ms)) / 2)
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// A hash of a configuration that does not depend on the order relations are listed in.
fn config_hash(c: &CellConfig) -> u64 {
    let mut canonical = c.clone();
    canonical.relations.sort_by(|a, b| a.target.cmp(&b.target));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canonical.hash(&mut h);
    h.finish()
}

impl Session {
    pub fn new(cell: String, epoch: u64) -> Arc<Session> {
        Arc::new(Session {
            cell: cell.into(),
            epoch,
            notify: Notify::new(),
            stop: AtomicBool::new(false),
            state: std::sync::Mutex::new(SessionState::default()),
            period_ms: std::sync::atomic::AtomicU32::new(0),
            legacy: AtomicBool::new(false),
        })
    }

    pub fn snapshot(&self) -> SessionState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut SessionState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// Runs the session until it is stopped, reconnecting after failures.
    pub async fn run(self: Arc<Self>, fleet: Arc<Fleet>) {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let result = self.serve(&fleet).await;
            if self.snapshot().connected {
                self.update(|s| s.connected = false);
                fleet.session_down();
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = &result
                && let Some(Fenced(why)) = e.downcast_ref::<Fenced>()
            {
                // Another node holds a newer epoch: reconnecting at this one would only be
                // refused again. The fleet ends this session when the image gives this node a
                // newer epoch (a new session says it), or moves the cell elsewhere.
                metrics::counter!("sonraft_antenna_sessions_fenced_total").increment(1);
                tracing::warn!(
                    cell = %self.cell,
                    epoch = self.epoch,
                    refusal = %why,
                    "another node controls this cell now: the antenna refused this node's epoch; the session stays idle until the image gives this node a newer one"
                );
                self.update(|s| s.fenced = Some(why.clone()));
                while !self.stop.load(Ordering::Relaxed) {
                    self.notify.notified().await;
                }
                return;
            }
            if let Err(e) = result {
                metrics::counter!("sonraft_antenna_session_failures_total").increment(1);
                let first = self.snapshot().failures == 0;
                self.update(|s| {
                    s.failures += 1;
                    s.last_error = Some(format!("{e:#}"));
                });
                if first {
                    tracing::info!(cell = %self.cell, error = %format!("{e:#}"), "antenna session lost; reconnecting with back-off");
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            let cap = reconnect_cap(self.period_ms.load(Ordering::Relaxed));
            backoff = (backoff * 2).min(cap);
        }
    }

    async fn read_frame(
        rd: &mut tokio::net::tcp::OwnedReadHalf,
        buf: &mut BytesMut,
    ) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = protocol::split_frame(buf)? {
                return Ok(f);
            }
            buf.reserve(512);
            if rd.read_buf(buf).await? == 0 {
                bail!("the antenna closed the connection");
            }
        }
    }

    /// One connection's life.
    async fn serve(&self, fleet: &Fleet) -> anyhow::Result<()> {
        let addr = fleet
            .address_for(&self.cell)
            .context("no antenna address configured")?;
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let legacy = self.legacy.load(Ordering::Relaxed);
        let hello = if legacy {
            Frame::Hello {
                cell: self.cell.to_string(),
                controller: fleet.node_id,
            }
        } else {
            Frame::HelloFenced {
                cell: self.cell.to_string(),
                controller: fleet.node_id,
                epoch: self.epoch,
            }
        };
        wr.write_all(&encode(&hello)).await?;
        let mut buf = BytesMut::new();
        let welcome =
            tokio::time::timeout(Duration::from_secs(10), Self::read_frame(&mut rd, &mut buf))
                .await
                .context("no WELCOME within 10 s")??;
        let mut acked = match welcome {
            Frame::Welcome {
                cell,
                config,
                period_ms,
            } if *cell == *self.cell => {
                self.period_ms.store(period_ms, Ordering::Relaxed);
                config_hash(&config)
            }
            Frame::Welcome { cell, .. } => bail!("the antenna answered as cell {cell}"),
            Frame::Error {
                code: code::STALE_EPOCH,
                message,
            } => return Err(Fenced(message).into()),
            Frame::Error {
                code: code::BAD_FRAME,
                message,
            } if !legacy && self.epoch == 0 => {
                // An antenna of a release before fencing; at epoch 0 a plain hello means the
                // same. At a later epoch this node cannot fence it and does not control it.
                self.legacy.store(true, Ordering::Relaxed);
                bail!(
                    "the antenna does not know fenced frames ({message}); speaking without epochs at epoch 0"
                )
            }
            Frame::Error { code, message } => bail!("the antenna refused: {message} (code {code})"),
            other => bail!("expected WELCOME, got {other:?}"),
        };
        fleet.session_up();
        self.update(|s| {
            s.connected = true;
            s.connects += 1;
        });
        let mut txn = 0u64;
        // (transaction, hash pushed, image index it was built from, when)
        let mut pending: Option<(u64, u64, u64, Instant)> = None;
        let mut retry_at: Option<tokio::time::Instant> = None;
        self.notify.notify_one();
        loop {
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = rd.read_buf(&mut buf) => {
                    if read? == 0 {
                        bail!("the antenna closed the connection");
                    }
                    loop {
                        let body = match protocol::split_body(&mut buf) {
                            Ok(Some(b)) => b,
                            Ok(None) => break,
                            Err(e) => return refuse_bad_frame(&mut wr, e).await,
                        };
                        // Reports, the bulk of the traffic, are validated and kept in place.
                        let parsed = if body.get(1) == Some(&protocol::KIND_REPORT) {
                            protocol::ReportView::parse(&body).map(|r| {
                                let end = r.period_end_ms;
                                // With `--pm-dir` the files are the counters (`pm_dir`).
                                if fleet.reports_from_sessions() {
                                    fleet.counters.ingest(&self.cell, &r, body.clone());
                                }
                                self.update(|s| {
                                    s.reports += 1;
                                    s.last_period_end_ms = end;
                                });
                                None
                            })
                        } else {
                            protocol::decode(&body).map(Some)
                        };
                        let frame = match parsed {
                            Ok(Some(f)) => f,
                            Ok(None) => continue,
                            Err(e) => return refuse_bad_frame(&mut wr, e).await,
                        };
                        match frame {
                            Frame::ConfigAck { txn: t, config } => {
                                let Some((want_txn, want_hash, index, sent)) = pending else { continue };
                                if t != want_txn {
                                    continue;
                                }
                                pending = None;
                                acked = config_hash(&config);
                                metrics::histogram!("sonraft_antenna_push_seconds").record(sent.elapsed().as_secs_f64());
                                if acked == want_hash {
                                    self.update(|s| {
                                        s.acks += 1;
                                        s.diverged = false;
                                        s.in_sync = true;
                                        s.acked_index = index;
                                    });
                                    fleet.acked(&self.cell, index);
                                    self.notify.notify_one();
                                } else {
                                    metrics::counter!("sonraft_antenna_diverged_total").increment(1);
                                    tracing::warn!(cell = %self.cell, "the antenna acknowledged other values than pushed; re-pushing");
                                    self.update(|s| {
                                        s.acks += 1;
                                        s.diverged = true;
                                        s.in_sync = false;
                                    });
                                    retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                                }
                            }
                            Frame::Error { code: code::STALE_EPOCH, message } => return Err(Fenced(message).into()),
                            Frame::Error { code, message } => bail!("the antenna reported an error: {message} (code {code})"),
                            other => {
                                let _ = wr.write_all(&encode(&Frame::Error { code: code::NOT_EXPECTED, message: "unexpected frame".into() })).await;
                                bail!("unexpected frame from the antenna: {other:?}");
                            }
                        }
                    }
                    if buf.is_empty() {
                        buf = BytesMut::new();
                    }
                }
                () = self.notify.notified() => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    self.push_if_needed(fleet, &mut wr, &mut txn, acked, &mut pending).await?;
                }
                () = retry => {
                    retry_at = None;
                    if pending.is_some_and(|p| p.3.elapsed() >= Duration::from_secs(5)) {
                        pending = None;
                    }
                    self.push_if_needed(fleet, &mut wr, &mut txn, acked, &mut pending).await?;
                }
            }
            if let Some(p) = pending
                && retry_at.is_none()
            {
                // No acknowledgement within 5 s: push again.
                retry_at = Some(tokio::time::Instant::from_std(p.3 + Duration::from_secs(5)));
            }
        }
    }

    /// Pushes the image's configuration unless the antenna already has it (hash `acked`) or a
    /// push of it is in flight.
    async fn push_if_needed(
        &self,
        fleet: &Fleet,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
        txn: &mut u64,
        acked: u64,
        pending: &mut Option<(u64, u64, u64, Instant)>,
    ) -> anyhow::Result<()> {
        // Without the control lease the node may have lost the cell to another: no push.
        if !fleet.may_push() {
            return Ok(());
        }
        let Some((desired, index)) = fleet.desired(&self.cell) else {
            return Ok(());
        };
        let h = config_hash(&desired);
        if pending.is_some_and(|p| p.1 == h) {
            return Ok(());
        }
        if h == acked && pending.is_none() {
            self.update(|s| {
                s.in_sync = true;
                s.diverged = false;
                s.acked_index = s.acked_index.max(index);
            });
            fleet.acked(&self.cell, index);
            return Ok(());
        }
        *txn += 1;
        let set = if self.legacy.load(Ordering::Relaxed) {
            Frame::ConfigSet {
                txn: *txn,
                config: desired,
            }
        } else {
            Frame::ConfigSetFenced {
                txn: *txn,
                epoch: self.epoch,
                config: desired,
            }
        };
        wr.write_all(&encode(&set)).await?;
        *pending = Some((*txn, h, index, Instant::now()));
        metrics::counter!("sonraft_antenna_pushes_total").increment(1);
        self.update(|s| {
            s.pushes += 1;
            s.in_sync = false;
        });
        Ok(())
    }
}

/// Answers a frame that does not parse with `ERROR` and ends the session (only this one).
async fn refuse_bad_frame(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    e: protocol::FrameError,
) -> anyhow::Result<()> {
    metrics::counter!("sonraft_antenna_bad_frames_total").increment(1);
    let refusal = Frame::Error {
        code: code::BAD_FRAME,
        message: e.to_string(),
    };
    let _ = wr.write_all(&encode(&refusal)).await;
    bail!("bad frame from the antenna: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_half_a_period_between_one_and_thirty_seconds() {
        assert_eq!(
            reconnect_cap(0),
            Duration::from_secs(30),
            "before any WELCOME"
        );
        assert_eq!(reconnect_cap(900_000), Duration::from_secs(30));
        assert_eq!(reconnect_cap(10_000), Duration::from_secs(5));
        assert_eq!(reconnect_cap(1_000), Duration::from_secs(1));
        assert_eq!(reconnect_cap(200), Duration::from_secs(1));
    }
}
