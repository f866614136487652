//! The fault injector: a seeded schedule of power losses, kill -9, pauses, partitions, clock
//! jumps, membership changes and combinations of them, one at a time, each healed and
//! followed by a check that the cluster became whole again and takes writes through every
//! node.
//!
//! Kinds are dealt from a shuffled deck, so every selected kind gets the same share of the run
//! in a random order. Power loss aims at the leader more often than not, and in particular
//! right after an election (a new leader's first entries are the ones the review found
//! unsafe): it forces one (hand-over or pausing the leader), waits for the new leader and
//! cuts its power 0–300 ms later; sometimes it then cuts the next leader too. Every fault is
//! written to `faults.jsonl` with start and end times on the history's clock, so anomalies
//! can be lined up with the faults around them.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::history::History;
use crate::lazyfs::Crash;
use crate::linearizability::Micros;
use crate::netns::{Cut, Direction, Rule};
use crate::report::{Anomaly, FaultCounts};

/// The kinds of fault, as `--faults` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    PowerLoss,
    Kill,
    Pause,
    Partition,
    Clock,
    Membership,
    Combined,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::PowerLoss,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Clock,
        FaultKind::Membership,
        FaultKind::Combined,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::PowerLoss => "power-loss",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Clock => "clock",
            FaultKind::Membership => "membership",
            FaultKind::Combined => "combined",
        }
    }
}

/// A node a fault hit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub slot: usize,
    pub node: u64,
    pub leader: bool,
}

/// One line of `faults.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRecord {
    pub seq: u64,
    pub kind: String,
    pub variant: String,
    /// When the injection began and ended, and when the cluster was whole again (history
    /// clock, microseconds).
    pub start_us: Micros,
    pub end_us: Micros,
    pub healed_us: Micros,
    pub targets: Vec<Target>,
    pub detail: String,
    /// `false`: the fault could not be carried out as planned (see `detail`).
    pub injected: bool,
    /// Anomalies seen when healing after it.
    pub anomalies: Vec<String>,
}

impl FaultRecord {
    /// One line for reports.
    pub fn line(&self) -> String {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                format!(
                    "slot {} node {}{}",
                    t.slot,
                    t.node,
                    if t.leader { " (leader)" } else { "" }
                )
            })
            .collect();
        format!(
            "fault #{} {}/{} at {:.3}-{:.3} s, healed {:.3} s: {}; {}",
            self.seq,
            self.kind,
            self.variant,
            self.start_us as f64 / 1e6,
            self.end_us as f64 / 1e6,
            self.healed_us as f64 / 1e6,
            targets.join(", "),
            self.detail
        )
    }
}

/// Reads `faults.jsonl` back.
pub fn load(file: &Path) -> std::io::Result<Vec<FaultRecord>> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// What one injection did.
struct Injected {
    variant: String,
    targets: Vec<Target>,
    detail: String,
}

/// The fault injector of one run.
pub struct Nemesis {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    deck: Vec<FaultKind>,
    pub counts: FaultCounts,
    pub anomalies: Vec<Anomaly>,
    log: std::fs::File,
    history: History,
    seq: u64,
    /// Node clocks seen to move with their offset file / not.
    pub clock_checks: (u64, u64),
    /// Every fault so far, as written to `faults.jsonl`.
    pub records: Vec<FaultRecord>,
    /// What the current fault's power cuts dropped and what repairing after it did, for its
    /// record.
    record_notes: Vec<String>,
}

/// How long a long isolation lasts: at the clients' default pace, the rest of the cluster
/// commits well over the 1000 entries a node keeps behind its snapshot meanwhile.
const LONG_ISOLATION: Duration = Duration::from_secs(60);

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

impl Nemesis {
    pub fn new(
        seed: u64,
        kinds: &[FaultKind],
        log: &Path,
        history: History,
    ) -> std::io::Result<Nemesis> {
        Ok(Nemesis {
            rng: StdRng::seed_from_u64(seed),
            kinds: kinds.to_vec(),
            deck: Vec::new(),
            counts: FaultCounts::default(),
            anomalies: Vec::new(),
            log: std::fs::File::create(log)?,
            history,
            seq: 0,
            clock_checks: (0, 0),
            records: Vec::new(),
            record_notes: Vec::new(),
        })
    }

    fn deal(&mut self) -> FaultKind {
        if self.deck.is_empty() {
            self.deck = self.kinds.clone();
            self.deck.shuffle(&mut self.rng);
        }
        self.deck.pop().unwrap_or(FaultKind::Kill)
    }

    /// Injects faults until `until`, and after it until each kind was injected `min_per_kind`
    /// times but not past `hard_until`; returns early if the cluster cannot be made whole.
    pub async fn run(
        &mut self,
        cluster: &mut Cluster,
        until: Instant,
        min_per_kind: u64,
        hard_until: Instant,
    ) {
        if self.kinds.is_empty() {
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        // The deck deals every kind once a round, so each kind has `seq / kinds` faults or one
        // more.
        let kinds = self.kinds.len() as u64;
        loop {
            let now = Instant::now();
            let more = now < until || (self.seq / kinds < min_per_kind && now < hard_until);
            if !more {
                break;
            }
            let kind = self.deal();
            self.seq += 1;
            let start_us = self.history.now();
            let result = match kind {
                FaultKind::PowerLoss => self.power_loss(cluster).await,
                FaultKind::Kill => self.kill(cluster).await,
                FaultKind::Pause => self.pause(cluster).await,
                FaultKind::Partition => self.partition(cluster).await,
                FaultKind::Clock => self.clock(cluster).await,
                FaultKind::Membership => self.membership(cluster).await,
                FaultKind::Combined => self.combined(cluster).await,
            };
            let end_us = self.history.now();
            let mut found = cluster.heal(self.seq).await;
            if !found.is_empty() && !self.repair(cluster).await {
                found.push(Anomaly::CampaignError {
                    detail: format!(
                        "the cluster could not be made whole after fault {}; faults stopped",
                        self.seq
                    ),
                });
                self.finish(kind, start_us, end_us, result, &found);
                self.anomalies.extend(found);
                return;
            }
            self.finish(kind, start_us, end_us, result, &found);
            self.anomalies.extend(found);
            let gap = ms(&mut self.rng, 200, 800);
            tokio::time::sleep(gap).await;
        }
    }

    fn finish(
        &mut self,
        kind: FaultKind,
        start_us: Micros,
        end_us: Micros,
        result: Result<Injected, String>,
        found: &[Anomaly],
    ) {
        let (variant, targets, mut detail, injected) = match result {
            Ok(i) => (i.variant, i.targets, i.detail, true),
            Err(detail) => ("failed".to_string(), Vec::new(), detail, false),
        };
        for r in self.record_notes.drain(..) {
            detail.push_str("; ");
            detail.push_str(&r);
        }
        if injected {
            self.counts.count(kind.name(), &variant);
        } else {
            self.counts.not_injected += 1;
        }
        let record = FaultRecord {
            seq: self.seq,
            kind: kind.name().to_string(),
            variant,
            start_us,
            end_us,
            healed_us: self.history.now(),
            targets,
            detail,
            injected,
            anomalies: found.iter().map(|a| a.kind().to_string()).collect(),
        };
        if let Ok(line) = serde_json::to_string(&record) {
            let _ = writeln!(self.log, "{line}");
        }
        self.records.push(record);
    }

    /// After a fault that left the cluster broken, so that the campaign can go on: restart
    /// every node that is not healthy on its data directory; if that is not enough, replace
    /// those still unhealthy with fresh nodes. Says what it did in the fault's record;
    /// returns whether the cluster is whole again.
    pub async fn repair(&mut self, c: &mut Cluster) -> bool {
        for i in c.unhealthy().await {
            if let Some(node) = c.slots[i].node.take() {
                node.kill().await;
            }
            let id = c.slots[i].spec.id;
            let why = format!("repair after fault {}", self.seq);
            match c.start_node(i, &why).await {
                Ok(()) => self
                    .record_notes
                    .push(format!("repair: restarted node {id}")),
                Err(e) => self
                    .record_notes
                    .push(format!("repair: node {id} did not start: {e}")),
            }
        }
        if c.wait_whole(crate::cluster::RECOVERY).await.is_ok() {
            return true;
        }
        // Replacing needs a quorum of healthy voters, and replacing a majority would throw
        // the cluster's data away: only a minority is ever replaced.
        let unhealthy = c.unhealthy().await;
        if unhealthy.len() * 2 >= c.slots.len() {
            self.record_notes.push(format!(
                "repair: {} of {} nodes unhealthy after restarting them; not replacing a majority",
                unhealthy.len(),
                c.slots.len()
            ));
            return false;
        }
        for i in unhealthy {
            let id = c.slots[i].spec.id;
            match c.replace(i).await {
                Ok(new) => self
                    .record_notes
                    .push(format!("repair: replaced node {id} with node {new}")),
                Err(e) => self
                    .record_notes
                    .push(format!("repair: could not replace node {id}: {e}")),
            }
        }
        c.wait_whole(crate::cluster::RECOVERY).await.is_ok()
    }

    fn target(c: &Cluster, i: usize, leader: Option<usize>) -> Target {
        Target {
            slot: c.slots[i].index,
            node: c.slots[i].spec.id,
            leader: leader == Some(i),
        }
    }

    /// A slot position: the leader with probability `p_leader`, else another one.
    async fn pick(&mut self, c: &Cluster, p_leader: f64) -> (usize, Option<usize>) {
        let leader = c.leader().await.map(|(l, _)| l);
        let n = c.slots.len();
        match leader {
            Some(l) if self.rng.random_bool(p_leader) => (l, leader),
            Some(l) => {
                let others: Vec<usize> = (0..n).filter(|&i| i != l).collect();
                (others[self.rng.random_range(0..others.len())], leader)
            }
            None => (self.rng.random_range(0..n), None),
        }
    }

    fn crash_kind(&mut self) -> Crash {
        if self.rng.random_bool(0.25) {
            Crash::Torn
        } else {
            Crash::Clean
        }
    }

    async fn cut_power(&mut self, c: &mut Cluster, i: usize, crash: Crash) -> Result<(), String> {
        let report = c.cut(i, Some(crash)).await.map_err(|e| e.to_string())?;
        if crash == Crash::Torn && c.slots[i].fs.is_some() {
            self.counts.power_loss_torn += 1;
        }
        self.record_notes
            .push(format!("slot {} {crash:?}: {report}", c.slots[i].index));
        Ok(())
    }

    async fn power_loss(&mut self, c: &mut Cluster) -> Result<Injected, String> {
        let Some((leader, term)) = c.leader().await else {
            let (i, _) = self.pick(c, 0.0).await;
            let target = Self::target(c, i, None);
            let crash = self.crash_kind();
            self.cut_power(c, i, crash).await?;
            return Ok(Injected {
                variant: "no-leader".into(),
                targets: vec![target],
                detail: format!("{crash:?}"),
            });
        };
        let roll: f64 = self.rng.random();
        let mut targets = Vec::new();
        let variant;
        let detail: String;
        if roll < 0.2 {
            // The leader, then whoever the other two elect, right after they elect it.
            variant = "leader-then-new-leader";
            targets.push(Self::target(c, leader, Some(leader)));
            let crash = self.crash_kind();
            self.cut_power(c, leader, crash).await?;
            let Some((next, _)) = c
                .wait_new_leader(term, &[leader], Duration::from_secs(10))
                .await
            else {
                return Err("no new leader within 10 s after cutting the leader".into());
            };
            let delay = ms(&mut self.rng, 0, 300);
            tokio::time::sleep(delay).await;
            targets.push(Self::target(c, next, Some(next)));
            let crash2 = self.crash_kind();
            self.cut_power(c, next, crash2).await?;
            self.counts.power_loss_of_leader += 2;
            self.counts.power_loss_right_after_election += 1;
            self.counts.power_loss_two_in_a_row += 1;
            detail = format!(
                "{crash:?} then {crash2:?} {} ms after the election",
                delay.as_millis()
            );
        } else if roll < 0.45 {
            // Force an election, then cut the new leader.
            let via_handover = self.rng.random_bool(0.7);
            let others: Vec<usize> = (0..c.slots.len()).filter(|&i| i != leader).collect();
            let to = others[self.rng.random_range(0..others.len())];
            if via_handover {
                let _ = c
                    .api
                    .transfer_leader(&c.addr(leader), c.slots[to].spec.id)
                    .await;
            } else if let Some(node) = c.slots[leader].node.as_mut() {
                node.pause().await.map_err(|e| e.to_string())?;
            }
            let Some((next, _)) = c.wait_new_leader(term, &[], Duration::from_secs(10)).await
            else {
                return Err("no election within 10 s".into());
            };
            let delay = ms(&mut self.rng, 0, 300);
            tokio::time::sleep(delay).await;
            variant = if via_handover {
                "new-leader-after-handover"
            } else {
                "new-leader-after-pause"
            };
            targets.push(Self::target(c, next, Some(next)));
            let crash = self.crash_kind();
            self.cut_power(c, next, crash).await?;
            self.counts.power_loss_of_leader += 1;
            self.counts.power_loss_right_after_election += 1;
            detail = format!("{crash:?} {} ms after the election", delay.as_millis());
        } else if roll < 0.65 {
            variant = "leader";
            targets.push(Self::target(c, leader, Some(leader)));
            let crash = self.crash_kind();
            self.cut_power(c, leader, crash).await?;
            self.counts.power_loss_of_leader += 1;
            detail = format!("{crash:?}");
        } else {
            variant = "follower";
            let (i, l) = self.pick(c, 0.0).await;
            targets.push(Self::target(c, i, l));
            let crash = self.crash_kind();
            self.cut_power(c, i, crash).await?;
            if l == Some(i) {
                self.counts.power_loss_of_leader += 1;
            }
            detail = format!("{crash:?}");
        }
        let down = ms(&mut self.rng, 0, 2000);
        tokio::time::sleep(down).await;
        Ok(Injected {
            variant: variant.into(),
            targets,
            detail: format!("{detail}; down {} ms", down.as_millis()),
        })
    }

    async fn kill(&mut self, c: &mut Cluster) -> Result<Injected, String> {
        let (i, leader) = self.pick(c, 0.5).await;
        let target = Self::target(c, i, leader);
        c.cut(i, None).await.map_err(|e| e.to_string())?;
        let down = ms(&mut self.rng, 0, 1500);
        tokio::time::sleep(down).await;
        Ok(Injected {
            variant: if target.leader { "leader" } else { "follower" }.into(),
            targets: vec![target],
            detail: format!("down {} ms", down.as_millis()),
        })
    }

    async fn pause(&mut self, c: &mut Cluster) -> Result<Injected, String> {
        let (i, leader) = self.pick(c, 0.5).await;
        let target = Self::target(c, i, leader);
        let long = self.rng.random_bool(0.6);
        let length = if long {
            ms(&mut self.rng, 400, 4000)
        } else {
            ms(&mut self.rng, 30, 140)
        };
        let node = c.slots[i].node.as_mut().ok_or("no node to pause")?;
        node.pause().await.map_err(|e| e.to_string())?;
        tokio::time::sleep(length).await;
        node.resume().await.map_err(|e| e.to_string())?;
        let role = if target.leader { "leader" } else { "follower" };
        Ok(Injected {
            variant: format!("{role}-{}", if long { "long" } else { "short" }),
            targets: vec![target],
            detail: format!("{} ms", length.as_millis()),
        })
    }

    /// A random partition: its name, its rules and the nodes it cuts; `isolate_leader`
    /// forces the shape that cuts the leader off.
    async fn random_partition(
        &mut self,
        c: &Cluster,
        isolate_leader: bool,
    ) -> (String, Vec<Rule>, Vec<Target>) {
        let n = c.slots.len();
        let cut = if self.rng.random_bool(0.5) {
            Cut::Drop
        } else {
            Cut::Reset
        };
        let shape = if isolate_leader {
            1
        } else {
            self.rng.random_range(0..5)
        };
        let (x, leader) = self
            .pick(c, if shape == 1 { 1.0 } else { 1.0 / n as f64 })
            .await;
        let slot = |i: usize| i + 1;
        let peers: Vec<usize> = (0..n).filter(|&i| i != x).collect();
        let rules_for = |dirs: &[Direction]| -> Vec<Rule> {
            peers
                .iter()
                .flat_map(|&p| {
                    dirs.iter().map(move |&direction| Rule {
                        slot: slot(x),
                        peer: slot(p),
                        direction,
                        cut,
                    })
                })
                .collect()
        };
        let both = [Direction::Inbound, Direction::Outbound];
        let (name, rules, targets) = match shape {
            0 | 1 => (
                if leader == Some(x) {
                    "isolate-leader"
                } else {
                    "isolate-follower"
                },
                rules_for(&both),
                vec![Self::target(c, x, leader)],
            ),
            2 => (
                "inbound-loss",
                rules_for(&[Direction::Inbound]),
                vec![Self::target(c, x, leader)],
            ),
            3 => (
                "outbound-loss",
                rules_for(&[Direction::Outbound]),
                vec![Self::target(c, x, leader)],
            ),
            _ => {
                // x is the bridge: it talks to both others, which cannot talk to each other.
                let (b, d) = (peers[0], peers[1]);
                let rules = both
                    .iter()
                    .map(|&direction| Rule {
                        slot: slot(b),
                        peer: slot(d),
                        direction,
                        cut,
                    })
                    .collect();
                (
                    "bridge",
                    rules,
                    vec![
                        Self::target(c, x, leader),
                        Self::target(c, b, leader),
                        Self::target(c, d, leader),
                    ],
                )
            }
        };
        let how = if cut == Cut::Drop { "drop" } else { "reset" };
        (format!("{name}-{how}"), rules, targets)
    }

    async fn partition(&mut self, c: &mut Cluster) -> Result<Injected, String> {
        // Now and then the leader stays cut off long enough for the others to commit, snapshot
        // and purge past it, so that it must catch up by snapshot while its own proposals are
        // still pending.
        let long = self.rng.random_bool(1.0 / 40.0);
        let (name, rules, targets) = self.random_partition(c, long).await;
        c.network.cut(&rules).await.map_err(|e| e.to_string())?;
        let hold = if long {
            LONG_ISOLATION
        } else {
            ms(&mut self.rng, 1000, 8000)
        };
        tokio::time::sleep(hold).await;
        Ok(Injected {
            variant: if long { format!("long-{name}") } else { name },
            targets,
            detail: format!(
                "{} ms; rules {}",
                hold.as_millis(),
                serde_json::to_string(&rules).unwrap_or_default()
            ),
        })
    }

    /// Several faults on top of each other without healing in between: power cuts,
    /// restarts, partitions changing shape, pauses, a few hundred milliseconds apart. The
    /// review's worst sequences (an older term's entry committed after an election, then
    /// overwritten) need such interleavings; single healed faults never build them.
    async fn combined(&mut self, c: &mut Cluster) -> Result<Injected, String> {
        let steps = self.rng.random_range(3..=6);
        let mut done = Vec::new();
        let mut targets = Vec::new();
        for _ in 0..steps {
            let down: Vec<usize> = (0..c.slots.len())
                .filter(|&i| c.slots[i].node.is_none())
                .collect();
            match self.rng.random_range(0..6) {
                0 | 1 if down.len() < 2 => {
                    let (i, l) = self.pick(c, 0.6).await;
                    if c.slots[i].node.is_none() {
                        continue;
                    }
                    targets.push(Self::target(c, i, l));
                    let crash = self.crash_kind();
                    self.cut_power(c, i, crash).await?;
                    if l == Some(i) {
                        self.counts.power_loss_of_leader += 1;
                    }
                    done.push(format!("power cut slot {}", i + 1));
                }
                0..=2 if !down.is_empty() => {
                    let i = down[self.rng.random_range(0..down.len())];
                    match c.start_node(i, "restart inside a combined fault").await {
                        Ok(()) => done.push(format!("restart slot {}", i + 1)),
                        Err(e) => done.push(format!("restart slot {} failed: {e}", i + 1)),
                    }
                }
                3 => {
                    c.network.heal().await.map_err(|e| e.to_string())?;
                    let isolate_leader = self.rng.random_bool(0.3);
                    let (name, rules, _) = self.random_partition(c, isolate_leader).await;
                    c.network.cut(&rules).await.map_err(|e| e.to_string())?;
                    done.push(name);
                }
                4 => {
                    c.network.heal().await.map_err(|e| e.to_string())?;
                    done.push("heal partitions".into());
                }
                _ => {
                    let (i, l) = self.pick(c, 0.5).await;
                    let length = ms(&mut self.rng, 100, 1500);
                    if let Some(node) = c.slots[i].node.as_mut() {
                        node.pause().await.map_err(|e| e.to_string())?;
                        tokio::time::sleep(length).await;
                        node.resume().await.map_err(|e| e.to_string())?;
                        targets.push(Self::target(c, i, l));
                        done.push(format!("pause slot {} {} ms", i + 1, length.as_millis()));
                    }
                }
            }
            let gap = ms(&mut self.rng, 0, 500);
            tokio::time::sleep(gap).await;
        }
        Ok(Injected {
            variant: format!("{steps}-steps"),
            targets,
            detail: done.join(", "),
        })
    }

    async fn clock(&mut self, c: &mut Cluster) -> Result<Injected, String> {
        let (i, leader) = self.pick(c, 0.5).await;
        let target = Self::target(c, i, leader);
        let forward = self.rng.random_bool(0.5);
        let (scale, secs) = match self.rng.random_range(0..3) {
            0 => ("seconds", self.rng.random_range(1..=30)),
            1 => ("minutes", self.rng.random_range(60..=1800)),
            _ => ("hours", self.rng.random_range(3600..=6 * 3600)),
        };
        let offset: i64 = if forward { secs } else { -secs };
        c.slots[i]
            .clock
            .set_offset(offset)
            .map_err(|e| format!("cannot write the clock file: {e}"))?;
        let verified = if forward && secs >= 5 {
            let seen = self.node_clock_follows(c, i, offset).await;
            if seen {
                self.clock_checks.0 += 1;
            } else {
                self.clock_checks.1 += 1;
            }
            format!("; node clock seen moved: {seen}")
        } else {
            String::new()
        };
        let hold = ms(&mut self.rng, 1000, 5000);
        tokio::time::sleep(hold).await;
        Ok(Injected {
            variant: format!("{}-{scale}", if forward { "forward" } else { "backward" }),
            targets: vec![target],
            detail: format!("offset {offset} s for {} ms{verified}", hold.as_millis()),
        })
    }

    /// Whether the node's HTTP `Date` shows the offset within 2 s.
    async fn node_clock_follows(&self, c: &Cluster, i: usize, offset: i64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(node_secs) = c.api.wall_clock_secs(&c.addr(i)).await {
                let want = crate::clock::now_secs() as i64 + offset;
                if (node_secs as i64 - want).abs() <= 2 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn membership(&mut self, c: &mut Cluster) -> Result<Injected, String> {
        let (i, leader) = self.pick(c, 0.0).await;
        if leader == Some(i) {
            return Err("no follower to replace".into());
        }
        let target = Self::target(c, i, leader);
        let old = target.node;
        let new = c.replace(i).await.map_err(|e| e.to_string())?;
        Ok(Injected {
            variant: "replace-follower".into(),
            targets: vec![target],
            detail: format!("node {new} joined in place of node {old}, which was removed"),
        })
    }
}
