//! The fleet: one [`Session`] per base station (cell site) this node controls, or per cell
//! with `--antenna-sessions cell`, kept in line with the image.
//! Without `--antennas` it holds no session (the counters then come from `--pm-dir` alone).
//!
//! A cell belongs to this node when the image says this node's site controls its cell site
//! (its home region's by default; see [`crate::control`]). The fleet starts and stops
//! sessions as the image changes, restarts a session whose cell site's control epoch changed,
//! and tells a session to push whenever an applied batch changed its cell or one of the
//! cell's outgoing relations. Sessions push only while the node holds its control lease
//! ([`Fleet::set_lease`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sonraft_client::v1;
use sonraft_protocol::{CellConfig, RelationConfig};
use sonraft_raft::model::image::NetworkImage;
use sonraft_raft::model::{AdminState, EnergySaving};
use sonraft_storage::StoreReader;

use super::awaiting::{Awaiting, Closing};
use super::counters::CounterStore;
use super::pm_dir::PmDir;
use super::session::Session;

/// Most close-to-ack latencies kept for `GET /antennas` (8 bytes each).
pub const MAX_LATENCIES: usize = 100_000;

/// This node's antenna sessions.
pub struct Fleet {
    pub node_id: u64,
    pub site: String,
    addrs: Vec<String>,
    store: StoreReader,
    pub counters: Arc<CounterStore>,
    /// With `--pm-dir`, the counters come from PM files and the sessions' reports are not
    /// stored (see [`super::pm_dir`]).
    pm_dir: Option<Arc<PmDir>>,
    /// Sessions per base station (or per cell with `--antenna-sessions cell`).
    stations: bool,
    sessions: std::sync::Mutex<HashMap<String, Arc<Session>>>,
    /// Each served cell's session key.
    session_of: std::sync::Mutex<HashMap<String, String>>,
    awaited: std::sync::Mutex<Awaiting>,
    /// Per acknowledged change set, ms from its period's end and from this node's close of it.
    latencies_ms: std::sync::Mutex<VecDeque<(f64, f64)>>,
    connected: AtomicUsize,
    /// Whether this node may push now (`Err`: why not); see [`crate::control`].
    lease: std::sync::Mutex<Result<(), String>>,
    leased: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    pub fn new(
        node_id: u64,
        site: String,
        addrs: Vec<String>,
        store: StoreReader,
        counters: Arc<CounterStore>,
        pm_dir: Option<Arc<PmDir>>,
        stations: bool,
    ) -> Arc<Fleet> {
        Arc::new(Fleet {
            node_id,
            site,
            addrs,
            store,
            counters,
            pm_dir,
            stations,
            sessions: std::sync::Mutex::new(HashMap::new()),
            session_of: std::sync::Mutex::new(HashMap::new()),
            awaited: std::sync::Mutex::default(),
            latencies_ms: std::sync::Mutex::new(VecDeque::new()),
            connected: AtomicUsize::new(0),
            lease: std::sync::Mutex::new(Err("the node has not checked its lease yet".into())),
            leased: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether this node may push configuration to its antennas now.
    pub fn may_push(&self) -> bool {
        self.leased.load(Ordering::Acquire)
    }

    /// Records whether the node holds its control lease. When it is regained, every session
    /// looks whether it has something to push; when lost, the sessions stop pushing (they go
    /// on reading counters).
    pub fn set_lease(&self, lease: Result<(), String>) {
        let now = lease.is_ok();
        let before = self.leased.swap(now, Ordering::AcqRel);
        match (&lease, before) {
            (Ok(()), false) => {
                tracing::info!("this node holds its control lease: pushing to its antennas");
                self.notify_all();
            }
            (Err(why), true) => tracing::warn!(
                reason = %why,
                "this node cannot prove it still belongs to the majority: it stops pushing to its antennas until it can"
            ),
            _ => {}
        }
        metrics::gauge!("sonraft_control_lease").set(f64::from(u8::from(now)));
        *lock(&self.lease) = lease;
    }

    /// Cells whose session is connected and reported the period before the one ending at
    /// `end_ms`, or a later one, however late (empty when the counters come from PM files):
    /// a cell of these missing from a closed period is late, not out.
    pub fn reporting(&self, end_ms: u64, period_ms: u32) -> HashSet<String> {
        if !self.reports_from_sessions() {
            return HashSet::new();
        }
        let since = end_ms.saturating_sub(u64::from(period_ms));
        let mut out = HashSet::new();
        for s in lock(&self.sessions).values() {
            let st = s.snapshot();
            if !st.connected {
                continue;
            }
            for (cell, c) in s.cells.iter().zip(&st.cells) {
                if c.last_period_end_ms >= since {
                    out.insert(cell.to_string());
                }
            }
        }
        out
    }

    /// The antenna address a session uses (sessions are spread over the addresses).
    pub fn address_for(&self, key: &str) -> Option<String> {
        if self.addrs.is_empty() {
            return None;
        }
        let h = key
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        Some(self.addrs[(h % self.addrs.len() as u64) as usize].clone())
    }

    /// A session connected, serving `cells` cells.
    pub fn session_up(&self, cells: usize) {
        let n = self.connected.fetch_add(cells, Ordering::Relaxed) + cells;
        metrics::gauge!("sonraft_antenna_sessions_connected").set(n as f64);
    }

    /// A session serving `cells` cells went down.
    pub fn session_down(&self, cells: usize) {
        let left = self
            .connected
            .fetch_sub(cells, Ordering::Relaxed)
            .saturating_sub(cells);
        metrics::gauge!("sonraft_antenna_sessions_connected").set(left as f64);
    }

    /// Cells served by a connected session: the reports a period expects.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the sessions' reports are this node's counters (not with `--pm-dir`).
    pub fn reports_from_sessions(&self) -> bool {
        self.pm_dir.is_none()
    }

    /// The cells this node controls in the current image.
    pub fn own_cells(&self) -> HashSet<String> {
        self.wanted()
            .into_values()
            .flat_map(|(_, cells)| cells)
            .collect()
    }

    /// The configuration the image wants on `cell`, and the log index it reflects.
    pub fn desired(&self, cell: &str) -> Option<(CellConfig, u64)> {
        self.store
            .with_applied_image(|image, applied| Self::config_of(image, cell, applied))
    }

    fn config_of(image: &NetworkImage, cell: &str, applied: u64) -> Option<(CellConfig, u64)> {
        let c = image.cells.get(cell)?;
        let relations = image
            .relations_from(cell)
            .map(|r| RelationConfig {
                target: r.target.to_string(),
                cio_db: r.cio_db,
                ho_allowed: r.ho_allowed,
            })
            .collect();
        let config = CellConfig {
            pci: c.pci,
            electrical_tilt: c.electrical_tilt,
            max_tx_power_dbm: c.max_tx_power_dbm,
            hysteresis: c.hysteresis,
            time_to_trigger_ms: c.time_to_trigger_ms,
            a3_offset: c.a3_offset,
            admin_state: match c.admin_state {
                AdminState::Unlocked => 0,
                AdminState::Locked => 1,
                AdminState::ShuttingDown => 2,
            },
            energy_saving: u8::from(c.energy_saving == EnergySaving::Dormant),
            relations,
        };
        Some((config, applied))
    }

    /// The sessions this node should hold: per key (base station, or cell), the control
    /// epoch and the cells, sorted.
    ///
    /// Walked on a copy: every cell, not under the state lock (every 5 s, and on changes).
    fn wanted(&self) -> HashMap<String, (u64, Vec<String>)> {
        let image = self.store.with_image(NetworkImage::control_copy);
        let mut out: HashMap<String, (u64, Vec<String>)> = HashMap::new();
        for c in image.cells.values() {
            let Some((site, epoch)) = image.controller(&c.site) else {
                continue;
            };
            if site != self.site {
                continue;
            }
            let key = if self.stations {
                c.site.clone()
            } else {
                c.id.to_string()
            };
            out.entry(key)
                .or_insert_with(|| (epoch, Vec::new()))
                .1
                .push(c.id.to_string());
        }
        for (_, cells) in out.values_mut() {
            cells.sort();
        }
        out
    }

    /// Starts and stops sessions so that there is one per base station (or cell) this node
    /// controls.
    fn reconcile(self: &Arc<Self>) {
        if self.addrs.is_empty() {
            return;
        }
        let wanted = self.wanted();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|key, s| {
            // A session of another epoch ends: a new one says the new epoch in its hello. So
            // does one whose base station gained or lost cells.
            let keep = wanted.get(key).is_some_and(|(epoch, cells)| {
                *epoch == s.epoch
                    && cells
                        .iter()
                        .map(String::as_str)
                        .eq(s.cells.iter().map(|c| &**c))
            });
            if !keep {
                s.stop.store(true, Ordering::Relaxed);
                s.notify.notify_one();
            }
            keep
        });
        let mut started = 0;
        for (key, (epoch, cells)) in wanted {
            if sessions.contains_key(&key) {
                continue;
            }
            let s = if self.stations {
                Session::for_station(key.clone(), cells, epoch)
            } else {
                Session::for_cell(key.clone(), epoch)
            };
            tokio::spawn(s.clone().run(self.clone()));
            sessions.insert(key, s);
            started += 1;
        }
        *lock(&self.session_of) = sessions
            .iter()
            .flat_map(|(key, s)| s.cells.iter().map(move |c| (c.to_string(), key.clone())))
            .collect();
        if started > 0 {
            tracing::info!(
                started,
                sessions = sessions.len(),
                "antenna sessions started"
            );
        }
        metrics::gauge!("sonraft_antenna_sessions").set(sessions.len() as f64);
    }

    fn notify(&self, cell: &str) {
        let Some(key) = lock(&self.session_of).get(cell).cloned() else {
            return;
        };
        if let Some(s) = lock(&self.sessions).get(&key) {
            s.notify.notify_one();
        }
    }

    fn notify_all(&self) {
        for s in lock(&self.sessions).values() {
            s.notify.notify_one();
        }
    }

    /// Keeps sessions in line with the image for the life of the node.
    pub async fn run(self: Arc<Self>) {
        let mut feed = self.store.subscribe();
        self.reconcile();
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                change = feed.recv() => match change {
                    Ok(c) if c.reset => {
                        self.reconcile();
                        self.notify_all();
                    }
                    Ok(c) => {
                        let known = lock(&self.sessions).len();
                        if !c.control.is_empty()
                            || c.cells.iter().any(|cell| !lock(&self.session_of).contains_key(cell.as_str()))
                            || known == 0
                        {
                            self.reconcile();
                        }
                        for cell in &c.cells {
                            self.notify(cell);
                        }
                        for (source, _) in &c.relations {
                            self.notify(source);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.reconcile();
                        self.notify_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = every.tick() => self.reconcile(),
            }
        }
    }

    /// Registers a committed SON change set touching `cells` (their sessions push it).
    pub fn await_acks(
        &self,
        index: u64,
        closing: Closing,
        cells: impl IntoIterator<Item = String>,
    ) {
        let cells: Vec<String> = cells
            .into_iter()
            .filter(|c| self.acked_index(c).is_some_and(|acked| acked < index))
            .collect();
        if cells.is_empty() {
            self.record_latency(closing);
            return;
        }
        let mut awaited = lock(&self.awaited);
        let forgotten = awaited.forgotten();
        awaited.insert(index, closing, cells);
        let forgotten = awaited.forgotten() - forgotten;
        if forgotten > 0 {
            metrics::counter!("sonraft_son_acks_forgotten_total").increment(forgotten);
        }
    }

    /// The image index `cell`'s antenna acknowledged last (`None`: no session serves it).
    fn acked_index(&self, cell: &str) -> Option<u64> {
        let key = lock(&self.session_of).get(cell).cloned()?;
        let s = lock(&self.sessions).get(&key).cloned()?;
        let i = s.cells.iter().position(|c| &**c == cell)?;
        Some(s.snapshot().cells.get(i)?.acked_index)
    }

    /// A session's antenna acknowledged the configuration of the image at `index`.
    pub fn acked(&self, cell: &str, index: u64) {
        let done = lock(&self.awaited).acked(cell, index);
        for end in done {
            self.record_latency(end);
        }
    }

    fn record_latency(&self, closing: Closing) {
        let now = crate::propose::now_ms();
        let from_end = now.saturating_sub(closing.end_ms) as f64;
        let from_close = now.saturating_sub(closing.closed_ms) as f64;
        metrics::histogram!("sonraft_son_close_to_ack_seconds").record(from_end / 1000.0);
        metrics::histogram!("sonraft_son_received_to_ack_seconds").record(from_close / 1000.0);
        let mut l = lock(&self.latencies_ms);
        if l.len() >= MAX_LATENCIES {
            l.pop_front();
        }
        l.push_back((from_end, from_close));
    }

    /// Latencies (ms) recorded so far, sorted: from the periods' ends, and from this node's
    /// closes of them.
    pub fn latencies(&self) -> (Vec<f64>, Vec<f64>) {
        let l = lock(&self.latencies_ms);
        let mut ends: Vec<f64> = l.iter().map(|(e, _)| *e).collect();
        let mut closes: Vec<f64> = l.iter().map(|(_, c)| *c).collect();
        drop(l);
        ends.sort_by(f64::total_cmp);
        closes.sort_by(f64::total_cmp);
        (ends, closes)
    }

    /// `GET /antennas`: a summary and up to `limit` sessions.
    pub fn describe(&self, limit: usize) -> v1::Antennas {
        let sessions: Vec<(String, Arc<Session>)> = lock(&self.sessions)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let now = crate::propose::now_ms();
        let (mut connected, mut in_sync, mut diverged, mut fenced, mut cells) = (0, 0, 0, 0, 0);
        let mut list = Vec::new();
        let mut sorted = sessions;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, s) in &sorted {
            let st = s.snapshot();
            fenced += u64::from(st.fenced.is_some());
            // One row per cell; the connection's fields repeat on each of a station's cells.
            for (cell, c) in s.cells.iter().zip(&st.cells) {
                let up = st.connected && !c.missing;
                cells += 1;
                connected += u64::from(up);
                in_sync += u64::from(c.in_sync);
                diverged += u64::from(c.diverged);
                if list.len() >= limit {
                    continue;
                }
                let lag_ms =
                    (c.last_period_end_ms > 0).then(|| now.saturating_sub(c.last_period_end_ms));
                list.push(v1::AntennaSession {
                    cell: cell.to_string(),
                    connected: up,
                    connects: st.connects,
                    failures: st.failures,
                    last_error: st.last_error.clone(),
                    reports: c.reports,
                    last_period_end_ms: c.last_period_end_ms,
                    lag_ms,
                    pushes: c.pushes,
                    acks: c.acks,
                    diverged: c.diverged,
                    in_sync: c.in_sync,
                    acked_index: c.acked_index,
                    epoch: Some(s.epoch),
                    fenced: st.fenced.clone(),
                    station: s.station.then(|| key.clone()),
                });
            }
        }
        let (lat, received) = self.latencies();
        let summary = |lat: &[f64]| v1::Latencies {
            count: lat.len() as u64,
            p50: quantile(lat, 0.5),
            p99: quantile(lat, 0.99),
            max: lat.last().copied(),
        };
        v1::Antennas {
            site: self.site.clone(),
            antenna_addresses: self.addrs.clone(),
            summary: v1::AntennasSummary {
                sessions: cells,
                connections: Some(sorted.len() as u64),
                connected: Some(connected),
                in_sync: Some(in_sync),
                diverged: Some(diverged),
                reports: Some(self.counters.reports.load(Ordering::Relaxed)),
                counter_values: Some(self.counters.values.load(Ordering::Relaxed)),
                late_reports: Some(self.counters.late_reports.load(Ordering::Relaxed)),
                close_to_ack_ms: Some(summary(&lat)),
                received_to_ack_ms: Some(summary(&received)),
                awaiting_acks: Some(lock(&self.awaited).len() as u64),
            },
            sessions: list,
            pm_dir: self.pm_dir.as_ref().map(|p| p.describe()),
            control: Some(self.describe_control(fenced)),
        }
    }
}

impl Fleet {
    fn describe_control(&self, fenced_sessions: u64) -> v1::AntennaControl {
        let view = self.store.with_image(NetworkImage::control_copy);
        let mine = crate::control::summary(&view)
            .sites
            .remove(&self.site)
            .unwrap_or_default();
        let lease = lock(&self.lease).clone();
        v1::AntennaControl {
            lease: lease.is_ok(),
            lease_lost: lease.err(),
            cell_sites: mine.cell_sites,
            taken_over: mine.taken_over,
            fenced_sessions,
        }
    }
}

/// The `q`-quantile (0..=1) of sorted latencies, the nearest-rank sample (0 when there is
/// none): what `GET /antennas` reports as `close_to_ack_ms`. The benchmarks compute theirs the
/// same way, but a node's report must not depend on the benchmarks' code.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantile_is_the_nearest_rank_sample_and_zero_without_samples() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&sorted, 0.5), 3.0);
        assert_eq!(quantile(&sorted, 0.99), 5.0);
        assert_eq!(quantile(&sorted, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
