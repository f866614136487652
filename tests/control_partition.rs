//! A site's node that is alive but cut off from the others stops pushing configuration to its
//! antennas once it cannot prove it belongs to the majority, before the others take its
//! antennas over; when the cut heals, it gets them back (issue 14, partition variant).
//!
//! A real partition: each node runs in its own network namespace (`sonraft_testkit::netns`),
//! the simulator in the root namespace on the bridge, so every node keeps its antennas and the
//! test keeps every admin API; the cut drops node 3's Raft traffic with nodes 1 and 2, both
//! ways, once with node 3 following and once with it leading (a leader nothing deposes).
//! Loopback timing: lease 1.33 s, claim after 4 s, hand-back after 5 s.
//!
//! For node 3 to have something to push at the cut, the simulator acknowledges every push
//! with the cell's old hysteresis (`--faulty-every 1`) and the test changes one site-3 cell's
//! hysteresis: node 3 then re-pushes it about every 500 ms for as long as it may.
//!
//! Needs root and `ip`/`iptables`. Without them the test says why and passes, unless
//! `SONRAFT_REQUIRE_NETNS` is set, as `.ci/run` sets it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sonraft_client::v1;
use sonraft_testkit::local_cluster::SimProc;
use sonraft_testkit::netns::{self, SiteNetwork};

const REGIONS: &str = "site-1,site-2,site-3";
const CELLS: &str = "60";
/// Every node listens on these inside its own namespace.
const RAFT_PORT: u16 = 7001;
const API_PORT: u16 = 7080;
/// `--control-claim-ms` with loopback timing, and the lease, a third of it.
const CLAIM: Duration = Duration::from_secs(4);
const LEASE: Duration = Duration::from_millis(1333);
/// A push node 3 had in flight when its lease ran out may still land this long after.
const IN_FLIGHT: Duration = Duration::from_millis(500);
/// The node whose site is cut off, and its position in the cluster.
const CUT: usize = 3;
const CUT_POS: usize = CUT - 1;

/// The namespaces, or why there are none. Without them the test is skipped (`None`), unless
/// `SONRAFT_REQUIRE_NETNS` is set.
fn network() -> Option<SiteNetwork> {
    let why = match netns::unavailable() {
        Some(why) => why,
        None => match SiteNetwork::create(3) {
            Ok(n) => return Some(n),
            Err(e) => format!("cannot make network namespaces: {e:#}"),
        },
    };
    assert!(
        std::env::var_os("SONRAFT_REQUIRE_NETNS").is_none(),
        "SONRAFT_REQUIRE_NETNS is set but {why}"
    );
    eprintln!("skipped: {why}");
    None
}

async fn away_from_home(c: &Cluster, pos: usize) -> Option<u64> {
    let r = c.client.get(&c.nodes[pos].api, "/control").await.ok()?;
    serde_json::from_slice::<v1::ControlSummary>(&r.body)
        .ok()
        .map(|s| s.away_from_home)
}

/// Of `cells`, those without an entry in `sessions`, as an error for [`until`].
fn all_of(cells: &BTreeSet<String>, sessions: &BTreeMap<String, (u64, u64)>) -> Result<(), String> {
    let missing: Vec<_> = cells
        .iter()
        .filter(|x| !sessions.contains_key(*x))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} missing: {missing:?}",
            missing.len(),
            cells.len()
        ))
    }
}

/// Configurations the simulated antennas applied from node `id`.
fn applied_by(state: &Value, id: usize) -> u64 {
    state["fencing"]["applied_by_controller"][id.to_string()]
        .as_u64()
        .unwrap_or(0)
}

/// The cells of region `site` in the image.
/// The simulator's state, after checking that no antenna applied a configuration
/// from a stale controller, nor from two controllers at one epoch (the simulator's log says
/// which cell, which epoch and which nodes).
async fn no_fencing_failure(sim: &SimProc, c: &Cluster, dir: &std::path::Path) -> Value {
    let state = sim.state(&c.client).await.expect("simulator state");
    let fencing = &state["fencing"];
    if fencing["stale_applied"] != 0 || fencing["epoch_conflicts"] != 0 {
        let log = std::fs::read_to_string(dir.join("sim.log")).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        panic!("fencing failed: {fencing}\n{}", errors.join("\n"));
    }
    state
}

/// One look at the cut-off node and its antennas.
#[derive(Debug)]
struct Sample {
    at: Duration,
    lease: Option<bool>,
    applied: u64,
    claimed: bool,
}

/// What the cut-off node is when the cut comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It goes on believing it leads (nothing deposes it) and must see that no majority
    /// answers it.
    Leader,
    /// It loses its leader.
    Follower,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_follower_stops_pushing_before_its_antennas_are_claimed_and_gets_them_back() {
    cut_off(Role::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_stops_pushing_before_its_antennas_are_claimed_and_gets_them_back() {
    cut_off(Role::Leader).await;
}

/// Makes node `id` the leader, unless it is.
async fn make_leader(c: &Cluster, id: u64) {
    let leader = c.leader().await;
    if c.nodes[leader].id == id {
        return;
    }
    let r = c
        .client
        .post(
            &c.nodes[leader].api,
            "/cluster/leader",
            &json!({ "id": id }),
        )
        .await
        .expect("an answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    until(Duration::from_secs(10), "the hand-over", || async {
        let now = c.nodes[c.leader().await].id;
        if now == id {
            Ok(())
        } else {
            Err(format!("node {now} leads"))
        }
    })
    .await;
}

/// Node 3, in `role`, is cut off from nodes 1 and 2 while it has a push to repeat; then the
/// cut heals.
async fn cut_off(role: Role) {
    // Dropped last: it kills what still runs in the namespaces and removes them.
    let Some(net) = network() else { return };
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("{}:0", net.root_ip());
    let sim = SimProc::start(
        binary(),
        dir.path(),
        &[
            "--cells",
            CELLS,
            "--period-ms",
            "500",
            "--regions",
            REGIONS,
            "--faulty-every",
            "1",
            "--listen",
            &listen,
        ],
    )
    .expect("simulator");
    let antenna_list = sim.antennas.join(",");
    let c = start_in_namespaces(&net, 3, RAFT_PORT, API_PORT, &["--antennas", &antenna_list]).await;
    c.import(&sim_export(CELLS, REGIONS, &[])).await;
    let (cut_cells, _) = region_cells(&c, &format!("site-{CUT}")).await;
    assert!(
        cut_cells.len() >= 15,
        "{} cells in site-{CUT}",
        cut_cells.len()
    );
    until(
        Duration::from_secs(30),
        "site-3's sessions on node 3",
        || async {
            let a = c.antennas(CUT_POS).await.ok_or("no /antennas")?;
            let up: BTreeSet<&str> = a
                .sessions
                .iter()
                .filter(|s| s.connected && s.fenced.is_none())
                .map(|s| s.cell.as_str())
                .collect();
            let missing = cut_cells
                .iter()
                .filter(|x| !up.contains(x.as_str()))
                .count();
            let lease = a.control.is_some_and(|k| k.lease);
            if missing == 0 && lease {
                Ok(())
            } else {
                Err(format!("{missing} sessions missing, lease {lease}"))
            }
        },
    )
    .await;
    assert_eq!(away_from_home(&c, 0).await, Some(0), "before the cut");

    // Give node 3 something to push: an operator change to one of its cells' hysteresis,
    // which the antenna never takes, so node 3 keeps re-pushing it.
    let cell = cut_cells.first().unwrap().clone();
    let current = c.cell(&c.nodes[0], &cell, "linearizable").await;
    let hysteresis = current["hysteresis"].as_i64().expect("hysteresis");
    let body = json!({
        "origin": {"function": "operator"},
        "reason": "test: a change node 3 keeps pushing",
        "read_set": [{"entity": format!("cell/{cell}"), "version": current["version"]}],
        "writes": [{"entity": format!("cell/{cell}"), "param": "hysteresis", "value": if hysteresis < 20 { hysteresis + 2 } else { hysteresis - 2 }}],
    });
    let r = c
        .client
        .post(&c.nodes[0].api, "/image/changesets", &body)
        .await
        .unwrap();
    assert_eq!(r.json()["outcome"], "applied", "{}", r.json());
    make_leader(
        &c,
        match role {
            Role::Leader => CUT as u64,
            Role::Follower => 1,
        },
    )
    .await;
    let before = applied_by(&sim.state(&c.client).await.unwrap(), CUT);
    until(Duration::from_secs(10), "node 3 re-pushing", || async {
        let now = applied_by(&sim.state(&c.client).await.map_err(|e| e.to_string())?, CUT);
        if now >= before + 3 {
            Ok(())
        } else {
            Err(format!("node 3's applies went from {before} to {now}"))
        }
    })
    .await;

    net.cut(CUT, &[1, 2], RAFT_PORT).expect("cut");
    let cut = Instant::now();
    // Watch node 3's lease, its applies at the antennas and the survivors' view of control
    // until every site-3 cell has a survivor's session at a new epoch.
    let mut samples: Vec<Sample> = Vec::new();
    let mut taken: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    while cut.elapsed() < CLAIM + Duration::from_secs(10) {
        let lease = c
            .antennas(CUT_POS)
            .await
            .and_then(|a| a.control)
            .map(|k| k.lease);
        let state = sim.state(&c.client).await.expect("simulator state");
        let at = cut.elapsed();
        // The sessions first, then control: a survivor holds a session at a new epoch only
        // once the move applied, so when every cell is taken the claim is seen too (asked the
        // other way round, a claim landing between the two questions ended the watch with
        // every cell taken and no claim seen).
        taken = c.connected_cells(&[0, 1], Some(0)).await;
        let mut claimed = false;
        for pos in [0, 1] {
            claimed |= away_from_home(&c, pos).await.is_some_and(|n| n > 0);
        }
        samples.push(Sample {
            at,
            lease,
            applied: applied_by(&state, CUT),
            claimed,
        });
        if all_of(&cut_cells, &taken).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let timeline: Vec<String> = samples
        .iter()
        .map(|s| {
            format!(
                "{:.1}s lease={:?} applied={} claimed={}",
                s.at.as_secs_f64(),
                s.lease,
                s.applied,
                s.claimed
            )
        })
        .collect();
    let timeline = timeline.join("\n");
    eprintln!("after the cut of node 3 as {role:?}:\n{timeline}");

    // 1. Node 3 knows it lost its lease within the lease and a second.
    let lost = samples
        .iter()
        .find(|s| s.lease == Some(false))
        .map(|s| s.at)
        .expect("node 3 never lost its lease");
    assert!(
        lost <= LEASE + Duration::from_secs(1),
        "node 3 lost its lease only {lost:?} after the cut"
    );
    // 2. Node 3 stopped pushing once its lease was gone (a push in flight aside), and did not
    // start again before the claim, nor while the survivors took its cells over; and it
    // stopped before the claim.
    let claimed = samples.iter().find(|s| s.claimed).map(|s| s.at);
    let stopped = samples
        .iter()
        .rev()
        .find(|s| s.at <= lost + IN_FLIGHT)
        .map_or(0, |s| s.applied);
    if let Some(late) = samples
        .iter()
        .find(|s| s.at > lost + IN_FLIGHT && s.applied > stopped)
    {
        panic!(
            "node 3 lost its lease {lost:?} after the cut, yet its antennas applied {} more of \
             its configurations by {:?} (the survivors claimed {})",
            late.applied - stopped,
            late.at,
            claimed.map_or("not yet".into(), |c| format!("at {c:?}"))
        );
    }
    // 3. The survivors claimed, after node 3 stopped, and took every cell over within the
    // claim time and 10 s, and no antenna applied a configuration it should not have.
    let claimed = claimed.expect("no claim seen in the survivors' GET /control");
    assert!(
        lost + IN_FLIGHT < claimed,
        "the survivors claimed {claimed:?} after the cut, before node 3 stopped ({lost:?} + \
         {IN_FLIGHT:?})"
    );
    if let Err(e) = all_of(&cut_cells, &taken) {
        panic!(
            "site-3's cells not taken over {:?} after the cut: {e}",
            cut.elapsed()
        );
    }
    let state = no_fencing_failure(&sim, &c, dir.path()).await;
    // The fence itself: the take-over's epoch reached every site-3 antenna.
    let unfenced: Vec<&String> = cut_cells
        .iter()
        .filter(|x| {
            state["configs"][x.as_str()]["newest_epoch"]
                .as_u64()
                .unwrap_or(0)
                == 0
        })
        .collect();
    assert!(
        unfenced.is_empty(),
        "after the take-over, the antennas of {unfenced:?} have seen no epoch above 0: the \
         survivors' sessions did not say theirs"
    );
    let takeover_epoch = taken.values().map(|(_, e)| *e).max().unwrap();
    let by_node: BTreeSet<u64> = taken
        .iter()
        .filter(|(x, _)| cut_cells.contains(*x))
        .map(|(_, (n, _))| *n)
        .collect();
    eprintln!(
        "after the cut of node 3 as {role:?}: it lost its lease at {:.1} s (its applies \
         frozen at {stopped}), the survivors claimed at {:.1} s and took its {} cells over by \
         {:.1} s (nodes {by_node:?}, epoch up to {takeover_epoch})",
        lost.as_secs_f64(),
        claimed.as_secs_f64(),
        cut_cells.len(),
        samples.last().unwrap().at.as_secs_f64()
    );

    // 4. Healed, node 3 catches up and gets its cell sites back at a newer epoch.
    net.heal(CUT).expect("heal");
    let back = until(Duration::from_secs(30), "the hand-back", || async {
        let away = away_from_home(&c, 0).await.ok_or("no /control")?;
        let home = c.connected_cells(&[CUT_POS], Some(takeover_epoch)).await;
        match all_of(&cut_cells, &home) {
            Ok(()) if away == 0 => Ok(()),
            Ok(()) => Err(format!("{away} cell sites away from home")),
            Err(e) => Err(format!(
                "{away} cell sites away from home; node 3's sessions: {e}"
            )),
        }
    })
    .await;
    // ... and pushes to them again: the change the antenna keeps refusing.
    let before = applied_by(&sim.state(&c.client).await.unwrap(), CUT);
    until(Duration::from_secs(10), "node 3 pushing again", || async {
        let now = applied_by(&sim.state(&c.client).await.map_err(|e| e.to_string())?, CUT);
        if now > before {
            Ok(())
        } else {
            Err(format!("node 3's applies still {now}"))
        }
    })
    .await;
    let state = no_fencing_failure(&sim, &c, dir.path()).await;
    eprintln!(
        "handed back {:.1} s after the heal; fencing: {}",
        back.as_secs_f64(),
        state["fencing"]
    );
}
