//! The radio layer: where users are, which cell serves them and at what SINR, and what that
//! costs in PRBs.
//!
//! The plane is cut into square bins ([`RadioGrid::bin_m`] metres). Each bin holds the users of
//! that area in aggregate (a demand in Mbit/s), never single users, so 10,000 cells cost about
//! a million bins and a period is a pass over them.
//!
//! - **Antennas** (3GPP TR 36.814 table A.2.1.1-2, TR 38.901 table 7.3-1): horizontal pattern
//!   `A_H = −min(12 (φ/65°)², 25)`, vertical `A_V = −min(12 ((θ − tilt)/10°)², 20)`,
//!   combined `−min(−(A_H + A_V), 25)`, 15 dBi peak gain, 25 m masts, users at 1.5 m.
//! - **Path loss**: TR 38.901 UMa NLOS (the larger of the LOS and NLOS formulas), plus 10 dB
//!   for the indoor share of users and a log-normal shadowing of σ = 6 dB, drawn per (bin,
//!   site) so that the sectors of a mast share it.
//! - **Selection**: a bin's users camp on the strongest cell of each carrier (RSRP), then move
//!   to a neighbour `t` of that cell when `RSRP_t + CIO(s→t)` beats the source: the offset the
//!   mobility load balancing sets shifts the border. Half the demand of bins with NR coverage
//!   (RSRP ≥ −110 dBm) is carried on NR.
//! - **SINR and load**: interference from every other co-channel candidate, weighted by its
//!   last load (a cell with no traffic still sends reference signals: at least 5 %);
//!   spectral efficiency `0.6 log2(1 + SINR)`, capped at 4.4 (LTE) or 5.5 (NR) bit/s/Hz; a bin
//!   under −124 dBm or −6 dB SINR is out of coverage and served by nobody.
//! - **Demand**: per bin, a smooth random field with hotspots, scaled once at start so that
//!   every cell's busy-hour load is what the topology planted (the planted overloads stay
//!   overloads), times a daily profile when the simulated day runs.

use std::f32::consts::PI;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sonraft_protocol::CellConfig;

use crate::topology::{Topology, is_nr};

pub mod coverage;

/// Antenna height and user height, metres.
const H_BS: f32 = 25.0;
const H_UT: f32 = 1.5;
/// Peak antenna gain, dBi.
const G_MAX: f32 = 15.0;
/// Building penetration by bin (TR 38.901 7.4.3): a fifth of the places outdoors, half behind
/// low-loss walls, the rest deep indoors behind high-loss (coated glass, concrete) walls.
fn indoor_db(seed: u64, bin: u64) -> f32 {
    match mix(seed ^ 0x0001_d007, bin, 3) % 10 {
        0 | 1 => 0.0,
        2..=6 => 12.0,
        _ => 22.0,
    }
}
/// Shadowing standard deviation (TR 38.901 UMa NLOS).
const SHADOW_SIGMA_DB: f32 = 6.0;
/// Thermal noise per resource element: −174 dBm/Hz + 10 log10(15 kHz) + 9 dB noise figure.
const NOISE_RE_DBM_LTE: f32 = -174.0 + 41.76 + 9.0;
/// NR at 30 kHz subcarrier spacing.
const NOISE_RE_DBM_NR: f32 = -174.0 + 44.77 + 9.0;
/// Below this RSRP or SINR a user is out of coverage.
pub const MIN_RSRP_DBM: f32 = -124.0;
pub const MIN_SINR_DB: f32 = -6.0;
/// NR coverage that takes half a bin's demand.
const NR_MIN_RSRP_DBM: f32 = -110.0;
const NR_SHARE: f32 = 0.5;
/// Candidates kept per bin and carrier.
const K: usize = 8;
/// Sites farther than this many inter-site distances from a bin are not candidates.
const REACH_ISD: f32 = 2.6;
/// Cap on the number of bins: large networks get coarser bins.
const MAX_BINS: usize = 1_500_000;
/// Users per Mbit/s of demand (connected users, for `RRC.ConnMean`).
pub const USERS_PER_MBPS: f32 = 8.0;
/// A handover border: the second cell within this many dB of the serving one.
const BORDER_DB: f32 = 3.0;

/// Resource elements of a carrier (12 subcarriers per PRB).
fn resource_elements(nr: bool) -> f32 {
    if nr {
        crate::model::NR_PRBS as f32 * 12.0
    } else {
        crate::model::LTE_PRBS as f32 * 12.0
    }
}

/// Bandwidth of one PRB in Hz.
fn prb_hz(nr: bool) -> f32 {
    if nr { 360e3 } else { 180e3 }
}

/// Carrier frequency in GHz.
fn carrier_ghz(nr: bool) -> f32 {
    if nr { 3.55 } else { 1.815 }
}

/// TR 38.901 UMa path loss (NLOS: the larger of LOS and NLOS'), dB.
pub fn path_loss_uma_db(d2d_m: f32, fc_ghz: f32) -> f32 {
    let d2d = d2d_m.max(10.0);
    let d3d = (d2d * d2d + (H_BS - H_UT).powi(2)).sqrt();
    let d_bp = 4.0 * (H_BS - 1.0) * (H_UT - 1.0) * fc_ghz * 1e9 / 3e8;
    let los = if d2d <= d_bp {
        28.0 + 22.0 * d3d.log10() + 20.0 * fc_ghz.log10()
    } else {
        28.0 + 40.0 * d3d.log10() + 20.0 * fc_ghz.log10()
            - 9.0 * (d_bp * d_bp + (H_BS - H_UT).powi(2)).log10()
    };
    let nlos = 13.54 + 39.08 * d3d.log10() + 20.0 * fc_ghz.log10() - 0.6 * (H_UT - 1.5);
    los.max(nlos)
}

/// How much less a mast `h_m` high loses than the 25 m one TR 38.901 UMa assumes, at `d2d_m`
/// (dB, negative: a gain): the base-station-height terms of COST 231-Hata,
/// `−13.82 log10(h/25) − 6.55 log10(h/25) log10(d/1 km)`, the distance taken from 100 m.
pub fn height_gain_db(h_m: f32, d2d_m: f32) -> f32 {
    let ratio = (h_m.max(1.0) / H_BS).log10();
    -13.82 * ratio - 6.55 * ratio * (d2d_m.max(100.0) / 1000.0).log10()
}

/// Horizontal antenna attenuation for an angle off boresight (degrees), dB (≤ 0).
pub fn horizontal_db(off_deg: f32) -> f32 {
    -(12.0 * (off_deg / 65.0).powi(2)).min(25.0)
}

/// Vertical antenna attenuation for a depression angle `theta` and electrical downtilt (degrees).
pub fn vertical_db(theta_deg: f32, tilt_deg: f32) -> f32 {
    -(12.0 * ((theta_deg - tilt_deg) / 10.0).powi(2)).min(20.0)
}

/// The antenna gain towards a bin, dBi.
fn gain_db(ah: f32, theta: f32, tilt: f32) -> f32 {
    G_MAX - (-(ah + vertical_db(theta, tilt))).min(25.0)
}

fn db_to_lin(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

/// The daily demand profile: the share of busy-hour demand at `hour` (0..24), from a night
/// trough of 12 % at 04:00 to the busy hour at 20:00.
pub fn daily_profile(hour: f32) -> f32 {
    // Piecewise linear through hourly anchor points.
    const AT: [f32; 25] = [
        0.45, 0.32, 0.22, 0.15, 0.12, 0.13, 0.2, 0.35, 0.55, 0.65, 0.7, 0.72, 0.75, 0.74, 0.72,
        0.72, 0.75, 0.8, 0.87, 0.95, 1.0, 0.97, 0.85, 0.65, 0.45,
    ];
    let h = hour.rem_euclid(24.0);
    let i = h.floor() as usize;
    let f = h - i as f32;
    AT[i] * (1.0 - f) + AT[i + 1] * f
}

/// One candidate cell of a bin: what does not change with configuration.
#[derive(Debug, Clone, Copy)]
struct Cand {
    cell: u32,
    /// Path loss, shadowing and indoor loss, dB.
    loss_db: f32,
    /// Horizontal pattern attenuation, dB.
    ah_db: f32,
    /// Depression angle from the mast, degrees.
    theta_deg: f32,
}

const NO_CAND: Cand = Cand {
    cell: u32::MAX,
    loss_db: 0.0,
    ah_db: 0.0,
    theta_deg: 0.0,
};

/// Carriers a bin is served on at most (the simulated network has two).
const MAX_CARRIERS: usize = 4;

/// The cell chosen for a bin on one carrier.
#[derive(Debug, Clone, Copy)]
struct Choice {
    cell: u32,
    /// Linear SINR.
    sinr: f32,
    /// The relations at whose handover border the bin lies: a range of the bin's border list.
    borders: (u16, u16),
    /// The cells as strong as a neighbour but without a relation from the serving cell: a
    /// range of the bin's stranger list.
    strangers: (u16, u16),
    covered: bool,
}

impl Choice {
    const NONE: Choice = Choice {
        cell: u32::MAX,
        sinr: 0.0,
        borders: (0, 0),
        strangers: (0, 0),
        covered: false,
    };
}

/// Faults of a cell the simulator can plant while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellFault {
    /// The cell is off and its antenna session closed.
    Outage,
    /// The cell radiates and reports, but serves nobody.
    Sleeping,
}

/// The radio state of the network.
pub struct RadioGrid {
    pub bin_m: f32,
    pub bins: usize,
    /// Bin centres, metres.
    pub xy: Vec<(f32, f32)>,
    /// Candidates, `K` per carrier per bin, flattened: `[bin][carrier][k]`, strongest first
    /// at the default tilt.
    cands: Vec<Cand>,
    /// Carriers present (EARFCN / NR-ARFCN) and whether each is NR.
    carriers: Vec<(u32, bool)>,
    /// Busy-hour demand of each bin, Mbit/s.
    pub demand: Vec<f32>,
    /// Share of each bin's demand carried on NR where both NR and LTE cover it.
    nr_share: Vec<f32>,
    /// Extra loss (a planted coverage hole) per bin, dB.
    pub extra_loss_db: Vec<f32>,
    /// Demand multiplier (a planted hotspot) per bin.
    pub demand_mult: Vec<f32>,
    /// Per bin and carrier, the cell that served it at the start and the share of the bin's
    /// demand it carried: a cell's "area" (what an outage takes away) is these users.
    home: Vec<(u32, f32)>,
    /// Last period's load of each cell (interference activity).
    activity: Vec<f32>,
    pub faults: Vec<Option<CellFault>>,
    /// Scratch: per bin and carrier, the serving cell and the demand it was offered.
    served_by: Vec<(u32, f32)>,
    /// Users at each relation's handover border at the start, busy hour (handover attempts
    /// scale with the users at the border now).
    pub border0: Vec<f32>,
    /// Scratch: per bin, the strongest cell of a bin no carrier covers (`u32::MAX`: covered,
    /// or no cell at all): whose radio link its users lose.
    lost_to: Vec<u32>,
    /// Handover attempts a period per user at a relation's border, at the start (the planted
    /// relations' mean): how many measurement reports a user at a border sends.
    pub attempts_per_border_user: f32,
    /// Users at borders without a relation at the start, busy hour (`RadioOutcome::strangers`).
    strangers0: Vec<(u32, u32, f32)>,
    /// What [`RadioGrid::run`] keeps from one period to the next (see [`RsrpCache`]).
    cache: RsrpCache,
}

/// Every candidate's RSRP (dB and linear), `[bin][carrier][k]` like `RadioGrid::cands`, kept
/// between periods: a candidate's RSRP changes only with its cell's power, tilt or on/off state
/// and with its bin's extra loss, so a period recomputes only the bins where one of those
/// changed. At 100,000 cells the gains and `10^(x/10)` of every candidate were a third of the
/// simulator's time a period, almost all of it for bins where nothing had changed.
#[derive(Default)]
struct RsrpCache {
    rsrp: Vec<(f32, f32)>,
    /// Per cell, the (power per resource element, tilt, radiating) the cache was computed with.
    cell: Vec<(f32, f32, bool)>,
    /// Per bin, the extra loss the cache was computed with.
    extra_loss_db: Vec<f32>,
}

/// A slot of [`RelationsOf`]: the target is not in the source's neighbour list.
const NOT_KNOWN: u32 = u32::MAX;
/// A slot of [`RelationsOf`]: the target is in the neighbour list, but handover to it is
/// barred (or the relation is otherwise not live).
const KNOWN: u32 = u32::MAX - 1;

/// One source cell's relations looked up by target cell: filled for one source at a time and
/// kept while the bins that follow have the same one (they mostly do: bins run in rows, and a
/// cell serves a patch of them). Finding a candidate in the source's relation list by a scan,
/// twice per candidate, was 40 % of a period at 100,000 cells.
struct RelationsOf {
    source: u32,
    /// Per target cell: the index into `live[source]`, [`KNOWN`] or [`NOT_KNOWN`].
    slot: Vec<u32>,
}

impl RelationsOf {
    fn new(cells: usize) -> RelationsOf {
        RelationsOf {
            source: u32::MAX,
            slot: vec![NOT_KNOWN; cells],
        }
    }

    /// Points the lookup at `source`'s relations.
    fn set(&mut self, source: u32, live: &[Vec<(u32, u32, f32)>], known: &[Vec<u32>]) {
        if self.source == source {
            return;
        }
        if self.source != u32::MAX {
            for &t in &known[self.source as usize] {
                self.slot[t as usize] = NOT_KNOWN;
            }
        }
        for &t in &known[source as usize] {
            self.slot[t as usize] = KNOWN;
        }
        // In reverse, so the first of two relations to one target wins, as a scan finds it.
        for (j, l) in live[source as usize].iter().enumerate().rev() {
            self.slot[l.0 as usize] = j as u32;
        }
        self.source = source;
    }

    /// The live relation to `target` (its relation index and CIO), if there is one.
    fn live<'a>(
        &self,
        target: u32,
        live: &'a [Vec<(u32, u32, f32)>],
    ) -> Option<&'a (u32, u32, f32)> {
        match self.slot[target as usize] {
            NOT_KNOWN | KNOWN => None,
            j => live[self.source as usize].get(j as usize),
        }
    }

    /// Whether `target` is in the source's neighbour list (barred or not).
    fn known(&self, target: u32) -> bool {
        self.slot[target as usize] != NOT_KNOWN
    }
}

/// What one period of the radio layer produced.
#[derive(Debug, Clone, Default)]
pub struct RadioOutcome {
    /// PRB load per cell (needed / available; above 1 when overloaded).
    pub load: Vec<f64>,
    /// Demand offered to and served by each cell, Mbit/s.
    pub offered_mbps: Vec<f64>,
    pub served_mbps: Vec<f64>,
    /// Mean spectral efficiency of each cell's offered demand, bit/s/Hz.
    pub spectral_eff: Vec<f64>,
    /// Per cell: the demand of its home bins, and how much of it was served (by anyone).
    pub home_demand_mbps: Vec<f64>,
    pub home_served_mbps: Vec<f64>,
    /// Users at a handover border, per relation (indexed like `Topology::relations`).
    pub border_users: Vec<f32>,
    pub total_demand_mbps: f64,
    pub total_served_mbps: f64,
    /// Bins with demand that no cell covers.
    pub uncovered_bins: usize,
    /// Per cell, its coverage counters ([`coverage`]).
    pub coverage: Vec<coverage::CellCoverage>,
    /// Users at the border of a cell they measure but their serving cell has no relation to
    /// (serving cell, measured cell, users), sorted: what ANR learns from.
    pub strangers: Vec<(u32, u32, f32)>,
}

/// SplitMix64: cheap, well-mixed hashing of (seed, a, b).
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(b.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic standard normal value for (seed, a, b) (Box-Muller).
fn gauss(seed: u64, a: u64, b: u64) -> f32 {
    let h = mix(seed, a, b);
    let u1 = ((h >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
    let u2 = (h & 0xff_ffff) as f32 / (1u64 << 24) as f32;
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Whether a cell carries traffic with its configuration and fault.
fn radiates(cfg: &CellConfig, fault: Option<CellFault>) -> bool {
    cfg.admin_state == 0 && cfg.energy_saving == 0 && fault != Some(CellFault::Outage)
}

impl RadioGrid {
    /// Lays bins over the network, finds each bin's candidate cells and scales the demand.
    pub fn build(topo: &Topology, seed: u64) -> RadioGrid {
        let n_cells = topo.cells.len();
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for s in &topo.sites {
            x0 = x0.min(s.x as f32);
            y0 = y0.min(s.y as f32);
            x1 = x1.max(s.x as f32);
            y1 = y1.max(s.y as f32);
        }
        let isd = topo.deployment.isd_m as f32;
        let reach_m = REACH_ISD * isd;
        let margin = 0.6 * isd;
        let (x0, y0, x1, y1) = (x0 - margin, y0 - margin, x1 + margin, y1 + margin);
        let area = (x1 - x0) * (y1 - y0);
        let bin_m = (area / MAX_BINS as f32).sqrt().max(50.0);
        let nx = ((x1 - x0) / bin_m).ceil() as usize;
        let ny = ((y1 - y0) / bin_m).ceil() as usize;

        // Sites by square of one inter-site distance, for the candidate search.
        let sq = isd;
        let square = |x: f32, y: f32| (((x - x0) / sq) as i64, ((y - y0) / sq) as i64);
        let mut squares: std::collections::HashMap<(i64, i64), Vec<usize>> =
            std::collections::HashMap::new();
        for (i, s) in topo.sites.iter().enumerate() {
            squares
                .entry(square(s.x as f32, s.y as f32))
                .or_default()
                .push(i);
        }
        let mut site_cells: Vec<Vec<usize>> = vec![Vec::new(); topo.sites.len()];
        for (c, cell) in topo.cells.iter().enumerate() {
            site_cells[cell.site].push(c);
        }
        let mut carriers: Vec<(u32, bool)> = topo
            .cells
            .iter()
            .map(|c| (c.arfcn, is_nr(c.arfcn)))
            .collect();
        carriers.sort_unstable();
        carriers.dedup();
        let carrier_of: Vec<usize> = topo
            .cells
            .iter()
            .map(|c| carriers.iter().position(|k| k.0 == c.arfcn).unwrap_or(0))
            .collect();

        let reach = (reach_m / sq).ceil() as i64;
        let mut xy = Vec::new();
        let mut cands = Vec::new();
        let mut scratch: Vec<Vec<(f32, Cand)>> = vec![Vec::new(); carriers.len()];
        for iy in 0..ny {
            for ix in 0..nx {
                let (x, y) = (
                    x0 + (ix as f32 + 0.5) * bin_m,
                    y0 + (iy as f32 + 0.5) * bin_m,
                );
                scratch.iter_mut().for_each(Vec::clear);
                let (sx, sy) = square(x, y);
                let indoor = indoor_db(seed, (iy * nx + ix) as u64);
                for dx in -reach..=reach {
                    for dy in -reach..=reach {
                        let Some(list) = squares.get(&(sx + dx, sy + dy)) else {
                            continue;
                        };
                        for &s in list {
                            let site = &topo.sites[s];
                            let (ddx, ddy) = (x - site.x as f32, y - site.y as f32);
                            let d = (ddx * ddx + ddy * ddy).sqrt();
                            if d > reach_m {
                                continue;
                            }
                            let bearing = ddx.atan2(ddy).to_degrees().rem_euclid(360.0);
                            let h = site.mast_m;
                            let theta = (h - H_UT).atan2(d.max(10.0)).to_degrees();
                            // Shadowing is per (mast, place): fixed in space, like buildings.
                            let shadow = SHADOW_SIGMA_DB
                                * gauss(seed, s as u64, (iy * nx + ix) as u64).clamp(-3.0, 3.0);
                            for &c in &site_cells[s] {
                                let cell = &topo.cells[c];
                                let nr = is_nr(cell.arfcn);
                                let off = {
                                    let a = (bearing - f32::from(cell.azimuth)).abs() % 360.0;
                                    a.min(360.0 - a)
                                };
                                let cand = Cand {
                                    cell: c as u32,
                                    loss_db: path_loss_uma_db(d, carrier_ghz(nr))
                                        + height_gain_db(h, d)
                                        + shadow
                                        + indoor,
                                    ah_db: horizontal_db(off),
                                    theta_deg: theta,
                                };
                                // Ranked by the signal at the default 4° tilt.
                                let score = gain_db(cand.ah_db, theta, 4.0) - cand.loss_db;
                                scratch[carrier_of[c]].push((score, cand));
                            }
                        }
                    }
                }
                if scratch.iter().all(Vec::is_empty) {
                    continue;
                }
                xy.push((x, y));
                for v in &mut scratch {
                    v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
                    cands.extend((0..K).map(|k| v.get(k).map_or(NO_CAND, |p| p.1)));
                }
            }
        }
        let bins = xy.len();

        // The demand field: a noisy base with hotspots around a few random centres.
        let mut rng = StdRng::seed_from_u64(seed ^ 0x00de_3a4d);
        let hotspots: Vec<(f32, f32, f32)> = (0..(topo.sites.len() / 7).max(1))
            .map(|_| {
                let s = &topo.sites[rng.random_range(0..topo.sites.len())];
                (
                    s.x as f32 + rng.random_range(-400.0..400.0),
                    s.y as f32 + rng.random_range(-400.0..400.0),
                    rng.random_range(1.0..3.0),
                )
            })
            .collect();
        let demand: Vec<f32> = xy
            .iter()
            .enumerate()
            .map(|(b, &(x, y))| {
                let mut v = 1.0 + 0.3 * gauss(seed ^ 0xf1e1d, b as u64, 7).clamp(-2.0, 2.0);
                for &(hx, hy, w) in &hotspots {
                    let d2 = (x - hx).powi(2) + (y - hy).powi(2);
                    if d2 < 4.0e6 {
                        v += w * (-d2 / (2.0 * 300.0f32.powi(2))).exp();
                    }
                }
                v.max(0.1) * (bin_m / 50.0).powi(2)
            })
            .collect();
        let n_carriers = carriers.len();
        let mut grid = RadioGrid {
            bin_m,
            bins,
            xy,
            cands,
            carriers,
            demand,
            nr_share: vec![NR_SHARE; bins],
            extra_loss_db: vec![0.0; bins],
            demand_mult: vec![1.0; bins],
            home: vec![(u32::MAX, 0.0); bins * n_carriers],
            activity: topo.cells.iter().map(|c| c.demand as f32).collect(),
            faults: vec![None; n_cells],
            served_by: vec![(u32::MAX, 0.0); bins * n_carriers],
            border0: Vec::new(),
            lost_to: vec![u32::MAX; bins],
            attempts_per_border_user: 0.0,
            strangers0: Vec::new(),
            cache: RsrpCache::default(),
        };
        grid.calibrate(topo);
        grid
    }

    /// Scales the demand so that each cell's busy-hour load with the initial configuration is
    /// the load the topology planted (so planted overloads stay overloads).
    fn calibrate(&mut self, topo: &Topology) {
        let by_source = topo.relations_by_source();
        let configs: Vec<CellConfig> = (0..topo.cells.len())
            .map(|c| crate::model::initial_config(topo, c, &by_source))
            .collect();
        let rel = vec![crate::model::RelationState::NEUTRAL; topo.relations.len()];
        let nc = self.carriers.len();
        for _ in 0..4 {
            let out = self.run(topo, &by_source, &configs, &rel, 1.0);
            let scale: Vec<f32> = topo
                .cells
                .iter()
                .zip(&out.load)
                .map(|(cell, &l)| {
                    if l > 1e-9 {
                        (cell.demand / l) as f32
                    } else {
                        1.0
                    }
                })
                .collect();
            for b in 0..self.bins {
                // Each carrier's part of the bin scales with its own serving cell, so both
                // layers reach their planted loads.
                let (mut lte, mut nr) = (0.0f32, 0.0f32);
                for k in 0..nc {
                    let (c, d) = self.served_by[b * nc + k];
                    if c != u32::MAX {
                        let scaled = d * scale[c as usize].clamp(0.05, 20.0);
                        if self.carriers[k].1 {
                            nr += scaled;
                        } else {
                            lte += scaled;
                        }
                    }
                }
                // Where no cell reaches there is no network: nobody is counted there.
                self.demand[b] = lte + nr;
                if lte > 0.0 && nr > 0.0 {
                    self.nr_share[b] = nr / (lte + nr);
                }
            }
            self.activity = topo.cells.iter().map(|c| c.demand as f32).collect();
        }
        let out = self.run(topo, &by_source, &configs, &rel, 1.0);
        let (attempts, users) = topo
            .relations
            .iter()
            .zip(&out.border_users)
            .filter(|(r, u)| r.base_attempts > 0.0 && **u > 0.0)
            .fold((0.0f64, 0.0f64), |(a, u), (r, b)| {
                (a + r.base_attempts, u + f64::from(*b))
            });
        self.attempts_per_border_user = if users > 0.0 {
            (attempts / users) as f32
        } else {
            0.0
        };
        self.border0 = out.border_users;
        self.strangers0 = out.strangers;
        for b in 0..self.bins {
            for k in 0..nc {
                let (c, d) = self.served_by[b * nc + k];
                if c != u32::MAX && self.demand[b] > 0.0 {
                    self.home[b * nc + k] = (c, d / self.demand[b]);
                }
            }
        }
        self.activity = topo.cells.iter().map(|c| c.demand as f32).collect();
    }

    /// Adds to `topo` a latent relation (see [`crate::topology::SimRelation::latent`]) for
    /// every pair whose border carried at least one measurement report a period at the start:
    /// the neighbours the planner missed, which ANR can add. Returns how many.
    pub fn add_latent_relations(&mut self, topo: &mut Topology) -> usize {
        let before = topo.relations.len();
        for &(s, t, users) in &self.strangers0 {
            let attempts = f64::from(users * self.attempts_per_border_user);
            if attempts < 1.0 {
                continue;
            }
            topo.relations.push(crate::topology::SimRelation {
                source: s as usize,
                target: t as usize,
                base_attempts: attempts,
                base_success: 0.985,
                remove_allowed: true,
                latent: true,
            });
            self.border0.push(users);
        }
        topo.relations.len() - before
    }

    /// Plants or clears a coverage hole: `extra_db` more loss within `radius_m` of (x, y).
    pub fn set_hole(&mut self, x: f32, y: f32, radius_m: f32, extra_db: f32) -> usize {
        self.area(x, y, radius_m)
            .into_iter()
            .map(|b| self.extra_loss_db[b] = extra_db)
            .count()
    }

    /// Plants or clears a hotspot: demand times `mult` within `radius_m` of (x, y).
    pub fn set_hotspot(&mut self, x: f32, y: f32, radius_m: f32, mult: f32) -> usize {
        self.area(x, y, radius_m)
            .into_iter()
            .map(|b| self.demand_mult[b] = mult)
            .count()
    }

    fn area(&self, x: f32, y: f32, radius_m: f32) -> Vec<usize> {
        let r2 = radius_m * radius_m;
        (0..self.bins)
            .filter(|&b| (self.xy[b].0 - x).powi(2) + (self.xy[b].1 - y).powi(2) <= r2)
            .collect()
    }

    /// One period: selection, SINR, load and borders with the configuration in effect;
    /// `profile` is the share of busy-hour demand now.
    pub fn run(
        &mut self,
        topo: &Topology,
        by_source: &[Vec<usize>],
        configs: &[CellConfig],
        relations: &[crate::model::RelationState],
        profile: f32,
    ) -> RadioOutcome {
        let n = topo.cells.len();
        let nc = self.carriers.len();
        let on: Vec<bool> = (0..n)
            .map(|c| radiates(&configs[c], self.faults[c]))
            .collect();
        // Transmit power per resource element, dBm.
        let p_re: Vec<f32> = (0..n)
            .map(|c| {
                f32::from(configs[c].max_tx_power_dbm)
                    - 10.0 * resource_elements(is_nr(topo.cells[c].arfcn)).log10()
            })
            .collect();
        let tilt: Vec<f32> = configs
            .iter()
            .map(|c| f32::from(c.electrical_tilt) / 10.0)
            .collect();
        // Live relations of each source: (target, relation index, CIO).
        let live: Vec<Vec<(u32, u32, f32)>> = by_source
            .iter()
            .map(|rels| {
                rels.iter()
                    .filter(|r| relations[**r].exists && relations[**r].ho_allowed)
                    .map(|&r| {
                        (
                            topo.relations[r].target as u32,
                            r as u32,
                            f32::from(relations[r].cio_db),
                        )
                    })
                    .collect()
            })
            .collect();
        // Targets of each source's relations in the neighbour list (barred ones too): the
        // cells its users' reports name that it knows.
        let known: Vec<Vec<u32>> = by_source
            .iter()
            .map(|rels| {
                rels.iter()
                    .filter(|r| relations[**r].exists)
                    .map(|&r| topo.relations[r].target as u32)
                    .collect()
            })
            .collect();
        // Which cells' candidates need their RSRP again (see `RsrpCache`).
        let fresh = self.cache.rsrp.len() != self.cands.len() || self.cache.cell.len() != n;
        if fresh {
            self.cache.rsrp = vec![(f32::NEG_INFINITY, 0.0); self.cands.len()];
            self.cache.extra_loss_db = vec![f32::NAN; self.bins];
        }
        let dirty: Vec<bool> = (0..n)
            .map(|c| fresh || self.cache.cell[c] != (p_re[c], tilt[c], on[c]))
            .collect();
        self.cache.cell = (0..n).map(|c| (p_re[c], tilt[c], on[c])).collect();
        let mut strongest_of: Vec<RelationsOf> = (0..nc).map(|_| RelationsOf::new(n)).collect();
        let mut serving_of: Vec<RelationsOf> = (0..nc).map(|_| RelationsOf::new(n)).collect();
        let mut strangers: std::collections::HashMap<u64, f32> = std::collections::HashMap::new();
        let mut unknown: Vec<u32> = Vec::with_capacity(K);
        let mut prb_need = vec![0.0f64; n];
        let mut offered = vec![0.0f64; n];
        let mut se_sum = vec![0.0f64; n];
        let mut border = vec![0.0f32; topo.relations.len()];
        let mut total_demand = 0.0f64;
        let mut uncovered = 0usize;
        let mut rsrp = [0.0f32; K];
        let mut borders: Vec<u32> = Vec::with_capacity(2 * K);
        for b in 0..self.bins {
            let demand = self.demand[b] * self.demand_mult[b] * profile;
            total_demand += f64::from(demand);
            // Per carrier: the serving cell and its SINR, then the demand split.
            let mut chosen = [Choice::NONE; MAX_CARRIERS];
            borders.clear();
            unknown.clear();
            let bin = b * nc * K..(b + 1) * nc * K;
            let stale = self.cache.extra_loss_db[b] != self.extra_loss_db[b]
                || self.cands[bin.clone()]
                    .iter()
                    .any(|c| c.cell != u32::MAX && dirty[c.cell as usize]);
            if stale {
                for (cached, c) in self.cache.rsrp[bin.clone()]
                    .iter_mut()
                    .zip(&self.cands[bin])
                {
                    *cached = if c.cell == u32::MAX || !on[c.cell as usize] {
                        (f32::NEG_INFINITY, 0.0)
                    } else {
                        let cell = c.cell as usize;
                        let db = p_re[cell] + gain_db(c.ah_db, c.theta_deg, tilt[cell])
                            - c.loss_db
                            - self.extra_loss_db[b];
                        (db, db_to_lin(db))
                    };
                }
                self.cache.extra_loss_db[b] = self.extra_loss_db[b];
            }
            for (k, &(_, nr)) in self.carriers.iter().enumerate().take(MAX_CARRIERS) {
                let base = (b * nc + k) * K;
                let cs = &self.cands[base..base + K];
                let cached = &self.cache.rsrp[base..base + K];
                let mut best = usize::MAX;
                for (i, &(db, _)) in cached.iter().enumerate() {
                    rsrp[i] = db;
                    if db == f32::NEG_INFINITY {
                        continue;
                    }
                    if best == usize::MAX || rsrp[i] > rsrp[best] {
                        best = i;
                    }
                }
                if best == usize::MAX {
                    continue;
                }
                // Connected users follow the offsets of the strongest cell's relations.
                let s = cs[best].cell;
                let relations_of = &mut strongest_of[k];
                relations_of.set(s, &live, &known);
                let mut serving = best;
                let mut score = rsrp[best];
                for (i, c) in cs.iter().enumerate() {
                    if i == best || rsrp[i] == f32::NEG_INFINITY {
                        continue;
                    }
                    if let Some(&(_, _, cio)) = relations_of.live(c.cell, &live)
                        && rsrp[i] + cio > score
                    {
                        serving = i;
                        score = rsrp[i] + cio;
                    }
                }
                let v = cs[serving].cell;
                let signal = cached[serving].1;
                let mut interference = 0.0f32;
                for (i, c) in cs.iter().enumerate() {
                    if i != serving && rsrp[i] > f32::NEG_INFINITY {
                        interference += cached[i].1 * self.activity[c.cell as usize].max(0.05);
                    }
                }
                let noise = db_to_lin(if nr {
                    NOISE_RE_DBM_NR
                } else {
                    NOISE_RE_DBM_LTE
                });
                let sinr = signal / (interference + noise);
                let covered = rsrp[serving] >= MIN_RSRP_DBM && sinr >= db_to_lin(MIN_SINR_DB);
                let covered = covered && (!nr || rsrp[serving] >= NR_MIN_RSRP_DBM);
                chosen[k] = Choice {
                    cell: v,
                    sinr,
                    borders: (0, 0),
                    strangers: (0, 0),
                    covered,
                };
                // The handover borders of the serving cell: every live neighbour within
                // `BORDER_DB` of it (the users there measure and hand over to each).
                if covered {
                    let first = borders.len();
                    let first_unknown = unknown.len();
                    let relations_of = &mut serving_of[k];
                    relations_of.set(v, &live, &known);
                    for (i, c) in cs.iter().enumerate() {
                        if i == serving || rsrp[i] == f32::NEG_INFINITY {
                            continue;
                        }
                        if let Some(&(_, r, cio)) = relations_of.live(c.cell, &live)
                            && rsrp[serving] - (rsrp[i] + cio) < BORDER_DB
                        {
                            borders.push(r);
                        } else if rsrp[serving] - rsrp[i] < BORDER_DB && !relations_of.known(c.cell)
                        {
                            unknown.push(c.cell);
                        }
                    }
                    chosen[k].borders = (first as u16, borders.len() as u16);
                    chosen[k].strangers = (first_unknown as u16, unknown.len() as u16);
                }
            }
            // Split the demand: NR takes its share where it covers, LTE the rest.
            let covered = |nr: bool| {
                (0..nc.min(MAX_CARRIERS))
                    .filter(|k| self.carriers[*k].1 == nr && chosen[*k].covered)
                    .count()
            };
            let (nr_covered, lte_covered) = (covered(true), covered(false));
            let nr_part = if nr_covered > 0 {
                if lte_covered > 0 {
                    self.nr_share[b]
                } else {
                    1.0
                }
            } else {
                0.0
            };
            let mut any = false;
            self.served_by[b * nc..(b + 1) * nc].fill((u32::MAX, 0.0));
            for (k, choice) in chosen.iter().enumerate().take(nc) {
                if !choice.covered {
                    continue;
                }
                let nr = self.carriers[k].1;
                let share = if nr {
                    nr_part / nr_covered as f32
                } else {
                    (1.0 - nr_part) / lte_covered as f32
                };
                let d = demand * share;
                if d <= 0.0 {
                    continue;
                }
                any = true;
                let Choice {
                    cell: v,
                    sinr,
                    borders: (from, to),
                    strangers: (s_from, s_to),
                    ..
                } = *choice;
                let cap = if nr { 5.5 } else { 4.4 };
                let se = (0.6 * (1.0 + sinr).log2()).clamp(0.05, cap);
                let cell = v as usize;
                prb_need[cell] += f64::from(d) * 1e6 / (f64::from(se) * f64::from(prb_hz(nr)));
                offered[cell] += f64::from(d);
                se_sum[cell] += f64::from(se * d);
                self.served_by[b * nc + k] = (v, d);
                for &r in &borders[usize::from(from)..usize::from(to)] {
                    border[r as usize] += d * USERS_PER_MBPS;
                }
                for &t in &unknown[usize::from(s_from)..usize::from(s_to)] {
                    *strangers
                        .entry(u64::from(v) << 32 | u64::from(t))
                        .or_default() += d * USERS_PER_MBPS;
                }
            }
            if !any && demand > 0.0 {
                uncovered += 1;
            }
            self.lost_to[b] = if any {
                u32::MAX
            } else {
                coverage::strongest(&chosen)
            };
        }
        let mut load = vec![0.0f64; n];
        let mut served_ratio = vec![0.0f64; n];
        for c in 0..n {
            let prbs = if is_nr(topo.cells[c].arfcn) {
                crate::model::NR_PRBS
            } else {
                crate::model::LTE_PRBS
            } as f64;
            load[c] = prb_need[c] / prbs;
            served_ratio[c] = if self.faults[c] == Some(CellFault::Sleeping) {
                0.0
            } else {
                (1.0 / load[c].max(1e-9)).min(1.0)
            };
        }
        let mut home_demand = vec![0.0f64; n];
        let mut home_served = vec![0.0f64; n];
        let mut total_served = 0.0f64;
        for b in 0..self.bins {
            let mut served = 0.0f64;
            for k in 0..nc {
                let (v, d) = self.served_by[b * nc + k];
                if v != u32::MAX {
                    served += f64::from(d) * served_ratio[v as usize];
                }
            }
            total_served += served;
            let demand = f64::from(self.demand[b] * self.demand_mult[b] * profile);
            let served_frac = if demand > 0.0 { served / demand } else { 1.0 };
            for k in 0..nc {
                let (h, share) = self.home[b * nc + k];
                if h != u32::MAX {
                    home_demand[h as usize] += demand * f64::from(share);
                    home_served[h as usize] += demand * f64::from(share) * served_frac;
                }
            }
        }
        for c in 0..n {
            let sleeping = self.faults[c] == Some(CellFault::Sleeping);
            // A sleeping cell carries nothing, so it interferes only with its reference signals.
            self.activity[c] = if on[c] && !sleeping {
                load[c].min(1.0) as f32
            } else {
                0.0
            };
        }
        let spectral_eff = (0..n)
            .map(|c| {
                if offered[c] > 0.0 {
                    se_sum[c] / offered[c]
                } else {
                    0.0
                }
            })
            .collect();
        let served_mbps = (0..n).map(|c| offered[c] * served_ratio[c]).collect();
        RadioOutcome {
            load,
            offered_mbps: offered,
            served_mbps,
            spectral_eff,
            home_demand_mbps: home_demand,
            home_served_mbps: home_served,
            border_users: border,
            total_demand_mbps: total_demand,
            total_served_mbps: total_served,
            uncovered_bins: uncovered,
            coverage: self.coverage(topo, profile),
            strangers: {
                let mut v: Vec<(u32, u32, f32)> = strangers
                    .into_iter()
                    .map(|(k, users)| ((k >> 32) as u32, k as u32, users))
                    .collect();
                v.sort_unstable_by_key(|x| (x.0, x.1));
                v
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RelationState, initial_config};

    fn network(cells: usize) -> (Topology, Vec<Vec<usize>>, RadioGrid, Vec<CellConfig>) {
        let regions = vec!["site-a".to_string()];
        let topo = Topology::build(cells, 3, &regions);
        let by_source = topo.relations_by_source();
        let grid = RadioGrid::build(&topo, 3);
        let configs = (0..topo.cells.len())
            .map(|c| initial_config(&topo, c, &by_source))
            .collect();
        (topo, by_source, grid, configs)
    }

    #[test]
    fn path_loss_and_patterns_follow_the_3gpp_formulas() {
        let near = path_loss_uma_db(100.0, 1.815);
        let far = path_loss_uma_db(1000.0, 1.815);
        assert!(near < far, "{near} {far}");
        // UMa NLOS at 500 m, 1.8 GHz: 13.54 + 39.08 log10(500.6) + 20 log10(1.815) ≈ 124.2 dB.
        assert!((path_loss_uma_db(500.0, 1.815) - 124.2).abs() < 0.5);
        assert!(path_loss_uma_db(500.0, 3.55) > path_loss_uma_db(500.0, 1.815) + 5.0);
        assert_eq!(horizontal_db(0.0), 0.0);
        assert!(
            (horizontal_db(32.5) + 3.0).abs() < 1e-4,
            "3 dB at half the beamwidth"
        );
        assert_eq!(horizontal_db(180.0), -25.0);
        assert!((vertical_db(9.0, 4.0) + 3.0).abs() < 1e-4);
        assert_eq!(vertical_db(90.0, 4.0), -20.0);
    }

    #[test]
    fn the_daily_profile_has_a_night_trough_and_an_evening_busy_hour() {
        assert_eq!(daily_profile(20.0), 1.0);
        assert!(daily_profile(4.0) < 0.15);
        assert!((daily_profile(23.99) - daily_profile(0.0)).abs() < 0.01);
    }

    #[test]
    fn calibrated_loads_are_the_planted_ones() {
        let (topo, by_source, mut grid, configs) = network(300);
        let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        let mut off = 0;
        for (c, cell) in topo.cells.iter().enumerate() {
            if (out.load[c] - cell.demand).abs() > 0.05 {
                off += 1;
            }
        }
        assert!(
            off <= topo.cells.len() / 20,
            "{off} cells off their planted load"
        );
        assert!(out.total_served_mbps > 0.9 * out.total_demand_mbps);
        let night = grid.run(&topo, &by_source, &configs, &rel, daily_profile(4.0));
        let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean(&night.load) < 0.25 * mean(&out.load));
    }

    #[test]
    fn tilt_power_and_cio_move_users_between_cells() {
        let (topo, by_source, mut grid, mut configs) = network(300);
        let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
        let before = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        // A cell in the middle, tilted down 6 more degrees, serves fewer users.
        let c = topo.cells.len() / 2;
        configs[c].electrical_tilt += 60;
        let tilted = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert!(tilted.offered_mbps[c] < 0.9 * before.offered_mbps[c]);
        configs[c].electrical_tilt -= 60;
        configs[c].max_tx_power_dbm -= 6;
        let weaker = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert!(weaker.offered_mbps[c] < before.offered_mbps[c]);
        configs[c].max_tx_power_dbm += 6;
        // A CIO of +6 dB on every relation out of c hands its border users to the targets.
        let mut rel = rel;
        for &r in &by_source[c] {
            rel[r].cio_db = 6;
        }
        let shifted = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert!(
            shifted.offered_mbps[c] < 0.85 * before.offered_mbps[c],
            "{} -> {}",
            before.offered_mbps[c],
            shifted.offered_mbps[c]
        );
        let targets: f64 = by_source[c]
            .iter()
            .map(|r| {
                shifted.offered_mbps[topo.relations[*r].target]
                    - before.offered_mbps[topo.relations[*r].target]
            })
            .sum();
        assert!(targets > 0.0);
    }

    /// The RSRP kept between periods must give what computing every candidate afresh gives,
    /// after every kind of change that moves an RSRP: tilt, power, a cell switched off or in
    /// outage, a coverage hole.
    #[test]
    fn a_period_from_kept_rsrp_equals_one_computed_afresh() {
        let (topo, by_source, mut kept, mut configs) = network(300);
        let (_, _, mut fresh, _) = network(300);
        let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
        let same = |a: &RadioOutcome, b: &RadioOutcome| {
            assert_eq!(a.load, b.load);
            assert_eq!(a.served_mbps, b.served_mbps);
            assert_eq!(a.border_users, b.border_users);
            assert_eq!(a.strangers, b.strangers);
            assert_eq!(a.coverage, b.coverage);
            assert_eq!(a.uncovered_bins, b.uncovered_bins);
        };
        let period = |kept: &mut RadioGrid, fresh: &mut RadioGrid, configs: &[CellConfig]| {
            fresh.cache = RsrpCache::default();
            let a = kept.run(&topo, &by_source, configs, &rel, 1.0);
            let b = fresh.run(&topo, &by_source, configs, &rel, 1.0);
            same(&a, &b);
        };
        period(&mut kept, &mut fresh, &configs);
        configs[4].electrical_tilt -= 30;
        configs[7].max_tx_power_dbm += 3;
        configs[10].energy_saving = 1;
        period(&mut kept, &mut fresh, &configs);
        for grid in [&mut kept, &mut fresh] {
            grid.faults[13] = Some(CellFault::Outage);
        }
        period(&mut kept, &mut fresh, &configs);
        let s = &topo.sites[2];
        for grid in [&mut kept, &mut fresh] {
            grid.faults[13] = None;
            assert!(grid.set_hole(s.x as f32, s.y as f32 + 300.0, 250.0, 30.0) > 0);
        }
        configs[10].energy_saving = 0;
        period(&mut kept, &mut fresh, &configs);
        for grid in [&mut kept, &mut fresh] {
            grid.set_hole(s.x as f32, s.y as f32 + 300.0, 250.0, 0.0);
        }
        period(&mut kept, &mut fresh, &configs);
    }

    #[test]
    fn an_outage_leaves_part_of_its_area_unserved_and_a_sleeping_cell_serves_nobody() {
        let (topo, by_source, mut grid, configs) = network(300);
        let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
        // The central site (the busiest area) loses all three cells.
        let site: Vec<usize> = (0..topo.cells.len())
            .filter(|c| topo.cells[*c].site == 0)
            .collect();
        let area = |out: &RadioOutcome| {
            let d: f64 = site.iter().map(|c| out.home_demand_mbps[*c]).sum();
            site.iter().map(|c| out.home_served_mbps[*c]).sum::<f64>() / d
        };
        let before = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert!(area(&before) > 0.99, "{}", area(&before));
        for &c in &site {
            grid.faults[c] = Some(CellFault::Outage);
        }
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert!(site.iter().all(|c| out.offered_mbps[*c] == 0.0));
        assert!(area(&out) < 0.8, "outage area still served {}", area(&out));
        for &c in &site {
            grid.faults[c] = None;
        }
        let c = site[0];
        grid.faults[c] = Some(CellFault::Sleeping);
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert_eq!(out.served_mbps[c], 0.0);
        assert!(
            out.offered_mbps[c] > 0.0,
            "users still camp on a sleeping cell"
        );
        grid.faults[c] = None;
        let back = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert!(area(&back) > 0.99);
    }

    #[test]
    fn sites_farther_apart_leave_more_of_an_outage_area_unserved_and_power_headroom_wins_it_back() {
        use crate::topology::Deployment;
        let regions = vec!["site-a".to_string()];
        // Night: the neighbours have capacity, so what an outage takes away is coverage.
        let night = daily_profile(3.0);
        let served = |deployment: Deployment, compensate: bool| {
            let topo = Topology::build_deployed(120, 3, &regions, deployment);
            let by_source = topo.relations_by_source();
            let mut grid = RadioGrid::build(&topo, 3);
            let mut configs: Vec<CellConfig> = (0..topo.cells.len())
                .map(|c| initial_config(&topo, c, &by_source))
                .collect();
            let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
            let site: Vec<usize> = (0..topo.cells.len())
                .filter(|c| topo.cells[*c].site == 1)
                .collect();
            for &c in &site {
                grid.faults[c] = Some(CellFault::Outage);
            }
            if compensate {
                // The neighbours pointing at the failed site: +6 dB to the radio's 49, 2° up.
                for r in topo.relations.iter().filter(|r| site.contains(&r.target)) {
                    if topo.cells[r.source].site != 1 {
                        configs[r.source].max_tx_power_dbm = 49;
                        configs[r.source].electrical_tilt = 20;
                    }
                }
            }
            let mut out = grid.run(&topo, &by_source, &configs, &rel, night);
            for _ in 0..2 {
                out = grid.run(&topo, &by_source, &configs, &rel, night);
            }
            let d: f64 = site.iter().map(|c| out.home_demand_mbps[*c]).sum();
            site.iter().map(|c| out.home_served_mbps[*c]).sum::<f64>() / d
        };
        let urban = served(Deployment::default(), false);
        let sparse = Deployment {
            isd_m: 2100.0,
            power_dbm: 43,
            ..Deployment::default()
        };
        let (without, with) = (served(sparse, false), served(sparse, true));
        assert!(urban > 0.8, "urban neighbours serve most of it: {urban}");
        assert!(without < 0.5, "2.1 km apart they do not: {without}");
        assert!(
            with > without + 0.2,
            "6 dB and 2° give much back: {without} -> {with}"
        );
    }

    #[test]
    fn a_coverage_hole_leaves_bins_uncovered() {
        let (topo, by_source, mut grid, configs) = network(300);
        let rel = vec![RelationState::NEUTRAL; topo.relations.len()];
        let before = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        let s = &topo.sites[10];
        assert!(grid.set_hole(s.x as f32, s.y as f32 + 400.0, 250.0, 40.0) > 0);
        let out = grid.run(&topo, &by_source, &configs, &rel, 1.0);
        assert!(out.uncovered_bins > before.uncovered_bins);
    }
}
