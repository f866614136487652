//! Who holds the antennas when a site's node is lost, and when it returns (issue 14).
//!
//! Every node replicates the whole image, so the nodes still up can take the antennas of a
//! lost site over. Control of each cell site lives in the log
//! ([`sonraft_raft::model::control`]): moves are proposed by the leader and judged on apply,
//! and each raises the cell site's epoch, which the antennas fence on.
//!
//! - **Claim.** The leader knows when each voter last accepted its AppendEntries (the
//!   [`AckClock`](sonraft_raft::transport::AckClock) the reads use; a new leader counts from
//!   its election). A cell site whose controlling site has had no voter heard for
//!   [`ControlTiming::claim_after`] moves to a surviving site: its home if that is back, else
//!   the survivor rendezvous hashing picks for it, so the lost site's cells spread over the
//!   survivors and every leader picks the same.
//! - **Lease.** A node pushes configuration to its antennas only while it can prove it still
//!   belongs to the majority: as leader, a majority accepted its AppendEntries within
//!   [`ControlTiming::lease`]; as follower, it heard a leader within the lease. The lease is a
//!   third of the claim time, so a node cut off from the others stops pushing well before
//!   the leader on the other side moves its cell sites. It keeps reading counters.
//! - **Fence.** A move's epoch is its log index. A session says its epoch in its hello and in
//!   every push; an antenna refuses an epoch older than the newest it has seen, and the session
//!   that gets that refusal stops controlling the cell until the image gives its node a newer
//!   epoch. A node that restarts with a stale image is fenced the same way.
//! - **Hand-back.** With `auto` (the default), once a site's node has been heard and caught up
//!   (its log within [`CAUGHT_UP_ENTRIES`] of the leader's) for [`ControlTiming::hold`], the
//!   leader moves its cell sites home; with `manual`, `POST /control/hand-back` does
//!   (`ctl control hand-back SITE`).
//!
//! Regions no member serves (an image naming sites without a node) are left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use openraft::ServerState;
use sonraft_raft::command::{Command, Response};
use sonraft_raft::model::Site;
use sonraft_raft::model::control::{ControlMove, ControlMoves, MAX_MOVES};
use sonraft_raft::model::image::NetworkImage;

use crate::Node;
use crate::config::{HandBack, Timing};

/// A node's log within this many entries of the leader's counts as caught up.
pub const CAUGHT_UP_ENTRIES: u64 = 64;
/// Moves per `Control` entry (a lost site of 20,000 cell sites takes a few entries).
const MOVES_PER_ENTRY: usize = 5_000;
/// How often the leader looks.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// When antennas move between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlTiming {
    /// A controlling site unheard this long loses its cell sites.
    pub claim_after: Duration,
    /// A node pushes to its antennas only with proof of the majority this recent.
    pub lease: Duration,
    pub hand_back: HandBack,
    /// A returning site heard and caught up this long gets its cell sites back (`auto`).
    pub hold: Duration,
}

impl ControlTiming {
    pub fn new(
        timing: Timing,
        claim_ms: Option<u64>,
        hand_back: Option<HandBack>,
        hold_ms: Option<u64>,
        election_max_ms: u64,
    ) -> anyhow::Result<ControlTiming> {
        let (claim_default, hold_default) = match timing {
            Timing::Loopback => (4_000, 5_000),
            Timing::Wan => (30_000, 60_000),
        };
        // The lease, a third of it, must outlast an election or every leader change would stop
        // the pushes of every node: slow election timing raises the default.
        let claim_ms = claim_ms.unwrap_or(claim_default.max(3 * election_max_ms));
        if claim_ms < 3 * election_max_ms {
            bail!(
                "control_claim_ms ({claim_ms}) must be at least three election timeouts ({} ms): a node stops pushing to its antennas after a third of it without a leader",
                3 * election_max_ms
            );
        }
        Ok(ControlTiming {
            claim_after: Duration::from_millis(claim_ms),
            lease: Duration::from_millis(claim_ms / 3),
            hand_back: hand_back.unwrap_or_default(),
            hold: Duration::from_millis(hold_ms.unwrap_or(hold_default)),
        })
    }
}

impl fmt::Display for ControlTiming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "claim after {} ms unheard, lease {} ms, hand-back {}",
            self.claim_after.as_millis(),
            self.lease.as_millis(),
            match self.hand_back {
                HandBack::Auto => format!("automatic after {} ms", self.hold.as_millis()),
                HandBack::Manual => "manual".into(),
            }
        )
    }
}

/// What the leader knows of one sonraft site's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SiteHealth {
    /// How long the site's most recently heard voter has been silent.
    pub silent: Duration,
    /// Heard within the claim time.
    pub heard: bool,
    /// Heard within the lease and caught up, without a break, for the hold time.
    pub settled: bool,
}

/// Which survivor takes `cell_site`: the highest rendezvous hash, so each survivor gets an
/// equal share and a survivor's loss moves only its own share.
fn rendezvous<'a>(cell_site: &str, survivors: &[&'a str]) -> Option<&'a str> {
    fn fnv(parts: &[&str]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in parts {
            for b in p.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
    survivors
        .iter()
        .max_by_key(|s| (fnv(&[cell_site, s]), **s))
        .copied()
}

/// The moves the leader proposes, each with its reason: cell sites of unheard sites to
/// survivors, and (with `auto`) cell sites away from home back to their settled home.
pub fn plan(
    image: &NetworkImage,
    health: &BTreeMap<String, SiteHealth>,
    hand_back: HandBack,
) -> Vec<(ControlMove, String)> {
    let survivors: Vec<&str> = health
        .iter()
        .filter(|(_, h)| h.heard)
        .map(|(s, _)| s.as_str())
        .collect();
    let settled = |site: &str| health.get(site).is_some_and(|h| h.settled);
    let mut moves = Vec::new();
    for site in looked_at(image, health) {
        let Some((ctrl, epoch)) = image.controller(&site.id) else {
            continue;
        };
        let home = site.region.as_str();
        let (to, why) = match health.get(ctrl) {
            Some(h) if h.heard => {
                if ctrl == home || hand_back == HandBack::Manual || !settled(home) {
                    continue;
                }
                (home, format!("{home} is back and caught up"))
            }
            // A region no member serves: nobody controls it, nobody claims it.
            None if ctrl == home => continue,
            unheard => {
                let why = match unheard {
                    Some(h) => format!("{ctrl} unheard for {:.1} s", h.silent.as_secs_f64()),
                    None => format!("{ctrl} has no node in the cluster"),
                };
                let to = if settled(home) && home != ctrl {
                    Some(home)
                } else {
                    rendezvous(&site.id, &survivors)
                };
                let Some(to) = to else { continue };
                (to, why)
            }
        };
        moves.push((
            ControlMove {
                cell_site: site.id.clone(),
                from: ctrl.to_string(),
                epoch,
                to: to.to_string(),
            },
            why,
        ));
    }
    moves
}

/// The cell sites [`plan`] looks at, in the image's order: every one while a site is unheard;
/// else only those whose control has ever moved (in the image's `control`), as a cell site at
/// home moves only when its home is unheard.
///
/// The leader looks every [`LOOK_EVERY`]; at a national image's 100,000 cell sites a walk over
/// all of them took 10-25 ms, and under the state lock every change set applied meanwhile
/// waited for it (`sonraft bench scale`: 54 of 9,344 change sets over 10 ms, one every look).
fn looked_at<'a>(
    image: &'a NetworkImage,
    health: &BTreeMap<String, SiteHealth>,
) -> Box<dyn Iterator<Item = &'a Site> + 'a> {
    if walks_every_site(health) {
        Box::new(image.sites.values())
    } else {
        Box::new(image.control.keys().filter_map(|id| image.sites.get(id)))
    }
}

/// Whether [`plan`] walks every cell site: while a site is unheard.
fn walks_every_site(health: &BTreeMap<String, SiteHealth>) -> bool {
    health.values().any(|h| !h.heard)
}

/// The moves that hand `site`'s cell sites back to it (`POST /control/hand-back`).
pub fn hand_back_moves(image: &NetworkImage, site: &str) -> Vec<ControlMove> {
    image
        .sites
        .values()
        .filter(|s| s.region == site)
        .filter_map(|s| {
            let (ctrl, epoch) = image.controller(&s.id)?;
            (ctrl != site).then(|| ControlMove {
                cell_site: s.id.clone(),
                from: ctrl.to_string(),
                epoch,
                to: site.to_string(),
            })
        })
        .collect()
}

/// Per sonraft site, how many cell sites it controls, and the moved ones.
pub fn summary(image: &NetworkImage) -> sonraft_client::v1::ControlSummary {
    let mut sites: BTreeMap<String, sonraft_client::v1::SiteControl> = BTreeMap::new();
    let mut moved = Vec::new();
    for s in image.sites.values() {
        let Some((ctrl, epoch)) = image.controller(&s.id) else {
            continue;
        };
        let entry = sites.entry(ctrl.to_string()).or_default();
        entry.cell_sites += 1;
        if ctrl != s.region {
            entry.taken_over += 1;
            if moved.len() < 1_000 {
                moved.push(sonraft_client::v1::MovedCellSite {
                    cell_site: s.id.clone(),
                    home: s.region.clone(),
                    controller: ctrl.to_string(),
                    epoch,
                    since_ms: image.control.get(&s.id).map_or(0, |c| c.since_ms),
                });
            }
        }
    }
    sonraft_client::v1::ControlSummary {
        away_from_home: sites.values().map(|s| s.taken_over).sum(),
        sites,
        moved,
    }
}

impl Node {
    /// The sites the cluster's members serve.
    pub fn member_sites(&self) -> BTreeSet<String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.site.clone())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Whether this node may push configuration to its antennas: `Err` says why not.
    pub fn control_lease(&self) -> Result<(), String> {
        let lease = self.config.control.lease;
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() {
            return Err("the node is not part of a cluster yet".into());
        }
        if m.state == ServerState::Leader {
            if membership.voter_ids().all(|v| v == self.id) {
                return Ok(());
            }
            return match self.quorum_silence() {
                Some(s) if s < lease => Ok(()),
                Some(s) => Err(format!(
                    "this leader has heard from no majority for {:.1} s",
                    s.as_secs_f64()
                )),
                None => Err("this leader has not heard from a majority yet".into()),
            };
        }
        if m.current_leader.is_none() {
            return Err("no leader is known".into());
        }
        let silence = self.contact.silence();
        if !self.contact.heard() || silence >= lease {
            return Err(format!(
                "no leader heard for {:.1} s",
                silence.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Proposes `moves` in entries of at most [`MOVES_PER_ENTRY`]; how many applied, and the
    /// refusals.
    pub async fn move_control(
        &self,
        moves: Vec<ControlMove>,
        reason: &str,
    ) -> Result<(u64, Vec<String>), crate::propose::ProposeError> {
        let mut applied = 0;
        let mut refused = Vec::new();
        for chunk in moves.chunks(MOVES_PER_ENTRY.min(MAX_MOVES)) {
            let command = Command::Control(ControlMoves {
                moves: chunk.to_vec(),
                reason: reason.chars().take(200).collect(),
            });
            let (_, response) = self.submit(&command).await?;
            let Response::Control(results) = response else {
                return Err(crate::propose::ProposeError::UnexpectedAnswer(format!(
                    "a control command answered {response:?}"
                )));
            };
            for (m, r) in chunk.iter().zip(results) {
                match r {
                    Ok(_) => applied += 1,
                    Err(e) => refused.push(format!("{}: {e}", m.cell_site)),
                }
            }
        }
        Ok((applied, refused))
    }
}

/// The leader's view of the sites, kept across looks within one term.
#[derive(Default)]
struct Watch {
    vote: Option<openraft::Vote<u64>>,
    /// When this node's current leadership began (silence counts from there at most).
    since: Option<Instant>,
    /// Per site, since when it has been heard and caught up without a break.
    settled_since: HashMap<String, Instant>,
}

impl Watch {
    fn health(&mut self, node: &Node, now: Instant) -> Option<BTreeMap<String, SiteHealth>> {
        let m = node.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            *self = Watch::default();
            return None;
        }
        if self.vote != Some(m.vote) {
            *self = Watch {
                vote: Some(m.vote),
                since: Some(now),
                settled_since: HashMap::new(),
            };
        }
        let since = self.since.unwrap_or(now);
        let acks = node.reads.acks();
        let now_us = acks.now_us();
        let timing = node.config.control;
        let last_log = m.last_log_index.unwrap_or(0);
        let matched: BTreeMap<u64, u64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, l)| (*id, l.map_or(0, |l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut sites: BTreeMap<String, SiteHealth> = BTreeMap::new();
        for (id, info) in membership.nodes() {
            if !voters.contains(id) || info.site.is_empty() {
                continue;
            }
            let silent = if *id == node.id {
                Duration::ZERO
            } else {
                match acks.last_accepted(&m.vote, *id) {
                    Some(t) => Duration::from_micros(now_us.saturating_sub(t)),
                    None => now - since,
                }
            };
            let caught_up = *id == node.id
                || matched
                    .get(id)
                    .is_some_and(|i| i + CAUGHT_UP_ENTRIES >= last_log);
            let fresh = silent < timing.lease && caught_up;
            let h = sites.entry(info.site.clone()).or_insert(SiteHealth {
                silent,
                ..SiteHealth::default()
            });
            h.silent = h.silent.min(silent);
            h.heard = h.silent < timing.claim_after;
            // Settled below, from the freshest of the site's voters.
            h.settled |= fresh;
        }
        for (site, h) in &mut sites {
            if h.settled {
                let t = *self.settled_since.entry(site.clone()).or_insert(now);
                h.settled = now - t >= timing.hold;
            } else {
                self.settled_since.remove(site);
            }
        }
        Some(sites)
    }
}

/// How often a node checks its control lease.
const LEASE_EVERY: Duration = Duration::from_millis(100);

/// Keeps the fleet's lease in line with [`Node::control_lease`] for the life of the node.
pub async fn keep_lease(node: Arc<Node>, fleet: Arc<crate::antennas::fleet::Fleet>) {
    loop {
        fleet.set_lease(node.control_lease());
        tokio::time::sleep(LEASE_EVERY).await;
    }
}

/// The leader's look at the sites, for the life of the node: proposes the moves [`plan`] finds.
pub async fn run(node: Arc<Node>) {
    let mut watch = Watch::default();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let Some(health) = watch.health(&node, Instant::now()) else {
            continue;
        };
        let hand_back = node.config.control.hand_back;
        let planned = if walks_every_site(&health) {
            // On a copy: a walk over every cell site, not under the state lock.
            let view = node.store().with_image(NetworkImage::control_copy);
            plan(&view, &health, hand_back)
        } else {
            // Only the cell sites that ever moved: not worth a copy of them.
            node.store()
                .with_image(|image| plan(image, &health, hand_back))
        };
        if planned.is_empty() {
            continue;
        }
        // One reason an entry: group the moves by it.
        let mut by_reason: BTreeMap<String, Vec<ControlMove>> = BTreeMap::new();
        for (m, why) in planned {
            by_reason.entry(why).or_default().push(m);
        }
        for (why, moves) in by_reason {
            let n = moves.len();
            let mut to: BTreeMap<String, usize> = BTreeMap::new();
            for m in &moves {
                *to.entry(m.to.clone()).or_default() += 1;
            }
            match node.move_control(moves, &why).await {
                Ok((applied, refused)) => {
                    metrics::counter!("sonraft_control_moves_total").increment(applied);
                    tracing::info!(
                        applied,
                        refused = refused.len(),
                        to = ?to,
                        "{why}: {applied} of {n} cell sites moved"
                    );
                    if let Some(first) = refused.first() {
                        tracing::debug!(first = %first, "control moves refused (a newer view won)");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "{why}: control moves not proposed; will look again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonraft_raft::command::ImageImport;
    use sonraft_raft::model::image::Changes;

    fn image(sites: &[(&str, &str)]) -> NetworkImage {
        let sites = sites
            .iter()
            .map(|(id, region)| {
                serde_json::from_value(serde_json::json!({
                    "id": id, "name": id, "lat": 48.0, "lon": 11.0, "region": region
                }))
                .unwrap()
            })
            .collect();
        let mut img = NetworkImage::default();
        let import = ImageImport {
            sites,
            ..Default::default()
        };
        img.apply(1, &Command::Import(import), &mut Changes::default());
        img
    }

    fn health(list: &[(&str, bool, bool)]) -> BTreeMap<String, SiteHealth> {
        list.iter()
            .map(|(s, heard, settled)| {
                let h = SiteHealth {
                    silent: if *heard {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(9)
                    },
                    heard: *heard,
                    settled: *settled,
                };
                (s.to_string(), h)
            })
            .collect()
    }

    fn apply(img: &mut NetworkImage, index: u64, moves: Vec<ControlMove>) {
        let command = Command::Control(ControlMoves {
            moves,
            reason: "test".into(),
        });
        img.apply(index, &command, &mut Changes::default());
    }

    #[test]
    fn a_lost_sites_cell_sites_spread_over_the_survivors_and_nothing_else_moves() {
        let cell_sites: Vec<(String, &str)> = (0..60)
            .map(|i| (format!("S{i:03}"), ["site-1", "site-2", "site-3"][i % 3]))
            .collect();
        let list: Vec<(&str, &str)> = cell_sites.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        let img = image(&list);
        let all_up = health(&[
            ("site-1", true, true),
            ("site-2", true, true),
            ("site-3", true, true),
        ]);
        assert!(plan(&img, &all_up, HandBack::Auto).is_empty());
        let lost = health(&[
            ("site-1", true, true),
            ("site-2", false, false),
            ("site-3", true, true),
        ]);
        let moves = plan(&img, &lost, HandBack::Auto);
        assert_eq!(moves.len(), 20, "every cell site of site-2, nothing else");
        assert!(
            moves
                .iter()
                .all(|(m, _)| m.from == "site-2" && m.epoch == 0)
        );
        let to_1 = moves.iter().filter(|(m, _)| m.to == "site-1").count();
        assert!(
            (5..=15).contains(&to_1),
            "spread over both survivors: {to_1} of 20 to site-1"
        );
        assert!(
            moves[0].1.contains("site-2 unheard for 9.0 s"),
            "{}",
            moves[0].1
        );
        // The same plan from any leader.
        assert_eq!(moves, plan(&img, &lost, HandBack::Auto));
    }

    #[test]
    fn while_every_site_is_heard_the_look_passes_only_the_cell_sites_that_moved() {
        let cell_sites: Vec<(String, &str)> = (0..3_000)
            .map(|i| (format!("S{i:04}"), ["site-1", "site-2", "site-3"][i % 3]))
            .collect();
        let list: Vec<(&str, &str)> = cell_sites.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        let mut img = image(&list);
        let up = health(&[
            ("site-1", true, true),
            ("site-2", true, true),
            ("site-3", true, true),
        ]);
        let ids = |h: &BTreeMap<String, SiteHealth>, img: &NetworkImage| -> Vec<String> {
            looked_at(img, h).map(|s| s.id.clone()).collect()
        };
        assert!(ids(&up, &img).is_empty(), "nothing moved, nobody unheard");
        let lost = health(&[
            ("site-1", true, true),
            ("site-2", false, false),
            ("site-3", true, true),
        ]);
        assert_eq!(
            ids(&lost, &img).len(),
            3_000,
            "an unheard site: every cell site"
        );
        let moves = plan(&img, &lost, HandBack::Auto);
        apply(&mut img, 10, moves.into_iter().map(|(m, _)| m).collect());
        let moved = ids(&up, &img);
        assert_eq!(moved.len(), 1_000, "site-2's cell sites, away from home");
        assert!(
            moved.windows(2).all(|w| w[0] < w[1]),
            "in the image's order"
        );
        // The moved ones go home as a walk over every cell site would send them.
        let home = plan(&img, &up, HandBack::Auto);
        assert_eq!(home.len(), 1_000);
        assert!(home.iter().all(|(m, _)| m.to == "site-2"));
        // The copy the leader looks at outside the state lock plans the same.
        assert_eq!(plan(&img.control_copy(), &up, HandBack::Auto), home);
    }

    #[test]
    fn cell_sites_go_home_once_it_is_settled_with_auto_and_only_on_request_with_manual() {
        let mut img = image(&[("A", "site-1"), ("B", "site-1"), ("C", "site-2")]);
        let lost = health(&[("site-1", false, false), ("site-2", true, true)]);
        let moves: Vec<ControlMove> = plan(&img, &lost, HandBack::Auto)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(moves.len(), 2);
        apply(&mut img, 10, moves);
        assert_eq!(img.controller("A"), Some(("site-2", 10)));
        // Back but not settled yet: nothing moves.
        let back = health(&[("site-1", true, false), ("site-2", true, true)]);
        assert!(plan(&img, &back, HandBack::Auto).is_empty());
        // Settled: home, at a newer epoch.
        let settled = health(&[("site-1", true, true), ("site-2", true, true)]);
        assert!(plan(&img, &settled, HandBack::Manual).is_empty());
        let home = plan(&img, &settled, HandBack::Auto);
        assert_eq!(home.len(), 2);
        assert!(home.iter().all(|(m, why)| m.to == "site-1"
            && m.from == "site-2"
            && m.epoch == 10
            && why.contains("back")));
        // Manual: the operator's request makes the same moves.
        assert_eq!(
            hand_back_moves(&img, "site-1"),
            home.into_iter().map(|(m, _)| m).collect::<Vec<_>>()
        );
        assert!(hand_back_moves(&img, "site-2").is_empty());
    }

    #[test]
    fn a_region_without_a_node_is_left_alone_and_a_settled_home_wins_over_hashing() {
        let mut img = image(&[("A", "site-1"), ("Z", "nowhere")]);
        let h = health(&[
            ("site-1", false, false),
            ("site-2", true, true),
            ("site-3", true, true),
        ]);
        let moves = plan(&img, &h, HandBack::Auto);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].0.cell_site, "A");
        // A at site-3, which is then lost while site-1 is back: A goes home, not to site-2.
        apply(
            &mut img,
            5,
            vec![ControlMove {
                cell_site: "A".into(),
                from: "site-1".into(),
                epoch: 0,
                to: "site-3".into(),
            }],
        );
        let h = health(&[
            ("site-1", true, true),
            ("site-2", true, true),
            ("site-3", false, false),
        ]);
        let moves = plan(&img, &h, HandBack::Manual);
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].0.to.as_str(), moves[0].0.epoch), ("site-1", 5));
    }

    #[test]
    fn the_claim_time_must_outlast_three_elections() {
        let t = ControlTiming::new(Timing::Loopback, None, None, None, 300).unwrap();
        assert_eq!(t.claim_after, Duration::from_secs(4));
        assert_eq!(t.lease, Duration::from_millis(1333));
        let t = ControlTiming::new(Timing::Wan, None, Some(HandBack::Manual), None, 2000).unwrap();
        assert_eq!(
            (t.claim_after, t.hold),
            (Duration::from_secs(30), Duration::from_secs(60))
        );
        assert!(ControlTiming::new(Timing::Wan, Some(5_000), None, None, 2000).is_err());
        // Slow election timing on loopback raises the default instead of refusing the node.
        let t = ControlTiming::new(Timing::Loopback, None, None, None, 2500).unwrap();
        assert_eq!(t.claim_after, Duration::from_millis(7500));
    }
}
