//! A rolling restart of all three sites with `scripts/rolling-upgrade.sh`, on the cluster
//! `scripts/bootstrap-cluster.sh` brings up (simulated antennas and SON included), under
//! continuous read-modify-write load from the load generator's client. Afterwards every
//! acknowledged change set must be there, and no read may have gone back in time.
//! Prints the longest time writes were unavailable while each site was being upgraded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sonraft_bench::load::Target;
use sonraft_bench::sonraft_target::{SonraftTarget, WriteOutcome, cell_id};
use sonraft_client::ApiClient;

const CELLS: usize = 200;
const CLIENTS: usize = 8;

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Environment of the scripts: the run directory and this build's binary.
fn script(name: &str, run_dir: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(root().join("scripts").join(name))
        .env("SONRAFT_RUN_DIR", run_dir)
        .env("SONRAFT_BIN", env!("CARGO_BIN_EXE_sonraft"))
        .env("SONRAFT_DEMO_CELLS", "30")
        .env("SONRAFT_SIM_PERIOD_MS", "1000")
        .env_remove("SONRAFT_NODES")
        .env_remove("SONRAFT_TOKEN");
    c
}

/// Stops the cluster whatever happens to the test.
struct Teardown(PathBuf);

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = script("bootstrap-cluster.sh", &self.0).arg("stop").output();
    }
}

fn env_value(file: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(file).expect("read env file");
    text.lines()
        .find_map(|l| {
            let l = l.trim_start_matches("export ");
            l.strip_prefix(&format!("{key}="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in {}", file.display()))
}

/// One client operation, as the load generator saw it.
#[derive(Debug, Clone)]
enum Event {
    /// A linearizable read of `cell` began at `start` and returned `version`.
    Read {
        cell: usize,
        start: u64,
        version: u64,
    },
    /// A change set on `cell` was acknowledged as applied at `at`, giving `version`.
    Applied {
        cell: usize,
        at: u64,
        version: u64,
        value: i64,
    },
}

async fn client_loop(
    target: Arc<SonraftTarget>,
    seed: usize,
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
) -> u64 {
    let mut errors = 0;
    let mut n = seed;
    let mut session = target.client();
    while !stop.load(Ordering::Relaxed) {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let cell = (n >> 33) % CELLS;
        let start = epoch_ms();
        let version = match Target::read_version(&*target, &mut session, cell).await {
            Ok(v) => v,
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let mut log = vec![Event::Read {
            cell,
            start,
            version,
        }];
        let value = 4 + (version % 2) as i64;
        match target
            .write_outcome(&mut session, cell, Some(version), value)
            .await
        {
            Ok(WriteOutcome::Applied(v)) => log.push(Event::Applied {
                cell,
                at: epoch_ms(),
                version: v,
                value,
            }),
            Ok(WriteOutcome::Conflict(_)) => {}
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        events.lock().unwrap().extend(log);
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_site_under_load_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let _teardown = Teardown(run_dir.clone());

    let up = script("bootstrap-cluster.sh", &run_dir).output().unwrap();
    assert!(
        up.status.success(),
        "bootstrap failed:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let env = run_dir.join("cluster.env");
    let token = env_value(&env, "SONRAFT_TOKEN");
    let nodes: Vec<String> = env_value(&env, "SONRAFT_NODES")
        .split(' ')
        .map(str::to_string)
        .collect();

    // The benchmark cells the load writes (the demo network's cells belong to SON).
    let client = ApiClient::new(Some(token.clone()), Duration::from_secs(15));
    let target = Arc::new(
        SonraftTarget::connect(&nodes, Some(token.clone()), CLIENTS)
            .await
            .unwrap(),
    );
    Target::preload(&*target, CELLS).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client_loop(
                target.clone(),
                i * 7919 + 1,
                stop.clone(),
                events.clone(),
            ))
        })
        .collect();

    // Let the load settle, then roll every site (same build: --force).
    let load_began = epoch_ms();
    while events.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events_file = tmp.path().join("upgrade-events");
    let mut roll = script("rolling-upgrade.sh", &run_dir);
    roll.arg(env!("CARGO_BIN_EXE_sonraft"))
        .arg("--force")
        .env("SONRAFT_UPGRADE_EVENTS", &events_file);
    let rolled = tokio::task::spawn_blocking(move || roll.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&rolled.stdout);
    let stderr = String::from_utf8_lossy(&rolled.stderr);
    eprintln!("{stdout}");
    let dump_logs = || {
        for site in ["site-a", "site-b", "site-c"] {
            let log =
                std::fs::read_to_string(run_dir.join(site).join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(400).collect();
            eprintln!("--- {site}/node.log (last lines)");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    };
    if !rolled.status.success() {
        dump_logs();
        panic!("rolling upgrade failed:\n{stderr}\n{stdout}");
    }
    // SONRAFT_TEST_LOGS=1 shows the nodes' logs of a passing run too.
    if std::env::var_os("SONRAFT_TEST_LOGS").is_some() {
        dump_logs();
    }
    assert_eq!(
        stdout.matches(" ok").count(),
        3,
        "every site is upgraded:\n{stdout}"
    );
    // Load for a little longer on the fully restarted cluster.
    let count = events.lock().unwrap().len();
    while events.lock().unwrap().len() < count + 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for t in load {
        errors += t.await.unwrap();
    }
    let events = events.lock().unwrap().clone();

    // Every acknowledged write is there: the final version of each cell is at least the
    // newest acknowledged one (with its value when equal), and no version was acknowledged
    // twice (which a lost write, re-applied over, would produce).
    let mut acked: BTreeMap<usize, Vec<(u64, i64, u64)>> = BTreeMap::new();
    for e in &events {
        if let Event::Applied {
            cell,
            at,
            version,
            value,
        } = e
        {
            acked
                .entry(*cell)
                .or_default()
                .push((*version, *value, *at));
        }
    }
    let applied: usize = acked.values().map(Vec::len).sum();
    assert!(applied > 400, "too little load got through: {applied}");
    for (cell, list) in &mut acked {
        list.sort_unstable();
        for w in list.windows(2) {
            assert_ne!(
                w[0].0, w[1].0,
                "cell {cell}: version {} acknowledged twice",
                w[0].0
            );
        }
        let (newest, value, _) = *list.last().unwrap();
        let r = client
            .get(
                &nodes[0],
                &format!("/image/cells/{}?consistency=linearizable", cell_id(*cell)),
            )
            .await
            .unwrap();
        let c = r.json();
        let now = c["version"].as_u64().unwrap();
        assert!(
            now >= newest,
            "cell {cell}: version {now}, but {newest} was acknowledged"
        );
        if now == newest {
            assert_eq!(c["hysteresis"].as_i64(), Some(value), "cell {cell}");
        }
    }
    // Reads never go back in time: a read that began after a write was acknowledged sees it.
    let mut by_cell: HashMap<usize, Vec<(u64, u64)>> = HashMap::new();
    for (cell, list) in &acked {
        let mut l: Vec<(u64, u64)> = list.iter().map(|(v, _, at)| (*at, *v)).collect();
        l.sort_unstable();
        by_cell.insert(*cell, l);
    }
    for e in &events {
        if let Event::Read {
            cell,
            start,
            version,
        } = e
        {
            let seen = by_cell
                .get(cell)
                .into_iter()
                .flatten()
                .filter(|(at, _)| at < start)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            assert!(
                *version >= seen,
                "cell {cell}: a read begun at {start} returned version {version}, but {seen} was acknowledged before"
            );
        }
    }

    // Longest gap between acknowledged writes while each site was upgraded.
    let mut acks: Vec<u64> = acked.values().flatten().map(|(_, _, at)| *at).collect();
    acks.sort_unstable();
    let text = std::fs::read_to_string(&events_file).unwrap();
    let mut windows: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [site, phase, at] = f.as_slice() else {
            continue;
        };
        let at: u64 = at.parse().unwrap();
        let w = windows.entry(site.to_string()).or_insert((at, at));
        match *phase {
            "begin" => w.0 = at,
            "end" => w.1 = at,
            _ => {}
        }
    }
    assert_eq!(windows.len(), 3, "{text}");
    let mut worst = Vec::new();
    for (site, (b, e)) in &windows {
        let before = acks.iter().rev().find(|t| *t < b).copied().unwrap_or(*b);
        let after = acks.iter().find(|t| *t > e).copied().unwrap_or(*e);
        let mut points: Vec<u64> = vec![before];
        points.extend(acks.iter().filter(|t| *t >= b && *t <= e));
        points.push(after);
        let gap = points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        eprintln!(
            "{site}: upgraded in {} ms; longest time without an acknowledged write: {gap} ms",
            e - b
        );
        worst.push((site.clone(), gap));
    }
    eprintln!(
        "{applied} writes acknowledged over {} s, {errors} failed or unknown",
        (epoch_ms() - load_began) / 1000
    );
    for (site, gap) in worst {
        assert!(
            gap < 3000,
            "{site}: writes were unavailable for {gap} ms (target under 1 s)"
        );
    }
}
