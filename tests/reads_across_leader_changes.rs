//! Reads stay truthful while leadership moves: `consistency=leader` answers the leader's state
//! even from a follower that fell behind; a leader that handed leadership over serves no read
//! from its lease until that lease is surely void; and an old leader that was paused while a
//! new one took writes serves none of its stale state as linearizable.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// How many linearizable reads node `p` proved from its lease so far.
async fn lease_proofs(c: &Cluster, p: &NodeProc) -> u64 {
    let r = c.client.get(&p.api, "/metrics").await.expect("metrics");
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix("sonraft_read_proofs_total{by=\"lease\"} "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

/// The electrical tilt node `p` answers for `cell` with `consistency`.
async fn tilt_at(c: &Cluster, p: &NodeProc, cell: &str, consistency: &str) -> i64 {
    c.cell(p, cell, consistency).await["electrical_tilt"]
        .as_i64()
        .expect("a tilt")
}

/// Sets `cell`'s tilt through `p` (read-modify-write); returns the new tilt.
async fn set_tilt(c: &Cluster, p: &NodeProc, cell: &str) -> i64 {
    let now = c.cell(p, cell, "linearizable").await;
    let version = now["version"].as_u64().unwrap();
    let to = if now["electrical_tilt"] == 45 { 40 } else { 45 };
    let r = c
        .client
        .post(&p.api, "/image/changesets", &tilt(cell, version, to))
        .await
        .expect("an answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    to
}

/// Position of the leader among the running nodes other than `not`, waiting up to 10 s.
async fn leader_other_than(c: &Cluster, not: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, p) in c.nodes.iter().enumerate().filter(|(i, _)| *i != not) {
            if let Some(s) = c.status(p).await
                && s["role"] == "leader"
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no new leader within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_serve_a_deposed_leaders_state() {
    let c = Cluster::start(3).await;
    c.import_demo(6).await;

    leader_consistency_answers_the_leaders_state_from_a_lagging_follower(&c).await;
    an_old_leader_paused_while_a_new_one_wrote_serves_the_new_write(&c).await;
    a_leader_that_hands_over_serves_no_reads_from_its_lease(&c).await;
}

/// A follower paused while the leader wrote is behind when it resumes; `consistency=leader`
/// through it still answers what the leader applied (`local` may not).
async fn leader_consistency_answers_the_leaders_state_from_a_lagging_follower(c: &Cluster) {
    let leader = c.leader().await;
    let follower = &c.nodes[(leader + 1) % 3];
    follower.pause().expect("pause");
    let written = set_tilt(c, &c.nodes[leader], "C1").await;
    follower.resume().expect("resume");
    assert_eq!(tilt_at(c, follower, "C1", "leader").await, written);
    assert_eq!(tilt_at(c, &c.nodes[leader], "C1", "leader").await, written);
}

/// A hand-over releases the old leader's lease for longer than the hand-over takes: once it
/// leads again moments later, its reads are proved by a quorum round, not by a lease granted
/// before the successor's term (README, "Reads"; `ReadBarrier::release_lease`).
async fn a_leader_that_hands_over_serves_no_reads_from_its_lease(c: &Cluster) {
    let l = c.leader().await;
    let (old, successor) = (&c.nodes[l], &c.nodes[(l + 1) % 3]);
    // On an idle cluster the leader serves reads from its lease (once every voter told its
    // promise): without that, this check could not fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = lease_proofs(c, old).await;
    while lease_proofs(c, old).await == before {
        assert!(
            Instant::now() < deadline,
            "no read was served from the lease"
        );
        tilt_at(c, old, "C2", "linearizable").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Loopback timing: the lease stays released for 4 x 300 ms + 1 s after the hand-over began.
    let released_for = Duration::from_millis(2200);
    let started = Instant::now();
    for (via, to) in [(old, successor.id), (successor, old.id)] {
        let r = c
            .client
            .post(&via.api, "/cluster/leader", &serde_json::json!({"id": to}))
            .await
            .expect("an answer");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(c.nodes[c.leader().await].id, old.id, "leadership came back");
    let proofs = lease_proofs(c, old).await;
    let mut reads = 0;
    while started.elapsed() < released_for - Duration::from_millis(400) && reads < 20 {
        tilt_at(c, old, "C2", "linearizable").await;
        reads += 1;
    }
    if reads > 0 {
        assert_eq!(
            lease_proofs(c, old).await,
            proofs,
            "{reads} reads {:?} after a hand-over began: some were served from the released lease",
            started.elapsed()
        );
    } else {
        eprintln!(
            "the two hand-overs took {:?}: no time left to read inside the release",
            started.elapsed()
        );
    }
    // Afterwards the lease serves reads again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_proofs(c, old).await == proofs {
        assert!(Instant::now() < deadline, "the lease never came back");
        tilt_at(c, old, "C2", "linearizable").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= released_for,
        "a lease read {:?} after the hand-over began, inside the release",
        started.elapsed()
    );
}

/// SIGSTOP the leader; the others elect a new one, which takes a write; SIGCONT. The old
/// leader still believes it leads, but its linearizable read must not answer the old value.
async fn an_old_leader_paused_while_a_new_one_wrote_serves_the_new_write(c: &Cluster) {
    let l = c.leader().await;
    let old = &c.nodes[l];
    let before = tilt_at(c, old, "C3", "linearizable").await;
    old.pause().expect("pause");
    let n = leader_other_than(c, l).await;
    let written = set_tilt(c, &c.nodes[n], "C3").await;
    assert_ne!(written, before);
    old.resume().expect("resume");
    assert_eq!(
        tilt_at(c, old, "C3", "linearizable").await,
        written,
        "the resumed old leader answered its stale state"
    );
    assert_eq!(tilt_at(c, old, "C3", "leader").await, written);
}
