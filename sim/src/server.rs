//! The simulator's network side: antenna connections over TCP, the period clock, and a small
//! HTTP status endpoint that reports the state of the planted problems.
//!
//! - `session`: one antenna connection (hello, welcome, reports out, configuration in);
//! - `station`: one base station connection carrying every cell of a cell site;
//! - `fencing`: what each antenna remembers of ownership epochs across sessions;
//! - `coverage`: the coverage problems as `GET /state` shows them.
//!
//! Fencing, in short (the whole argument is in `fencing`): every hello and configuration is
//! at an ownership epoch (plain `HELLO` 0; plain `CONFIG_SET` its session's; the fenced kinds
//! their own). One older than the newest epoch the cell has seen is refused with `ERROR
//! STALE_EPOCH` and its session closed; a newer one raises the newest epoch and closes the
//! cell's sessions at older ones the same way; equal epochs coexist. `GET /state` shows the
//! counters under `"fencing"` (`stale_hellos`, `stale_refused`, `superseded_sessions`, the
//! self-checks `stale_applied` and `epoch_conflicts` that must stay 0, applies per controller
//! node id, `cells_fenced`) and each cell's `newest_epoch` under `"configs"`.
//!
//! Station sessions: a real base station holds one O1/E2 connection for all its cells, and a
//! cell site of the topology (`S00017`, holding `S00017-1`, `S00017-2`, …) plays one when a
//! controller opens with `HELLO_STATION`. It answers `WELCOME_STATION` with every cell of the
//! site and its configuration (an unknown station: `ERROR UNKNOWN_CELL`), then sends each
//! period one `CELL_REPORT` per cell that reports (a cell in hard outage sends nothing while
//! out, but the station's session stays open; `sleeping` and `late` act per cell as on a cell
//! session), and applies `CELL_CONFIG_SET` as a cell session applies `CONFIG_SET_FENCED`,
//! answering `CELL_CONFIG_ACK` (a cell that is not the station's: `ERROR UNKNOWN_CELL`). Its
//! epoch is the site's, fenced over all its cells (see `fencing`). `GET /state` counts the
//! open sessions of each kind under `"sessions"` (`cell`, `station`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use sonraft_protocol::{CellConfig, Frame, cell_counter as cc, encode, relation_counter as rc};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::model::{self, RelationState};
use super::radio::{CellFault, RadioGrid};
use super::topology::{ISD_M, Topology};

mod coverage;
mod fencing;
mod session;
mod station;

/// Everything that changes while the simulator runs.
struct Mutable {
    /// Faults planted through `POST /fault`, newest last.
    planted: Vec<Planted>,
    configs: Vec<CellConfig>,
    relations: Vec<RelationState>,
    period: u64,
    last: model::PeriodOutcome,
    first_late: Vec<f64>,
    /// Per cell, since the start: handover attempts, too-early and too-late handovers over its
    /// relations (what `sonraft bench son` reads the too-early ratio from).
    handovers: Vec<[u64; 3]>,
    /// What the network delivered and spent since the start.
    totals: Totals,
}

/// What a period's computation changes: the radio layer's bins (with the faults planted in
/// them) and the counters' noise. Locked apart from [`Mutable`], so that configuration pushes
/// are applied and acknowledged while a period is computed (at 100,000 cells that takes a
/// second or more); the period sees the configuration as it was when it began.
struct Radio {
    grid: RadioGrid,
    rng: StdRng,
}

/// Sums over the periods since the start: what `sonraft bench energy` compares.
#[derive(Debug, Default, Clone)]
struct Totals {
    periods: u64,
    /// Demand offered by users and served, Mbit (volume, simulated time).
    demand_mbit: f64,
    served_mbit: f64,
    /// `DRB.UEThpDl` times users, summed over cells and periods, and the users.
    thp_user_kbps: f64,
    users: f64,
    /// Energy by the power model, Wh.
    energy_wh: f64,
    /// Cell-periods dormant (energy saving), and the simulated seconds they add up to.
    dormant_cell_periods: u64,
    dormant_cell_s: f64,
}

/// The power a cell draws, W (EARTH macro model, G. Auer et al., "How much energy is needed
/// to run a wireless network?", IEEE Wireless Communications 2011): per transceiver chain
/// `P0 + Δp · P_max · load`, or `P_sleep` when dormant; two chains (2x2 MIMO) for an LTE
/// cell, four for an NR 100 MHz cell. A locked cell or one in outage draws nothing.
pub fn cell_power_w(nr: bool, load: f64, dormant: bool, off: bool) -> f64 {
    const P0: f64 = 130.0;
    const DELTA_P: f64 = 4.7;
    const P_MAX: f64 = 20.0;
    const P_SLEEP: f64 = 75.0;
    let chains = if nr { 4.0 } else { 2.0 };
    if off {
        0.0
    } else if dormant {
        chains * P_SLEEP
    } else {
        chains * (P0 + DELTA_P * P_MAX * load.clamp(0.0, 1.0))
    }
}

/// A fault planted while running.
#[derive(Debug, Clone)]
struct Planted {
    kind: FaultKind,
    cell: usize,
    /// Period in which it was planted.
    period: u64,
}

/// What `POST /fault` can plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The cell stops: no coverage, its session closes and it refuses new ones.
    Outage,
    /// The cell reports but serves nobody.
    Sleeping,
    /// 25 dB more loss within 250 m of a point 400 m out along the cell's azimuth.
    Hole,
    /// Four times the demand within 300 m of that point.
    Hotspot,
    /// The cell's reports are sent 0.8 periods late (a slow link or a skewed antenna clock):
    /// every one after its period closed at the node. Its session stays up.
    Late,
}

impl FaultKind {
    pub fn parse(s: &str) -> Option<FaultKind> {
        Some(match s {
            "outage" => FaultKind::Outage,
            "sleeping" => FaultKind::Sleeping,
            "hole" => FaultKind::Hole,
            "hotspot" => FaultKind::Hotspot,
            "late" => FaultKind::Late,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Outage => "outage",
            FaultKind::Sleeping => "sleeping",
            FaultKind::Hole => "hole",
            FaultKind::Hotspot => "hotspot",
            FaultKind::Late => "late",
        }
    }
}

/// A fault planted at a period (and cleared at another), from `sim run --plant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub kind: FaultKind,
    pub cell: String,
    pub at_period: u64,
    pub clear_period: Option<u64>,
}

impl std::str::FromStr for Scheduled {
    type Err = String;

    /// `KIND:CELL@PERIOD[-CLEAR_PERIOD]`, e.g. `outage:S00012-2@120-180`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!("{s:?}: expected KIND:CELL@PERIOD[-CLEAR_PERIOD], e.g. outage:S00012-2@120-180")
        };
        let (kind, rest) = s.split_once(':').ok_or_else(usage)?;
        let kind = FaultKind::parse(kind).ok_or_else(|| {
            format!("{s:?}: unknown fault {kind:?} (outage, sleeping, hole, hotspot or late)")
        })?;
        let (cell, when) = rest.rsplit_once('@').ok_or_else(usage)?;
        let (at, clear) = match when.split_once('-') {
            Some((a, c)) => (a, Some(c)),
            None => (when, None),
        };
        let at_period: u64 = at.parse().map_err(|_| usage())?;
        let clear_period = clear
            .map(|c| c.parse::<u64>().map_err(|_| usage()))
            .transpose()?;
        if clear_period.is_some_and(|c| c <= at_period) {
            return Err(format!(
                "{s:?}: the clearing period must come after the planting one"
            ));
        }
        if cell.is_empty() {
            return Err(usage());
        }
        Ok(Scheduled {
            kind,
            cell: cell.to_string(),
            at_period,
            clear_period,
        })
    }
}

/// How the simulator runs, besides the layout.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    pub period_ms: u32,
    pub seed: u64,
    /// Ignore the hysteresis of one push in this many (0: never).
    pub faulty_every: u64,
    /// Real milliseconds per simulated day (0: demand stays at the busy hour).
    pub day_ms: u64,
    /// Simulated hour of the first period.
    pub start_hour: f32,
}

/// Faults to plant while running, by period.
pub type Schedule = Vec<Scheduled>;

/// One period's pre-encoded report frames, one per cell.
#[derive(Default)]
pub struct PeriodFrames {
    pub number: u64,
    pub frames: Vec<Bytes>,
}

/// A period computed ahead of its end, with what its totals need.
struct Computed {
    end: u64,
    configs: Vec<CellConfig>,
    outcome: model::PeriodOutcome,
    frames: Vec<Bytes>,
    computed_ms: u64,
}

/// The simulator.
pub struct Sim {
    pub topo: Topology,
    by_source: Vec<Vec<usize>>,
    index: HashMap<String, usize>,
    /// Cell site (station) ids to their index in `topo.sites`.
    station_index: HashMap<String, usize>,
    /// Per cell site, its cells, ascending.
    cells_of_site: Vec<Vec<usize>>,
    state: Mutex<Mutable>,
    /// Taken after `state` when both are held.
    radio: Mutex<Radio>,
    /// The radio layer's bins and their side, m (fixed at the start).
    bins: usize,
    bin_m: f32,
    period_ms: u32,
    latest: watch::Sender<Arc<PeriodFrames>>,
    /// Ignore one push in this many (0: never), to exercise divergence handling.
    faulty_every: u64,
    pushes: AtomicU64,
    day_ms: u64,
    start_hour: f32,
    /// Per cell: in hard outage (its sessions close, new ones are refused).
    out: Vec<std::sync::atomic::AtomicBool>,
    /// Per cell: its reports go out late ([`FaultKind::Late`]).
    late: Vec<std::sync::atomic::AtomicBool>,
    /// Faults to plant (and clear) at given periods.
    schedule: Mutex<Schedule>,
    pub connections: AtomicU64,
    pub frames_sent: AtomicU64,
    pub bad_frames: AtomicU64,
    /// Open sessions that said hello, per kind.
    sessions: SessionCounts,
    /// Per cell, the ownership epochs seen and applied at: the antennas' fencing memory.
    fences: fencing::Fences,
    /// Writes each period as TS 32.435 files too (`--pm-dir`).
    pub pm: std::sync::OnceLock<super::pm::PmWriter>,
    /// The last periods as they went out, for `GET /clock`.
    clock: Mutex<std::collections::VecDeque<HandedOut>>,
}

/// How many periods `GET /clock` remembers.
const CLOCK_KEPT: usize = 512;

/// One period as it went out: whether the simulator kept its period (on a machine it shares
/// with the node under test it may not, and then every report leaves late).
#[derive(Clone, Copy, Debug)]
struct HandedOut {
    period: u64,
    end_ms: u64,
    /// How long after its stamped end the period was handed to the sessions.
    late_ms: u64,
    /// How long computing it took.
    computed_ms: u64,
}

/// Open sessions of each kind, as `GET /state` shows them under `"sessions"`.
#[derive(Default)]
struct SessionCounts {
    cell: AtomicU64,
    station: AtomicU64,
}

/// Counts one open session of a kind for as long as it lives.
struct OpenSession<'a>(&'a AtomicU64);

impl<'a> OpenSession<'a> {
    fn open(count: &'a AtomicU64) -> OpenSession<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        OpenSession(count)
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Sim {
    pub fn new(topo: Topology, options: SimOptions) -> Arc<Sim> {
        let SimOptions {
            period_ms,
            seed,
            faulty_every,
            day_ms,
            start_hour,
        } = options;
        let mut topo = topo;
        let mut grid = RadioGrid::build(&topo, seed);
        let latent = grid.add_latent_relations(&mut topo);
        tracing::debug!(latent, "neighbours the plan left out, for ANR to find");
        let by_source = topo.relations_by_source();
        let configs = (0..topo.cells.len())
            .map(|i| model::initial_config(&topo, i, &by_source))
            .collect();
        let relations = topo.relations.iter().map(RelationState::initial).collect();
        let index = topo
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        let fences = fencing::Fences::new(
            topo.cells.iter().map(|c| c.site).collect(),
            topo.sites.len(),
        );
        let station_index = topo
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let mut cells_of_site = vec![Vec::new(); topo.sites.len()];
        for (i, c) in topo.cells.iter().enumerate() {
            cells_of_site[c.site].push(i);
        }
        Arc::new(Sim {
            by_source,
            index,
            station_index,
            cells_of_site,
            out: (0..topo.cells.len())
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            late: (0..topo.cells.len())
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            schedule: Mutex::new(Vec::new()),
            bins: grid.bins,
            bin_m: grid.bin_m,
            radio: Mutex::new(Radio {
                grid,
                rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            }),
            state: Mutex::new(Mutable {
                planted: Vec::new(),
                configs,
                relations,
                period: 0,
                last: model::PeriodOutcome::default(),
                first_late: Vec::new(),
                handovers: Vec::new(),
                totals: Totals::default(),
            }),
            topo,
            period_ms,
            latest: watch::channel(Arc::new(PeriodFrames::default())).0,
            faulty_every,
            pushes: AtomicU64::new(0),
            day_ms,
            start_hour,
            connections: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            sessions: SessionCounts::default(),
            fences,
            pm: std::sync::OnceLock::new(),
            clock: Mutex::new(std::collections::VecDeque::with_capacity(CLOCK_KEPT)),
        })
    }

    /// Applies a pushed configuration; returns what is now in effect.
    fn apply(&self, cell: usize, wanted: &CellConfig) -> CellConfig {
        let n = self.pushes.fetch_add(1, Ordering::Relaxed) + 1;
        let faulty = self.faulty_every > 0 && n.is_multiple_of(self.faulty_every);
        let mut s = lock(&self.state);
        let cfg = &mut s.configs[cell];
        if wanted.pci <= crate::topology::max_pci(self.topo.cells[cell].arfcn) {
            cfg.pci = wanted.pci;
        }
        cfg.electrical_tilt = wanted.electrical_tilt.clamp(-900, 900);
        cfg.max_tx_power_dbm = wanted.max_tx_power_dbm.clamp(0, 60);
        if !faulty {
            cfg.hysteresis = wanted.hysteresis.min(30);
        }
        cfg.time_to_trigger_ms = wanted.time_to_trigger_ms;
        cfg.a3_offset = wanted.a3_offset;
        cfg.admin_state = wanted.admin_state;
        cfg.energy_saving = wanted.energy_saving;
        let mut in_effect = Vec::new();
        for &r in &self.by_source[cell] {
            let target = &self.topo.cells[self.topo.relations[r].target].id;
            match wanted.relations.iter().find(|w| &w.target == target) {
                Some(w) => {
                    s.relations[r] = RelationState {
                        cio_db: w.cio_db,
                        ho_allowed: w.ho_allowed,
                        exists: true,
                    };
                    in_effect.push(w.clone());
                }
                None => s.relations[r].exists = false,
            }
        }
        // A relation to a cell the radio model has no border with (an operator's, or one ANR
        // resolved to another cell than the users saw) is kept in the neighbour list as pushed;
        // it carries no handovers, so ANR pruning removes it in time.
        for w in &wanted.relations {
            let valid = self.index.contains_key(&w.target) && w.target != self.topo.cells[cell].id;
            if valid && !in_effect.iter().any(|e| e.target == w.target) {
                in_effect.push(w.clone());
            }
        }
        s.configs[cell].relations = in_effect;
        s.configs[cell].clone()
    }

    /// Runs one period and publishes its report frames.
    /// Sets the faults to plant by period; refuses a cell the network does not have.
    pub fn set_schedule(&self, schedule: Schedule) -> Result<(), String> {
        if let Some(bad) = schedule.iter().find(|f| !self.index.contains_key(&f.cell)) {
            return Err(format!("--plant: no cell {}", bad.cell));
        }
        *lock(&self.schedule) = schedule;
        Ok(())
    }

    /// Plants and clears the scheduled faults due at `period`.
    fn run_schedule(&self, period: u64) {
        let due: Vec<(String, Option<FaultKind>)> = lock(&self.schedule)
            .iter()
            .flat_map(|f| {
                let plant = (f.at_period == period).then(|| (f.cell.clone(), Some(f.kind)));
                let clear = (f.clear_period == Some(period)).then(|| (f.cell.clone(), None));
                plant.into_iter().chain(clear)
            })
            .collect();
        for (cell, kind) in due {
            if let Err(e) = self.plant(&cell, kind) {
                tracing::warn!(%cell, error = %e, "scheduled fault not planted");
            }
        }
    }

    /// Computes the next period and hands it to the sessions at once (tests; the clock
    /// computes each period while it runs, [`clock`]).
    #[cfg(test)]
    fn tick(&self) {
        let end = now_ms();
        let period = self.compute(end);
        self.publish(period);
    }

    /// Computes the period that ends at `end` from the configuration and faults as the
    /// computation begins; pushes arriving meanwhile are applied (and acknowledged) at once
    /// and count from the next period. Its reports go out with [`Sim::publish`].
    fn compute(&self, end: u64) -> Computed {
        let started = now_ms();
        let period = lock(&self.state).period;
        self.run_schedule(period);
        let (configs, relations, profile) = {
            let s = lock(&self.state);
            (
                s.configs.clone(),
                s.relations.clone(),
                radio_profile(self.hour(s.period)),
            )
        };
        let outcome = {
            let mut r = lock(&self.radio);
            let Radio { grid, rng } = &mut *r;
            model::run_period(
                &self.topo,
                &self.by_source,
                grid,
                &configs,
                &relations,
                model::PeriodClock {
                    end_ms: end,
                    period_ms: self.period_ms,
                    profile,
                },
                rng,
            )
        };
        let frames: Vec<Bytes> = outcome
            .reports
            .iter()
            .map(|r| encode(&Frame::Report(r.clone())))
            .collect();
        Computed {
            end,
            configs,
            outcome,
            frames,
            computed_ms: now_ms().saturating_sub(started),
        }
    }

    /// Ends a computed period: its reports go to the sessions (and its PM file is written),
    /// and the totals count it.
    fn publish(&self, period: Computed) {
        let Computed {
            end,
            configs,
            outcome,
            frames,
            computed_ms,
        } = period;
        if let Some(pm) = self.pm.get() {
            pm.period(end, self.period_ms, &outcome.reports);
        }
        let number = {
            let mut s = lock(&self.state);
            s.period += 1;
            // Volumes and energy count in simulated time (a compressed day is still a day).
            let period_s = self.simulated_period_s();
            let mut t = std::mem::take(&mut s.totals);
            t.periods += 1;
            t.demand_mbit += outcome.radio.total_demand_mbps * period_s;
            t.served_mbit += outcome.radio.total_served_mbps * period_s;
            for (c, r) in outcome.reports.iter().enumerate() {
                let cfg = &configs[c];
                let dormant = cfg.energy_saving == 1;
                let off = cfg.admin_state != 0 || self.is_out(c);
                let nr = crate::topology::is_nr(self.topo.cells[c].arfcn);
                t.energy_wh += cell_power_w(nr, outcome.load[c], dormant, off) * period_s / 3600.0;
                if dormant {
                    t.dormant_cell_periods += 1;
                    t.dormant_cell_s += period_s;
                }
                let users = r.cell[cc::CONN_MEAN] as f64;
                t.thp_user_kbps += r.cell[cc::THP_DL] as f64 * users;
                t.users += users;
            }
            s.totals = t;
            s.handovers.resize(outcome.reports.len(), [0; 3]);
            for (sum, r) in s.handovers.iter_mut().zip(&outcome.reports) {
                for rel in &r.relations {
                    sum[0] += rel.values[rc::ATT];
                    sum[1] += rel.values[rc::TOO_EARLY];
                    sum[2] += rel.values[rc::TOO_LATE];
                }
            }
            if s.first_late.is_empty() {
                s.first_late = self.late_ratios(&outcome);
            }
            s.last = outcome;
            s.period
        };
        self.latest
            .send_replace(Arc::new(PeriodFrames { number, frames }));
        let late_ms = now_ms().saturating_sub(end);
        {
            let mut clock = lock(&self.clock);
            if clock.len() == CLOCK_KEPT {
                clock.pop_front();
            }
            clock.push_back(HandedOut {
                period: number,
                end_ms: end,
                late_ms,
                computed_ms,
            });
        }
        tracing::debug!(
            period = number,
            end_ms = end,
            computed_ms,
            late_ms,
            "period ended and handed to the sessions"
        );
    }

    /// `GET /clock`: the period and the last periods as they went out, oldest first.
    fn clock_json(&self) -> Value {
        json!({
            "period_ms": self.period_ms,
            "recent": lock(&self.clock).iter().map(|h| json!({
                "period": h.period, "end_ms": h.end_ms, "late_ms": h.late_ms,
                "computed_ms": h.computed_ms,
            })).collect::<Vec<_>>(),
        })
    }

    /// The simulated hour of day in period `period` (busy hour when the day does not run).
    pub fn hour(&self, period: u64) -> Option<f32> {
        (self.day_ms > 0).then(|| {
            let day = (period * u64::from(self.period_ms)) as f64 / self.day_ms as f64;
            (f64::from(self.start_hour) + 24.0 * day).rem_euclid(24.0) as f32
        })
    }

    /// Simulated seconds one period stands for.
    fn simulated_period_s(&self) -> f64 {
        let real = f64::from(self.period_ms) / 1000.0;
        if self.day_ms > 0 {
            real * 86_400_000.0 / self.day_ms as f64
        } else {
            real
        }
    }

    /// Whether cell `idx` is in hard outage.
    fn is_out(&self, idx: usize) -> bool {
        self.out[idx].load(Ordering::Relaxed)
    }

    /// Plants a fault at a cell (`clear`: removes every fault planted at it).
    pub fn plant(&self, cell: &str, kind: Option<FaultKind>) -> Result<Value, String> {
        let Some(&c) = self.index.get(cell) else {
            return Err(format!("no cell {cell}"));
        };
        let mut s = lock(&self.state);
        let mut radio = lock(&self.radio);
        let period = s.period;
        let (x, y) = self.fault_point(c);
        let bins = match kind {
            None => {
                let was: Vec<FaultKind> = s
                    .planted
                    .iter()
                    .filter(|p| p.cell == c)
                    .map(|p| p.kind)
                    .collect();
                for k in &was {
                    match k {
                        FaultKind::Hole => {
                            radio.grid.set_hole(x, y, 250.0, 0.0);
                        }
                        FaultKind::Hotspot => {
                            radio.grid.set_hotspot(x, y, 300.0, 1.0);
                        }
                        FaultKind::Outage | FaultKind::Sleeping => radio.grid.faults[c] = None,
                        FaultKind::Late => {}
                    }
                }
                self.out[c].store(false, Ordering::Relaxed);
                self.late[c].store(false, Ordering::Relaxed);
                s.planted.retain(|p| p.cell != c);
                return Ok(
                    json!({"cell": cell, "cleared": was.iter().map(|k| k.name()).collect::<Vec<_>>(), "period": period}),
                );
            }
            Some(FaultKind::Outage) => {
                radio.grid.faults[c] = Some(CellFault::Outage);
                self.out[c].store(true, Ordering::Relaxed);
                0
            }
            Some(FaultKind::Sleeping) => {
                radio.grid.faults[c] = Some(CellFault::Sleeping);
                0
            }
            Some(FaultKind::Hole) => radio.grid.set_hole(x, y, 250.0, 25.0),
            Some(FaultKind::Hotspot) => radio.grid.set_hotspot(x, y, 300.0, 4.0),
            Some(FaultKind::Late) => {
                self.late[c].store(true, Ordering::Relaxed);
                0
            }
        };
        let kind = kind.unwrap_or(FaultKind::Outage);
        s.planted.retain(|p| !(p.cell == c && p.kind == kind));
        s.planted.push(Planted {
            kind,
            cell: c,
            period,
        });
        tracing::info!(cell, fault = kind.name(), period, bins, "fault planted");
        Ok(json!({"cell": cell, "fault": kind.name(), "period": period, "bins": bins}))
    }

    /// Where a hole or hotspot planted at cell `c` is centred: 0.4 inter-site distances out
    /// along its azimuth.
    fn fault_point(&self, c: usize) -> (f32, f32) {
        let site = &self.topo.sites[self.topo.cells[c].site];
        let az = f64::from(self.topo.cells[c].azimuth).to_radians();
        (
            (site.x + 0.4 * ISD_M * az.sin()) as f32,
            (site.y + 0.4 * ISD_M * az.cos()) as f32,
        )
    }

    /// Too-late ratio of each planted late cell.
    fn late_ratios(&self, outcome: &model::PeriodOutcome) -> Vec<f64> {
        self.topo
            .problems
            .late_cells
            .iter()
            .map(|&c| {
                let (att, late) = self.by_source[c]
                    .iter()
                    .map(|&r| outcome.relation_late[r])
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                if att == 0 {
                    0.0
                } else {
                    late as f64 / att as f64
                }
            })
            .collect()
    }

    /// The state of the network and of every planted problem, as JSON.
    pub fn status(&self) -> Value {
        // Before the state lock: a configuration takes its cell's fence, then the state lock.
        let fencing = self.fences.status();
        let s = lock(&self.state);
        // RRU.PrbUsedDl is a count: the load is its share of RRU.PrbAvailDl.
        let prb = |c: usize| {
            s.last.reports.get(c).map_or(0.0, |r| {
                (r.cell[cc::PRB_USED_DL] * 100) as f64 / r.cell[cc::PRB_AVAIL_DL].max(1) as f64
            })
        };
        let same = |x: usize, y: usize| {
            s.configs[x].pci == s.configs[y].pci
                && self.topo.cells[x].arfcn == self.topo.cells[y].arfcn
        };
        let mut collisions = Vec::new();
        let mut confusions = Vec::new();
        for (x, rels) in self.by_source.iter().enumerate() {
            let targets: Vec<usize> = rels
                .iter()
                .filter(|r| s.relations[**r].exists)
                .map(|r| self.topo.relations[*r].target)
                .collect();
            for (k, &a) in targets.iter().enumerate() {
                if same(x, a) {
                    collisions.push(json!([self.topo.cells[x].id, self.topo.cells[a].id]));
                }
                for &b in &targets[k + 1..] {
                    if same(a, b) {
                        confusions.push(json!([
                            self.topo.cells[x].id,
                            self.topo.cells[a].id,
                            self.topo.cells[b].id
                        ]));
                    }
                }
            }
        }
        let overloaded: Vec<Value> = self
            .topo
            .problems
            .overloaded
            .iter()
            .map(|&c| {
                let neighbours: Vec<usize> = self.by_source[c].iter().filter(|r| !self.topo.relations[**r].latent).map(|r| self.topo.relations[*r].target).collect();
                let max_nb = neighbours.iter().map(|n| prb(*n)).fold(0.0, f64::max);
                json!({"cell": self.topo.cells[c].id, "prb_dl_pct": prb(c), "max_neighbour_prb_dl_pct": max_nb})
            })
            .collect();
        let now = self.late_ratios(&s.last);
        let late: Vec<Value> = self
            .topo
            .problems
            .late_cells
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                json!({"cell": self.topo.cells[c].id, "too_late_ratio": now.get(k), "initial_too_late_ratio": s.first_late.get(k),
                       "hysteresis": s.configs[c].hysteresis, "time_to_trigger_ms": s.configs[c].time_to_trigger_ms})
            })
            .collect();
        let dead: Vec<Value> = self
            .topo
            .problems
            .dead_relations
            .iter()
            .chain(&self.topo.problems.failing_relations)
            .map(|&r| {
                let rel = &self.topo.relations[r];
                json!({"relation": format!("{}/{}", self.topo.cells[rel.source].id, self.topo.cells[rel.target].id), "exists": s.relations[r].exists})
            })
            .collect();
        let configs: serde_json::Map<String, Value> = self
            .topo
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cfg = &s.configs[i];
                let rels: serde_json::Map<String, Value> =
                    cfg.relations.iter().map(|r| (r.target.clone(), json!({"cio_db": r.cio_db, "ho_allowed": r.ho_allowed}))).collect();
                (c.id.clone(), json!({"pci": cfg.pci, "electrical_tilt": cfg.electrical_tilt, "max_tx_power_dbm": cfg.max_tx_power_dbm,
                    "hysteresis": cfg.hysteresis, "time_to_trigger_ms": cfg.time_to_trigger_ms, "a3_offset": cfg.a3_offset, "relations": rels,
                    "newest_epoch": self.fences.newest_epoch(i)}))
            })
            .collect();
        let handovers: serde_json::Map<String, Value> = self
            .topo
            .cells
            .iter()
            .zip(&s.handovers)
            .map(|(c, h)| {
                (
                    c.id.clone(),
                    json!({"attempts": h[0], "too_early": h[1], "too_late": h[2]}),
                )
            })
            .collect();
        let r = &s.last.radio;
        let profile = radio_profile(self.hour(s.period.saturating_sub(1)));
        let faults: Vec<Value> = s
            .planted
            .iter()
            .map(|p| {
                let c = p.cell;
                let area = |v: &Vec<f64>| v.get(c).copied().unwrap_or(0.0);
                let (d, served) = (area(&r.home_demand_mbps), area(&r.home_served_mbps));
                let neighbours: Vec<usize> = self.by_source[c].iter().filter(|r| !self.topo.relations[**r].latent).map(|r| self.topo.relations[*r].target).collect();
                let max_nb = neighbours.iter().map(|n| prb(*n)).fold(0.0, f64::max);
                json!({"cell": self.topo.cells[c].id, "fault": p.kind.name(), "since_period": p.period,
                       "area_demand_mbps": d, "area_served_mbps": served,
                       "area_served_pct": if d > 0.0 { served * 100.0 / d } else { 100.0 },
                       "max_neighbour_prb_dl_pct": max_nb})
            })
            .collect();
        let faults: Vec<Value> = faults
            .into_iter()
            .zip(&s.planted)
            .map(|(v, p)| self.with_hole_status(v, &s, p, profile))
            .collect();
        // The NR capacity cells and their coverage partner (sector 1 of the same site).
        let capacity: Vec<Value> = self
            .topo
            .cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.sector == 3)
            .filter_map(|(c, cell)| {
                let partner = self.topo.cells.iter().position(|p| p.site == cell.site && p.sector == 0)?;
                Some(json!({"cell": cell.id, "dormant": s.configs[c].energy_saving == 1, "prb_dl_pct": prb(c),
                            "partner": self.topo.cells[partner].id, "partner_prb_dl_pct": prb(partner)}))
            })
            .collect();
        let radio = json!({
            "bins": self.bins,
            "bin_m": self.bin_m,
            "hour": self.hour(s.period.saturating_sub(1)),
            "demand_mbps": r.total_demand_mbps,
            "served_mbps": r.total_served_mbps,
            "served_pct": if r.total_demand_mbps > 0.0 { r.total_served_mbps * 100.0 / r.total_demand_mbps } else { 100.0 },
            "uncovered_bins": r.uncovered_bins,
        });
        json!({
            "period": s.period,
            "cells": self.topo.cells.len(),
            "radio": radio,
            "faults": faults,
            "overshooters": self.overshooter_status(&s),
            "capacity_cells": capacity,
            "connections": self.connections.load(Ordering::Relaxed),
            "pushes": self.pushes.load(Ordering::Relaxed),
            "bad_frames": self.bad_frames.load(Ordering::Relaxed),
            "sessions": {
                "cell": self.sessions.cell.load(Ordering::Relaxed),
                "station": self.sessions.station.load(Ordering::Relaxed),
            },
            "fencing": fencing,
            "pci_collisions": collisions,
            "pci_confusions": confusions,
            "overloaded": overloaded,
            "late": late,
            "pruned_candidates": dead,
            "configs": configs,
            "handovers": handovers,
            "totals": {
                "periods": s.totals.periods,
                "demand_mbit": s.totals.demand_mbit,
                "served_mbit": s.totals.served_mbit,
                "served_pct": if s.totals.demand_mbit > 0.0 { s.totals.served_mbit * 100.0 / s.totals.demand_mbit } else { 100.0 },
                "thp_dl_kbps_per_user": if s.totals.users > 0.0 { s.totals.thp_user_kbps / s.totals.users } else { 0.0 },
                "energy_kwh": s.totals.energy_wh / 1000.0,
                "dormant_cell_periods": s.totals.dormant_cell_periods,
                "dormant_cell_hours": s.totals.dormant_cell_s / 3600.0,
            },
        })
    }
}

/// The share of busy-hour demand at `hour` (no hour: the busy hour).
fn radio_profile(hour: Option<f32>) -> f32 {
    hour.map_or(1.0, super::radio::daily_profile)
}

/// Drives the period clock until the process ends. An antenna counts through its period and
/// reports as it ends; the simulator computes a period in one go, a second of a core at
/// 100,000 cells. So each period is computed shortly before it ends (as late as the last
/// computation's time allows, with a margin; at once when that is a period or more), from the
/// configuration and faults as the computation begins, and its reports go out when it ends:
/// the computing time is not added to what the node sees. Pushes and faults arriving during
/// the computation count from the next period.
pub async fn clock(sim: Arc<Sim>) {
    let period = Duration::from_millis(u64::from(sim.period_ms));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first period ends as the simulator starts (its antennas counted before anyone
    // watched), so that its state shows a period at once.
    interval.tick().await;
    let s = sim.clone();
    let first = tokio::task::spawn_blocking(move || {
        let p = s.compute(now_ms());
        let took = Duration::from_millis(p.computed_ms);
        s.publish(p);
        took
    })
    .await;
    let mut running: Option<Computed> = None;
    // How long before its end a period's computation begins.
    let mut lead = first.map_or(period, compute_lead).min(period);
    loop {
        let began = interval.tick().await;
        // The period that begins now ends a period from now (stamped before the last one is
        // handed out, which takes time of its own).
        let ends = now_ms() + u64::from(sim.period_ms);
        if let Some(p) = running.take() {
            let s = sim.clone();
            if tokio::task::spawn_blocking(move || s.publish(p))
                .await
                .is_err()
            {
                tracing::error!("a simulation period failed to go out");
            }
        }
        tokio::time::sleep_until(began + period.saturating_sub(lead)).await;
        let s = sim.clone();
        match tokio::task::spawn_blocking(move || s.compute(ends)).await {
            Ok(p) => {
                lead = compute_lead(Duration::from_millis(p.computed_ms)).min(period);
                running = Some(p);
            }
            Err(_) => tracing::error!("a simulation period failed"),
        }
    }
}

/// How long before a period's end to begin computing it, after the last took `took`: a
/// quarter more, and 20 ms, for the variation between periods.
fn compute_lead(took: Duration) -> Duration {
    took + took / 4 + Duration::from_millis(20)
}

/// Accepts antenna connections on one listener.
pub async fn accept(sim: Arc<Sim>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let sim = sim.clone();
                tokio::spawn(async move {
                    sim.connections.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = session::serve(&sim, stream).await {
                        tracing::debug!(%peer, error = %e, "antenna connection ended");
                    }
                    sim.connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves `GET /state` (the status JSON), `GET /clock` (the last periods' hand-out times) and
/// `POST /fault` (plant or clear a fault:
/// `{"cell": "S00001-1", "fault": "outage" | "sleeping" | "hole" | "hotspot" | "clear"}`).
pub async fn status_http(sim: Arc<Sim>, listener: TcpListener) {
    let state = sim.clone();
    let app = axum::Router::new()
        .route(
            "/state",
            axum::routing::get(move || {
                let sim = state.clone();
                async move {
                    axum::Json(
                        tokio::task::spawn_blocking(move || sim.status())
                            .await
                            .unwrap_or(Value::Null),
                    )
                }
            }),
        )
        .route("/clock", {
            let sim = sim.clone();
            axum::routing::get(move || {
                let sim = sim.clone();
                async move { axum::Json(sim.clock_json()) }
            })
        })
        .route(
            "/fault",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sim = sim.clone();
                async move { fault_request(&sim, &body) }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "status endpoint stopped");
    }
}

fn fault_request(sim: &Sim, body: &[u8]) -> (axum::http::StatusCode, axum::Json<Value>) {
    use axum::http::StatusCode;
    let bad = |m: String| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": m})));
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("body is not JSON: {e}")),
    };
    let (Some(cell), Some(fault)) = (v["cell"].as_str(), v["fault"].as_str()) else {
        return bad(
            "expected {\"cell\": id, \"fault\": outage|sleeping|hole|hotspot|clear}".into(),
        );
    };
    let kind = match fault {
        "clear" => None,
        other => match FaultKind::parse(other) {
            Some(k) => Some(k),
            None => {
                return bad(format!(
                    "unknown fault {other:?}: outage, sleeping, hole, hotspot or clear"
                ));
            }
        },
    };
    match sim.plant(cell, kind) {
        Ok(v) => (StatusCode::OK, axum::Json(v)),
        Err(e) => (StatusCode::NOT_FOUND, axum::Json(json!({"error": e}))),
    }
}

/// Addresses the simulator listens on.
pub fn addresses_json(antennas: &[SocketAddr], status: Option<SocketAddr>) -> Value {
    json!({"antennas": antennas.iter().map(ToString::to_string).collect::<Vec<_>>(), "status": status.map(|s| s.to_string()), "pid": std::process::id()})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulator of `cells` cells on one site, 1 s periods, no day cycle.
    fn small_sim(cells: usize) -> Arc<Sim> {
        Sim::new(
            Topology::build(cells, 1, &["site-a".to_string()]),
            SimOptions {
                period_ms: 1000,
                seed: 1,
                faulty_every: 0,
                day_ms: 0,
                start_hour: 12.0,
            },
        )
    }

    #[test]
    fn a_push_is_applied_and_answered_while_a_period_is_computed() {
        let sim = small_sim(30);
        let before = lock(&sim.state).configs[0].electrical_tilt;
        // A period being computed holds the radio layer (a second or more at 100,000 cells).
        let computing = lock(&sim.radio);
        let (tx, rx) = std::sync::mpsc::channel();
        let s = sim.clone();
        std::thread::spawn(move || {
            let mut wanted = lock(&s.state).configs[0].clone();
            wanted.electrical_tilt = before + 10;
            let _ = tx.send(s.apply(0, &wanted));
        });
        let applied = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the push waited for the period's computation");
        assert_eq!(applied.electrical_tilt, before + 10);
        drop(computing);
        sim.tick();
        assert_eq!(lock(&sim.state).period, 1);
    }

    #[test]
    fn the_clock_keeps_the_last_periods_as_they_went_out() {
        let sim = small_sim(3);
        for _ in 0..CLOCK_KEPT + 3 {
            sim.tick();
        }
        let clock = sim.clock_json();
        assert_eq!(clock["period_ms"], 1000);
        let recent = clock["recent"].as_array().unwrap();
        assert_eq!(recent.len(), CLOCK_KEPT);
        let periods: Vec<u64> = recent
            .iter()
            .map(|p| p["period"].as_u64().unwrap())
            .collect();
        assert_eq!(periods.first(), Some(&4));
        assert_eq!(periods.last(), Some(&(CLOCK_KEPT as u64 + 3)));
        assert!(
            recent
                .iter()
                .all(|p| p["late_ms"].is_u64() && p["end_ms"].is_u64())
        );
    }

    #[test]
    fn planted_faults_parse_with_clear_errors() {
        let f: Scheduled = "outage:S00012-2@120-180".parse().unwrap();
        assert_eq!(
            f,
            Scheduled {
                kind: FaultKind::Outage,
                cell: "S00012-2".into(),
                at_period: 120,
                clear_period: Some(180),
            }
        );
        let f: Scheduled = "sleeping:S00001-1@5".parse().unwrap();
        assert_eq!((f.kind, f.clear_period), (FaultKind::Sleeping, None));
        for bad in [
            "outage",
            "fire:S1@2",
            "outage:S1@x",
            "outage:S1@9-3",
            "outage:@3",
            "",
        ] {
            let e = bad.parse::<Scheduled>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
