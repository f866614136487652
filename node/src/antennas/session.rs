//! One antenna session: connect, hello, reports in, configuration out, acknowledgements
//! checked against the image, reconnect with exponential back-off and jitter.
//!
//! A session is either one **base station's** (a cell site's cells over one connection:
//! `HELLO_STATION`, `CELL_REPORT`, `CELL_CONFIG_SET`; the default) or one **cell's**
//! (`HELLO_FENCED`, `REPORT`, `CONFIG_SET_FENCED`, for antennas that speak per cell; see
//! `--antenna-sessions`). Both say the cell site's control epoch; an antenna that refuses it
//! (`STALE_EPOCH`) fences the session off (see [`crate::control`]).
//!
//! An idle session holds no buffers: its read buffer is dropped whenever it is empty, and
//! its state is a few counters and, per cell, a hash of the configuration the antenna
//! acknowledged.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use rand::Rng;
use serde::Serialize;
use sonraft_protocol::{self as protocol, CellConfig, Frame, code, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::fleet::Fleet;

/// What `GET /antennas` shows of one cell of a session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CellState {
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
    /// The base station's welcome did not list this cell.
    pub missing: bool,
}

/// What `GET /antennas` shows of a session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionState {
    pub connected: bool,
    pub connects: u32,
    pub failures: u32,
    pub last_error: Option<String>,
    /// The antenna refused this session's epoch (another node controls the cells now): why.
    pub fenced: Option<String>,
    /// In the order of [`Session::cells`].
    pub cells: Vec<CellState>,
}

/// The antenna refused this session's epoch: another node controls the cells now.
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
    /// The base station (cell site) id, or the cell id of a per-cell session.
    pub key: Arc<str>,
    /// A base station's session (else one cell's).
    pub station: bool,
    /// The cells it carries, sorted (one for a per-cell session).
    pub cells: Vec<Arc<str>>,
    /// The control epoch of the cell site this session speaks with.
    pub epoch: u64,
    pub notify: Notify,
    pub stop: AtomicBool,
    pub state: std::sync::Mutex<SessionState>,
    /// The report period the antenna announced in its last welcome (0: none yet).
    period_ms: std::sync::atomic::AtomicU32,
    /// The antenna does not know the fenced frames (a release before them): plain `HELLO` and
    /// `CONFIG_SET`, which it takes as epoch 0 — only ever set at epoch 0, per-cell sessions.
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

/// A push awaiting its acknowledgement.
#[derive(Clone, Copy)]
struct Pending {
    txn: u64,
    hash: u64,
    /// The image index the pushed configuration was built from.
    index: u64,
    sent: Instant,
}

/// Per cell, during one connection.
#[derive(Clone, Copy, Default)]
struct Link {
    /// Hash of the configuration the antenna last said it has.
    acked: u64,
    pending: Option<Pending>,
    /// A re-push is due then (the antenna acknowledged other values).
    retry_at: Option<Instant>,
    /// The antenna has the cell (always, for a per-cell session).
    present: bool,
}

impl Session {
    /// A per-cell session.
    pub fn for_cell(cell: String, epoch: u64) -> Arc<Session> {
        let cell: Arc<str> = cell.into();
        Self::new(cell.clone(), false, vec![cell], epoch)
    }

    /// A base station's session, for `cells` of cell site `station`.
    pub fn for_station(station: String, mut cells: Vec<String>, epoch: u64) -> Arc<Session> {
        cells.sort();
        let cells = cells.into_iter().map(Arc::from).collect();
        Self::new(station.into(), true, cells, epoch)
    }

    fn new(key: Arc<str>, station: bool, cells: Vec<Arc<str>>, epoch: u64) -> Arc<Session> {
        let state = SessionState {
            cells: vec![CellState::default(); cells.len()],
            ..SessionState::default()
        };
        Arc::new(Session {
            key,
            station,
            cells,
            epoch,
            notify: Notify::new(),
            stop: AtomicBool::new(false),
            state: std::sync::Mutex::new(state),
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

    fn update_cell(&self, i: usize, f: impl FnOnce(&mut CellState)) {
        self.update(|s| {
            if let Some(c) = s.cells.get_mut(i) {
                f(c);
            }
        });
    }

    /// The position of `cell` in [`Session::cells`].
    fn position(&self, cell: &str) -> Option<usize> {
        self.cells.binary_search_by(|c| (**c).cmp(cell)).ok()
    }

    /// Runs the session until it is stopped, reconnecting after failures.
    pub async fn run(self: Arc<Self>, fleet: Arc<Fleet>) {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let result = self.serve(&fleet).await;
            let st = self.snapshot();
            if st.connected {
                self.update(|s| s.connected = false);
                fleet.session_down(st.cells.iter().filter(|c| !c.missing).count());
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = &result
                && let Some(Fenced(why)) = e.downcast_ref::<Fenced>()
            {
                // Another node holds a newer epoch: reconnecting at this one would only be
                // refused again. The fleet ends this session when the image gives this node a
                // newer epoch (a new session says it), or moves the cells elsewhere.
                metrics::counter!("sonraft_antenna_sessions_fenced_total").increment(1);
                tracing::warn!(
                    session = %self.key,
                    epoch = self.epoch,
                    refusal = %why,
                    "another node controls these cells now: the antenna refused this node's epoch; the session stays idle until the image gives this node a newer one"
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
                    tracing::info!(session = %self.key, error = %format!("{e:#}"), "antenna session lost; reconnecting with back-off");
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

    fn hello(&self, fleet: &Fleet, legacy: bool) -> Frame {
        let controller = fleet.node_id;
        if self.station {
            Frame::HelloStation {
                station: self.key.to_string(),
                controller,
                epoch: self.epoch,
            }
        } else if legacy {
            Frame::Hello {
                cell: self.key.to_string(),
                controller,
            }
        } else {
            Frame::HelloFenced {
                cell: self.key.to_string(),
                controller,
                epoch: self.epoch,
            }
        }
    }

    /// The welcome's configurations, per cell of the session (`None`: the antenna lacks it).
    fn welcomed(&self, welcome: Frame, legacy: bool) -> anyhow::Result<Vec<Option<u64>>> {
        match welcome {
            Frame::Welcome {
                cell,
                config,
                period_ms,
            } if !self.station && *cell == *self.key => {
                self.period_ms.store(period_ms, Ordering::Relaxed);
                Ok(vec![Some(config_hash(&config))])
            }
            Frame::WelcomeStation {
                station,
                period_ms,
                cells,
            } if self.station && *station == *self.key => {
                self.period_ms.store(period_ms, Ordering::Relaxed);
                let mut acked = vec![None; self.cells.len()];
                for (cell, config) in &cells {
                    if let Some(i) = self.position(cell) {
                        acked[i] = Some(config_hash(config));
                    }
                }
                Ok(acked)
            }
            Frame::Welcome { cell, .. } => bail!("the antenna answered as cell {cell}"),
            Frame::WelcomeStation { station, .. } => {
                bail!("the antenna answered as base station {station}")
            }
            Frame::Error {
                code: code::STALE_EPOCH,
                message,
            } => Err(Fenced(message).into()),
            Frame::Error {
                code: code::BAD_FRAME,
                message,
            } if !self.station && !legacy && self.epoch == 0 => {
                // An antenna of a release before fencing; at epoch 0 a plain hello means the
                // same. At a later epoch this node cannot fence it and does not control it.
                self.legacy.store(true, Ordering::Relaxed);
                bail!(
                    "the antenna does not know fenced frames ({message}); speaking without epochs at epoch 0"
                )
            }
            Frame::Error { code, message } => {
                bail!("the antenna refused: {message} (code {code})")
            }
            other => bail!("expected a welcome, got {other:?}"),
        }
    }

    /// One connection's life.
    async fn serve(&self, fleet: &Fleet) -> anyhow::Result<()> {
        let addr = fleet
            .address_for(&self.key)
            .context("no antenna address configured")?;
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let legacy = self.legacy.load(Ordering::Relaxed);
        wr.write_all(&encode(&self.hello(fleet, legacy))).await?;
        let mut buf = BytesMut::new();
        let welcome =
            tokio::time::timeout(Duration::from_secs(10), Self::read_frame(&mut rd, &mut buf))
                .await
                .context("no welcome within 10 s")??;
        let welcomed = self.welcomed(welcome, legacy)?;
        let mut links: Vec<Link> = welcomed
            .iter()
            .map(|acked| Link {
                acked: acked.unwrap_or(0),
                present: acked.is_some(),
                ..Link::default()
            })
            .collect();
        let missing: Vec<&str> = self
            .cells
            .iter()
            .zip(&links)
            .filter(|(_, l)| !l.present)
            .map(|(c, _)| &**c)
            .collect();
        if !missing.is_empty() {
            tracing::warn!(session = %self.key, missing = ?missing, "the base station does not have every cell the image gives it");
        }
        fleet.session_up(links.iter().filter(|l| l.present).count());
        self.update(|s| {
            s.connected = true;
            s.connects += 1;
            for (c, l) in s.cells.iter_mut().zip(&links) {
                c.missing = !l.present;
            }
        });
        let mut txn = 0u64;
        self.notify.notify_one();
        loop {
            let next = links
                .iter()
                .filter_map(|l| match (l.pending, l.retry_at) {
                    // No acknowledgement within 5 s: push again.
                    (Some(p), _) => Some(p.sent + Duration::from_secs(5)),
                    (None, r) => r,
                })
                .min();
            let retry = async {
                match next {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = rd.read_buf(&mut buf) => {
                    if read? == 0 {
                        bail!("the antenna closed the connection");
                    }
                    while let Some(body) = match protocol::split_body(&mut buf) {
                        Ok(b) => b,
                        Err(e) => return refuse_bad_frame(&mut wr, e).await,
                    } {
                        if let Err(e) = self.take(fleet, body, &mut links) {
                            return match e.downcast::<protocol::FrameError>() {
                                Ok(bad) => refuse_bad_frame(&mut wr, bad).await,
                                Err(e) => Err(e),
                            };
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
                    self.push_all(fleet, &mut wr, &mut txn, &mut links).await?;
                }
                () = retry => {
                    let now = Instant::now();
                    for l in &mut links {
                        if l.pending.is_some_and(|p| now >= p.sent + Duration::from_secs(5)) {
                            l.pending = None;
                        }
                        if l.retry_at.is_some_and(|t| now >= t) {
                            l.retry_at = None;
                        }
                    }
                    self.push_all(fleet, &mut wr, &mut txn, &mut links).await?;
                }
            }
        }
    }

    /// Takes one frame from the antenna: a report, an acknowledgement or an error.
    fn take(&self, fleet: &Fleet, body: Bytes, links: &mut [Link]) -> anyhow::Result<()> {
        // Reports, the bulk of the traffic, are validated and kept in place.
        let report = match body.get(1) {
            Some(&protocol::KIND_REPORT) if !self.station => Some((0, body)),
            Some(&protocol::KIND_CELL_REPORT) if self.station => {
                let (cell, report) = protocol::split_cell_report(&body)?;
                // A cell the image does not give this session: not this node's counters.
                self.position(&cell).map(|i| (i, report))
            }
            Some(&protocol::KIND_REPORT | &protocol::KIND_CELL_REPORT) => {
                bail!(protocol::FrameError::Bad(
                    "a report of the other session kind"
                ))
            }
            _ => {
                return self.take_frame(fleet, protocol::decode(&body)?, links);
            }
        };
        let Some((i, body)) = report else {
            return Ok(());
        };
        let r = protocol::ReportView::parse(&body)?;
        let end = r.period_end_ms;
        // With `--pm-dir` the files are the counters (`pm_dir`).
        if fleet.reports_from_sessions() {
            fleet.counters.ingest(&self.cells[i], &r, body.clone());
        }
        self.update_cell(i, |c| {
            c.reports += 1;
            c.last_period_end_ms = end;
        });
        Ok(())
    }

    fn take_frame(&self, fleet: &Fleet, frame: Frame, links: &mut [Link]) -> anyhow::Result<()> {
        let (t, i, config) = match frame {
            Frame::ConfigAck { txn, config } if !self.station => (txn, 0, config),
            Frame::CellConfigAck { txn, cell, config } if self.station => {
                let Some(i) = self.position(&cell) else {
                    return Ok(());
                };
                (txn, i, config)
            }
            Frame::Error {
                code: code::STALE_EPOCH,
                message,
            } => return Err(Fenced(message).into()),
            Frame::Error { code, message } => {
                bail!("the antenna reported an error: {message} (code {code})")
            }
            other => bail!("unexpected frame from the antenna: {other:?}"),
        };
        let l = &mut links[i];
        let Some(p) = l.pending else { return Ok(()) };
        if t != p.txn {
            return Ok(());
        }
        l.pending = None;
        l.acked = config_hash(&config);
        metrics::histogram!("sonraft_antenna_push_seconds").record(p.sent.elapsed().as_secs_f64());
        let cell = &self.cells[i];
        if l.acked == p.hash {
            self.update_cell(i, |c| {
                c.acks += 1;
                c.diverged = false;
                c.in_sync = true;
                c.acked_index = p.index;
            });
            fleet.acked(cell, p.index);
            // The image may have moved on meanwhile.
            self.notify.notify_one();
        } else {
            metrics::counter!("sonraft_antenna_diverged_total").increment(1);
            tracing::warn!(cell = %cell, "the antenna acknowledged other values than pushed; re-pushing");
            self.update_cell(i, |c| {
                c.acks += 1;
                c.diverged = true;
                c.in_sync = false;
            });
            l.retry_at = Some(Instant::now() + Duration::from_millis(500));
        }
        Ok(())
    }

    /// Pushes, cell by cell, the image's configuration where the antenna does not have it yet
    /// and no push of it is in flight.
    async fn push_all(
        &self,
        fleet: &Fleet,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
        txn: &mut u64,
        links: &mut [Link],
    ) -> anyhow::Result<()> {
        // Without the control lease the node may have lost the cells to another: no push.
        if !fleet.may_push() {
            return Ok(());
        }
        for (i, l) in links.iter_mut().enumerate() {
            if !l.present || l.retry_at.is_some() {
                continue;
            }
            let cell = &self.cells[i];
            let Some((desired, index)) = fleet.desired(cell) else {
                continue;
            };
            let h = config_hash(&desired);
            if l.pending.is_some_and(|p| p.hash == h) {
                continue;
            }
            if h == l.acked && l.pending.is_none() {
                self.update_cell(i, |c| {
                    c.in_sync = true;
                    c.diverged = false;
                    c.acked_index = c.acked_index.max(index);
                });
                fleet.acked(cell, index);
                continue;
            }
            *txn += 1;
            let set = if self.station {
                Frame::CellConfigSet {
                    txn: *txn,
                    epoch: self.epoch,
                    cell: cell.to_string(),
                    config: desired,
                }
            } else if self.legacy.load(Ordering::Relaxed) {
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
            l.pending = Some(Pending {
                txn: *txn,
                hash: h,
                index,
                sent: Instant::now(),
            });
            metrics::counter!("sonraft_antenna_pushes_total").increment(1);
            self.update_cell(i, |c| {
                c.pushes += 1;
                c.in_sync = false;
            });
        }
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

    #[test]
    fn a_station_sessions_cells_are_found_by_id() {
        let s = Session::for_station(
            "S1".into(),
            vec!["S1-3".into(), "S1-1".into(), "S1-2".into()],
            7,
        );
        assert_eq!(s.position("S1-1"), Some(0));
        assert_eq!(s.position("S1-3"), Some(2));
        assert_eq!(s.position("S2-1"), None);
        assert_eq!(s.snapshot().cells.len(), 3);
    }
}
