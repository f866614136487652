//! `sonraft-campaign failover`: how long clients wait when the leader is cut off by a firewall
//! that answers (issue 19: "the longest time any client waits for an answer is within 2x the
//! time to elect the new leader").
//!
//! Three nodes, each in its own namespace, on the plain disk and the default (loopback) timing.
//! Read-modify-write clients talk to every node's admin API without pause, so that at any time
//! some requests wait at the leader and some at followers that forward them; each request may
//! wait 30 s, so that waits are measured, not cut. Each round:
//!
//! 1. wait until the cluster is whole and find the leader;
//! 2. cut it off: its Raft port and the others' answer each other with TCP resets, both ways
//!    (one `iptables-restore` commit, prepared beforehand); its admin API stays reachable, by clients and by the
//!    followers that forward to it;
//! 3. the election time: from the cut (the moment the rules are in place) to the first `/status`
//!    of another node that says it leads, polled every 10 ms;
//! 4. hold the cut for `--hold-ms`, heal, wait for every request of the round to be answered;
//! 5. every request in flight at the cut or sent before the heal: its wait (answer time − send
//!    time) and its answer, split by where it was sent: the cut-off leader, or a follower.
//!
//! The verdict per round: the longest wait is at most twice the election time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::cluster::{Cluster, Setup};
use crate::http::{Answer, Http, HttpError};
use crate::netns::Network;
use crate::{clock, prerequisites, teardown, wait_trace, workload};
use hyper::Method;

/// Names a request in the nodes' debug logs.
const REQUEST_ID: &str = "x-request-id";

/// The nodes' Raft port (see [`crate::node::NodeSpec`]; no node is replaced here).
const RAFT_PORT: u16 = 7001;

/// How to run the benchmark (see `sonraft-campaign failover --help`).
#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: usize,
    pub seed: u64,
    pub clients_per_node: usize,
    /// Pause between one client's read-modify-write cycles.
    pub pause: Duration,
    /// Each client request's own timeout.
    pub timeout: Duration,
    /// How long a cut lasts.
    pub hold: Duration,
    pub prefix: String,
    pub run_dir: Option<PathBuf>,
    pub sonraft: PathBuf,
    pub command: String,
    /// The slowest requests of each round to trace through the nodes' logs (0: none; see
    /// [`wait_trace`]).
    pub trace: usize,
}

/// One client request.
#[derive(Clone, Debug)]
struct Request {
    /// Its index in the run, sent as `x-request-id: r<id>`.
    id: usize,
    slot: usize,
    write: bool,
    sent: Instant,
    answered: Option<(Instant, String)>,
}

/// Every request of the run, appended when sent and completed when answered.
#[derive(Clone, Default)]
struct Requests(Arc<Mutex<Vec<Request>>>);

impl Requests {
    fn sent(&self, slot: usize, write: bool) -> usize {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let id = all.len();
        all.push(Request {
            id,
            slot,
            write,
            sent: Instant::now(),
            answered: None,
        });
        all.len() - 1
    }

    fn answered(&self, i: usize, outcome: String) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all[i].answered = Some((Instant::now(), outcome));
    }

    /// Requests answered after `from` and sent before `to`, once all of those are answered.
    async fn window(&self, from: Instant, to: Instant, bound: Duration) -> Vec<Request> {
        let deadline = Instant::now() + bound;
        loop {
            let picked: Vec<Request> = {
                let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
                all.iter()
                    .filter(|r| r.sent < to && r.answered.as_ref().is_none_or(|(t, _)| *t > from))
                    .cloned()
                    .collect()
            };
            if picked.iter().all(|r| r.answered.is_some()) || Instant::now() > deadline {
                return picked;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What an answer was, for the tables: `ok`, `409 conflict`, `503 outcome_unknown`, ...
fn label(answer: &Result<Answer, HttpError>) -> String {
    match answer {
        Ok(a) if a.status.is_success() => "ok".into(),
        Ok(a) => {
            let body = a.json();
            let kind = body["error"]
                .as_str()
                .or(body["outcome"].as_str())
                .unwrap_or("?");
            format!("{} {kind}", a.status.as_u16())
        }
        Err(HttpError::Timeout(_)) => "client timeout".into(),
        Err(HttpError::Connect(_)) => "cannot connect".into(),
        Err(HttpError::Io(_)) => "connection broken".into(),
        Err(HttpError::Url(_)) => "bad url".into(),
    }
}

/// One client, bound to one node: read a cell there, propose a tilt step conditional on it
/// there, pause a little, again.
struct Client {
    slot: usize,
    addr: String,
    cells: Vec<String>,
    http: Http,
    timeout: Duration,
    pause: Duration,
    requests: Requests,
    rng: StdRng,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let cell = self.cells[self.rng.random_range(0..self.cells.len())].clone();
            let i = self.requests.sent(self.slot, false);
            let path = format!("/image/cells/{cell}");
            let tag = format!("r{i}");
            let read = self
                .http
                .send_with(
                    Method::GET,
                    &self.addr,
                    &path,
                    None,
                    self.timeout,
                    &[(REQUEST_ID, &tag)],
                )
                .await;
            self.requests.answered(i, label(&read));
            let state = match read {
                Ok(a) if a.status.is_success() => {
                    serde_json::from_slice::<crate::api::CellState>(&a.body).ok()
                }
                _ => None,
            };
            if let Some(state) = state {
                let value = workload::next_tilt(&state, self.rng.random_bool(0.5));
                let body = json!({
                    "origin": {"function": "operator"},
                    "reason": "failover benchmark",
                    "read_set": [{"entity": format!("cell/{cell}"), "version": state.version}],
                    "writes": [{"entity": format!("cell/{cell}"), "param": "electrical_tilt", "value": value}],
                });
                let i = self.requests.sent(self.slot, true);
                let tag = format!("r{i}");
                let write = self
                    .http
                    .send_with(
                        Method::POST,
                        &self.addr,
                        "/image/changesets",
                        Some(&body),
                        self.timeout,
                        &[(REQUEST_ID, &tag)],
                    )
                    .await;
                self.requests.answered(i, label(&write));
            }
            tokio::time::sleep(self.pause.mul_f64(self.rng.random_range(0.5..1.5))).await;
        }
    }
}

/// The longest wait of a group of requests and what it was.
#[derive(Clone, Debug, Default)]
pub struct Longest {
    pub wait: Duration,
    pub what: String,
    pub requests: usize,
    pub outcomes: BTreeMap<String, usize>,
}

impl Longest {
    fn add(&mut self, r: &Request) {
        self.requests += 1;
        let (at, outcome) = r
            .answered
            .clone()
            .unwrap_or_else(|| (Instant::now(), "unanswered".into()));
        let kind = if r.write { "write" } else { "read" };
        *self
            .outcomes
            .entry(format!("{kind} {outcome}"))
            .or_insert(0) += 1;
        let wait = at.saturating_duration_since(r.sent);
        if wait >= self.wait {
            self.wait = wait;
            self.what = format!("{kind} {outcome}");
        }
    }
}

/// What one round measured.
#[derive(Clone, Debug)]
pub struct Round {
    pub n: usize,
    pub old_leader: u64,
    pub new_leader: u64,
    /// How long committing the rules took (the cut is timed from its end: the election time
    /// is, if anything, measured short).
    pub cut_took: Duration,
    pub election: Duration,
    pub via_followers: Longest,
    pub at_old_leader: Longest,
    /// With `--trace`: the slowest requests and what the node logs say about them.
    pub trace: Vec<String>,
}

impl Round {
    pub fn longest(&self) -> Duration {
        self.via_followers.wait.max(self.at_old_leader.wait)
    }

    pub fn ratio(&self) -> f64 {
        self.longest().as_secs_f64() / self.election.as_secs_f64().max(1e-6)
    }

    pub fn met(&self) -> bool {
        self.longest() <= 2 * self.election
    }

    fn line(&self) -> String {
        format!(
            "round {:>2}: leader node {} cut off (rules in {} ms); node {} leads after {} ms; \
             longest wait via a follower {} ms ({}, {} requests), at the old leader {} ms ({}, {} requests); \
             ratio {:.2} {}",
            self.n,
            self.old_leader,
            self.cut_took.as_millis(),
            self.new_leader,
            self.election.as_millis(),
            self.via_followers.wait.as_millis(),
            self.via_followers.what,
            self.via_followers.requests,
            self.at_old_leader.wait.as_millis(),
            self.at_old_leader.what,
            self.at_old_leader.requests,
            self.ratio(),
            if self.met() { "ok" } else { "OVER 2x" },
        )
    }
}

/// Milliseconds of the `q` quantile of `d` (nearest rank).
fn quantile_ms(d: &[Duration], q: f64) -> u128 {
    let mut v: Vec<Duration> = d.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).map_or(0, |x| x.as_millis())
}

/// The closing summary of all rounds.
pub fn summary(o: &Options, rounds: &[Round]) -> String {
    let mut s = String::new();
    let elections: Vec<Duration> = rounds.iter().map(|r| r.election).collect();
    let follower: Vec<Duration> = rounds.iter().map(|r| r.via_followers.wait).collect();
    let leader: Vec<Duration> = rounds.iter().map(|r| r.at_old_leader.wait).collect();
    let worst = rounds.iter().max_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    let _ = writeln!(s, "command: {}", o.command);
    let _ = writeln!(
        s,
        "rounds: {}, met (longest wait <= 2x election): {}",
        rounds.len(),
        rounds.iter().filter(|r| r.met()).count()
    );
    let _ = writeln!(
        s,
        "election time: min {} ms, median {} ms, max {} ms",
        quantile_ms(&elections, 0.0),
        quantile_ms(&elections, 0.5),
        quantile_ms(&elections, 1.0)
    );
    let _ = writeln!(
        s,
        "longest wait via a follower: median over rounds {} ms, max {} ms",
        quantile_ms(&follower, 0.5),
        quantile_ms(&follower, 1.0)
    );
    let _ = writeln!(
        s,
        "longest wait at the cut-off leader: median over rounds {} ms, max {} ms",
        quantile_ms(&leader, 0.5),
        quantile_ms(&leader, 1.0)
    );
    if let Some(w) = worst {
        let _ = writeln!(
            s,
            "highest ratio longest-wait / election: {:.2} (round {}: {} ms / {} ms)",
            w.ratio(),
            w.n,
            w.longest().as_millis(),
            w.election.as_millis()
        );
    }
    for (name, group) in [
        (
            "via a follower",
            outcomes(rounds.iter().map(|r| &r.via_followers)),
        ),
        (
            "at the cut-off leader",
            outcomes(rounds.iter().map(|r| &r.at_old_leader)),
        ),
    ] {
        let list: Vec<String> = group.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(s, "answers {name}: {}", list.join(", "));
    }
    s
}

/// The answers of several groups of requests, added up.
fn outcomes<'a>(groups: impl Iterator<Item = &'a Longest>) -> BTreeMap<String, usize> {
    let mut all = BTreeMap::new();
    for g in groups {
        for (k, n) in &g.outcomes {
            *all.entry(k.clone()).or_insert(0) += n;
        }
    }
    all
}

/// Polls `/status` of the slots in `others` every 10 ms until one says it leads in a term
/// above `term`; returns its node id and when it was seen.
async fn new_leader(
    c: &Cluster,
    others: &[usize],
    term: u64,
    bound: Duration,
) -> Option<(u64, Instant)> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let polls: Vec<_> = others
            .iter()
            .map(|&i| {
                let (api, addr) = (c.api.clone(), c.addr(i));
                tokio::spawn(async move { api.status(&addr).await.ok() })
            })
            .collect();
        let mut seen = Vec::new();
        for p in polls {
            seen.push(p.await.ok().flatten());
        }
        let at = Instant::now();
        if let Some(s) = seen
            .into_iter()
            .flatten()
            .find(|s| s.role == "leader" && s.term > term)
        {
            return Some((s.id, at));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// One round: cut the leader off, time the election, hold, heal, collect the waits.
async fn round(
    c: &mut Cluster,
    n: usize,
    o: &Options,
    requests: &Requests,
) -> anyhow::Result<Round> {
    c.wait_whole(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)
        .context("the cluster is not whole before the round")?;
    // Let the clients run against the settled cluster for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (leader, term) = c.leader().await.context("no leader before the round")?;
    let others: Vec<usize> = (0..c.slots.len()).filter(|&i| i != leader).collect();
    let peer_slots: Vec<usize> = others.iter().map(|&i| c.slots[i].index).collect();
    let pending = c
        .network
        .prepare_port_cut(c.slots[leader].index, &peer_slots, RAFT_PORT)
        .await
        .context("cannot prepare the cut")?;
    // Give the tool time to read the rules before they are committed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cut_started = Instant::now();
    pending
        .commit()
        .await
        .context("cannot cut the leader off")?;
    let (cut, cut_wall) = (Instant::now(), SystemTime::now());
    let elected = new_leader(c, &others, term, Duration::from_secs(30)).await;
    let hold_until = cut + o.hold;
    if let Some(wait) = hold_until.checked_duration_since(Instant::now()) {
        tokio::time::sleep(wait).await;
    }
    let healed = Instant::now();
    c.network.heal().await.context("cannot heal")?;
    let (new_leader, elected_at) = elected.context("no new leader within 30 s of the cut")?;
    let mut round = Round {
        n,
        old_leader: c.slots[leader].spec.id,
        new_leader,
        cut_took: cut - cut_started,
        election: elected_at - cut,
        via_followers: Longest::default(),
        at_old_leader: Longest::default(),
        trace: Vec::new(),
    };
    let mut window = requests
        .window(cut, healed, o.timeout + Duration::from_secs(5))
        .await;
    for r in &window {
        if r.slot == leader {
            round.at_old_leader.add(r);
        } else {
            round.via_followers.add(r);
        }
    }
    if o.trace > 0 {
        window.sort_by_key(|r| std::cmp::Reverse(wait_of(r)));
        window.truncate(o.trace);
        round.trace = trace(c, cut, cut_wall, &window);
    }
    Ok(round)
}

/// How long `r` waited (until now if it is unanswered).
fn wait_of(r: &Request) -> Duration {
    r.answered
        .as_ref()
        .map_or_else(Instant::now, |(t, _)| *t)
        .saturating_duration_since(r.sent)
}

/// The slowest requests of a round, and what the nodes' logs say about them.
fn trace(c: &Cluster, cut: Instant, cut_wall: SystemTime, slowest: &[Request]) -> Vec<String> {
    let ms = |t: Instant| {
        t.checked_duration_since(cut).map_or_else(
            || -(cut.duration_since(t).as_secs_f64() * 1000.0),
            |d| d.as_secs_f64() * 1000.0,
        )
    };
    let mut out = Vec::new();
    let mut traced = Vec::new();
    for r in slowest {
        let (answered, outcome) = r
            .answered
            .clone()
            .unwrap_or_else(|| (Instant::now(), "unanswered".into()));
        out.push(format!(
            "  r{} {} at node {}: {} ms ({outcome}), sent {:+.1} ms, answered {:+.1} ms",
            r.id,
            if r.write { "write" } else { "read" },
            c.slots[r.slot].spec.id,
            wait_of(r).as_millis(),
            ms(r.sent),
            ms(answered),
        ));
        traced.push(wait_trace::Traced {
            id: format!("r{}", r.id),
            sent_ms: ms(r.sent),
            answered_ms: ms(answered),
        });
    }
    let logs: Vec<(u64, PathBuf)> = c
        .slots
        .iter()
        .map(|s| (s.spec.id, s.spec.log.clone()))
        .collect();
    out.extend(
        wait_trace::lines(&logs, cut_wall, &traced)
            .into_iter()
            .map(|l| format!("    {l}")),
    );
    out
}

/// Runs the benchmark; returns the rounds (the caller prints and judges them).
pub async fn run(o: Options) -> anyhow::Result<Vec<Round>> {
    let missing = prerequisites::missing(&o.sonraft, None);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|m| format!("{} ({})", m.what, m.fix))
            .collect();
        bail!("missing prerequisites: {}", list.join("; "));
    }
    let library = clock::libfaketime().context("libfaketime is not installed")?;
    teardown::cleanup_leftovers(&o.prefix, 3);
    let mut rng = StdRng::seed_from_u64(o.seed);
    let name = format!("{}{:04x}", o.prefix, rand::rng().random::<u16>());
    let net =
        crate::netns::free_net(rand::rng().random()).context("no free 10.77.x.0/24 network")?;
    let run_dir = o
        .run_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("sonraft-campaign").join(&name));
    std::fs::create_dir_all(run_dir.join("logs"))
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    teardown::begin(&name, 3, &run_dir);
    let _guard = teardown::Guard;
    teardown::install_handlers();
    let network = Network::create(&name, net, 3).context("cannot create the network")?;
    let setup = Setup {
        sonraft: o.sonraft.clone(),
        lazyfs: None,
        libfaketime: library,
        run_dir: run_dir.clone(),
        node_flags: Vec::new(),
        node_log: (o.trace > 0).then(|| wait_trace::NODE_LOG.to_string()),
        seed: o.seed,
        fresh_addresses: false,
    };
    let mut cluster = Cluster::start(setup, network)
        .await
        .context("cannot start the nodes")?;
    cluster
        .init()
        .await
        .context("cannot initialise the cluster")?;
    cluster
        .wait_whole(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)
        .context("the new cluster did not become ready")?;
    let (image, cells) = crate::campaign::image(6);
    let leader = cluster.leader().await.map_or(0, |(l, _)| l);
    cluster
        .api
        .import(&cluster.addr(leader), &image)
        .await
        .context("cannot import the image")?;
    println!(
        "run directory {}; nodes {}",
        run_dir.display(),
        (0..3)
            .map(|i| cluster.addr(i))
            .collect::<Vec<_>>()
            .join(" ")
    );

    let requests = Requests::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..cluster.slots.len() {
        for _ in 0..o.clients_per_node {
            let client = Client {
                slot: i,
                addr: cluster.addr(i),
                cells: cells.clone(),
                http: cluster.api.http.clone(),
                timeout: o.timeout,
                pause: o.pause,
                requests: requests.clone(),
                rng: StdRng::seed_from_u64(rng.random()),
            };
            clients.push(tokio::spawn(client.run(stop.clone())));
        }
    }
    let mut rounds = Vec::new();
    let mut failure = None;
    for n in 1..=o.rounds {
        match round(&mut cluster, n, &o, &requests).await {
            Ok(r) => {
                println!("{}", r.line());
                for l in &r.trace {
                    println!("{l}");
                }
                rounds.push(r);
            }
            Err(e) => {
                failure = Some(e.context(format!("round {n}")));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    cluster.shut_down().await;
    if let Some(e) = failure {
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(run_dir.join("data"));
    Ok(rounds)
}
