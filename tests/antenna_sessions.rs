//! Antenna sessions are isolated: a dropped connection or garbage from one antenna affects
//! only that session, which reconnects; an antenna that acknowledges other values than were
//! pushed gets them pushed again; garbage sent to the simulator closes only that connection.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use serde_json::{Value, json};
use sonraft_protocol::{self as protocol, CellConfig, Frame};
use sonraft_testkit::local_cluster::SimProc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A fake antenna endpoint: answers HELLO with WELCOME, acknowledges pushes, and on request
/// misbehaves on one cell's connection (garbage, a dropped connection, or once acknowledging a
/// hysteresis one above what was pushed).
#[derive(Default)]
struct Fake {
    hellos: Mutex<HashMap<String, u32>>,
    sabotage: Mutex<Option<(String, &'static str)>>,
    lie_to: Mutex<Option<String>>,
    /// Every CONFIG_SET per cell, with when it arrived.
    config_sets: Mutex<HashMap<String, Vec<(Instant, CellConfig)>>>,
    /// An antenna of a release before fencing: it answers the fenced frames as unknown kinds.
    legacy: bool,
    /// Fenced frames it refused.
    refused_fenced: Mutex<u32>,
}

async fn fake_antenna(fake: Arc<Fake>, listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let fake = fake.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let mut cell = String::new();
            loop {
                let sabotage = fake.sabotage.lock().unwrap().clone();
                if let Some((target, how)) = sabotage
                    && target == cell
                {
                    *fake.sabotage.lock().unwrap() = None;
                    match how {
                        "garbage" => {
                            let _ = stream
                                .write_all(&[0, 0, 0, 9, 1, 99, 1, 2, 3, 4, 5, 6, 7])
                                .await;
                        }
                        _ => return,
                    }
                }
                // The node speaks the fenced frames; this fake antenna does not fence. As an
                // antenna of a release before them, it refuses them as it would any unknown kind.
                let frame = match protocol::split_frame(&mut buf) {
                    Ok(Some(Frame::HelloFenced { .. } | Frame::ConfigSetFenced { .. }))
                        if fake.legacy =>
                    {
                        *fake.refused_fenced.lock().unwrap() += 1;
                        let refusal = Frame::Error {
                            code: protocol::code::BAD_FRAME,
                            message: "unknown frame kind 7".into(),
                        };
                        let _ = stream.write_all(&protocol::encode(&refusal)).await;
                        return;
                    }
                    Ok(Some(Frame::HelloFenced {
                        cell, controller, ..
                    })) => Ok(Some(Frame::Hello { cell, controller })),
                    Ok(Some(Frame::ConfigSetFenced { txn, config, .. })) => {
                        Ok(Some(Frame::ConfigSet { txn, config }))
                    }
                    other => other,
                };
                match frame {
                    Ok(Some(Frame::Hello { cell: c, .. })) => {
                        *fake.hellos.lock().unwrap().entry(c.clone()).or_default() += 1;
                        cell = c.clone();
                        let w = Frame::Welcome {
                            cell: c,
                            period_ms: 1000,
                            config: CellConfig::default(),
                        };
                        if stream.write_all(&protocol::encode(&w)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(Some(Frame::ConfigSet { txn, mut config })) => {
                        fake.config_sets
                            .lock()
                            .unwrap()
                            .entry(cell.clone())
                            .or_default()
                            .push((Instant::now(), config.clone()));
                        let lied = {
                            let mut lie = fake.lie_to.lock().unwrap();
                            let lied = lie.as_deref() == Some(cell.as_str());
                            if lied {
                                *lie = None;
                            }
                            lied
                        };
                        if lied {
                            config.hysteresis += 1;
                        }
                        if stream
                            .write_all(&protocol::encode(&Frame::ConfigAck { txn, config }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(_) => return,
                }
                buf.reserve(512);
                match tokio::time::timeout(Duration::from_millis(50), stream.read_buf(&mut buf))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        });
    }
}

fn image() -> Value {
    let cells: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("A{i}"), "site": "S", "rat": "LTE", "pci": i, "arfcn": 1300, "azimuth": 0}))
        .collect();
    json!({"sites": [{"id": "S", "name": "s", "lat": 0.0, "lon": 0.0, "region": "site-1"}], "cells": cells})
}

async fn sessions(c: &Cluster) -> HashMap<String, Value> {
    let a = c
        .client
        .get(&c.nodes[0].api, "/antennas")
        .await
        .unwrap()
        .json();
    a["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["cell"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

async fn wait_for(
    c: &Cluster,
    what: &str,
    f: impl Fn(&HashMap<String, Value>) -> bool,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sessions(c).await;
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A one-node cluster whose antennas are `fake`, speaking one session per cell, with the
/// six-cell image imported and every session connected and in sync.
async fn with_fake(fake: Fake) -> (Arc<Fake>, Cluster) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Arc::new(fake);
    tokio::spawn(fake_antenna(fake.clone(), listener));
    let c = Cluster::start_with(1, &["--antennas", &addr, "--antenna-sessions", "cell"]).await;
    c.import(&image()).await;
    wait_for(&c, "six sessions connected and in sync", |s| {
        s.len() == 6
            && s.values()
                .all(|v| v["connected"] == true && v["in_sync"] == true)
    })
    .await;
    (fake, c)
}

/// An antenna of a release before control epochs refuses the fenced hello as an unknown kind:
/// at epoch 0 (its cells never moved) the node speaks to it without epochs, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_antenna_without_fencing_is_spoken_to_without_epochs_at_epoch_0() {
    let (fake, c) = with_fake(Fake {
        legacy: true,
        ..Fake::default()
    })
    .await;
    assert!(
        *fake.refused_fenced.lock().unwrap() >= 6,
        "the fenced hellos were tried first"
    );
    // A change still reaches it, as a plain CONFIG_SET.
    let version = c
        .client
        .get(&c.nodes[0].api, "/image/cells/A1")
        .await
        .unwrap()
        .json()["version"]
        .as_u64()
        .unwrap();
    let r = c
        .client
        .post(
            &c.nodes[0].api,
            "/image/changesets",
            &tilt("A1", version, 45),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fake
        .config_sets
        .lock()
        .unwrap()
        .get("A1")
        .is_some_and(|s| s.iter().any(|(_, c)| c.electrical_tilt == 45))
    {
        assert!(
            Instant::now() < deadline,
            "the change never reached the antenna"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_garbled_antenna_connection_affects_only_its_session() {
    let (fake, c) = with_fake(Fake::default()).await;

    *fake.sabotage.lock().unwrap() = Some(("A2".into(), "garbage"));
    let s = wait_for(&c, "A2 reconnected after garbage", |s| {
        s["A2"]["connects"].as_u64() >= Some(2) && s["A2"]["connected"] == true
    })
    .await;
    assert!(
        s["A2"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("bad frame"),
        "{}",
        s["A2"]
    );
    *fake.sabotage.lock().unwrap() = Some(("A4".into(), "drop"));
    let s = wait_for(&c, "A4 reconnected after a dropped connection", |s| {
        s["A4"]["connects"].as_u64() >= Some(2) && s["A4"]["connected"] == true
    })
    .await;
    for other in ["A0", "A1", "A3", "A5"] {
        assert_eq!(
            s[other]["connects"], 1,
            "{other} was disturbed: {}",
            s[other]
        );
    }

    // A3's antenna acknowledges a change with another hysteresis than pushed: the session sees
    // the divergence and pushes again until the antenna holds the image's values.
    *fake.lie_to.lock().unwrap() = Some("A3".into());
    let pushes = s["A3"]["pushes"].as_u64().unwrap();
    let cell = c
        .client
        .get(&c.nodes[0].api, "/image/cells/A3")
        .await
        .unwrap()
        .json();
    let version = cell["version"].as_u64().unwrap();
    let r = c
        .client
        .post(
            &c.nodes[0].api,
            "/image/changesets",
            &tilt("A3", version, 45),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = wait_for(
        &c,
        "A3 in sync again after a diverging acknowledgement",
        |s| s["A3"]["in_sync"] == true && s["A3"]["pushes"].as_u64() >= Some(pushes + 2),
    )
    .await;
    assert!(
        fake.lie_to.lock().unwrap().is_none(),
        "the antenna never lied"
    );
    let sets = fake.config_sets.lock().unwrap()["A3"].clone();
    let [.., (lied_at, lied_to), (repaired_at, repaired)] = sets.as_slice() else {
        panic!("fewer than two pushes: {sets:?}")
    };
    assert_eq!(
        (lied_to.electrical_tilt, repaired.electrical_tilt),
        (45, 45)
    );
    assert_eq!(repaired, lied_to, "the re-push carries the image's values");
    // Pushed again about 500 ms after the diverging acknowledgement, not only by the
    // reconciliation every 5 s.
    let gap = repaired_at.duration_since(*lied_at);
    assert!(
        gap < Duration::from_millis(2500),
        "re-pushed only {gap:?} later"
    );
    assert_eq!(s["A3"]["diverged"], false, "{}", s["A3"]);
    let metrics = c.client.get(&c.nodes[0].api, "/metrics").await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("sonraft_antenna_diverged_total ") && !l.ends_with(" 0")),
        "the divergence is not counted: {text}"
    );
    assert_eq!(
        c.client
            .get(&c.nodes[0].api, "/health")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_sent_to_the_simulator_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProc::start(
        binary(),
        dir.path(),
        &[
            "--cells",
            "30",
            "--period-ms",
            "1000",
            "--regions",
            "site-1",
        ],
    )
    .unwrap();
    let c = Cluster::start_with(1, &["--antennas", &sim.antennas[0]]).await;
    let out = std::process::Command::new(binary())
        .args(["sim", "export", "--cells", "30", "--regions", "site-1"])
        .output()
        .unwrap();
    let image: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        c.client
            .post(&c.nodes[0].api, "/image/import", &image)
            .await
            .unwrap()
            .status
            .is_success()
    );
    wait_for(&c, "30 sessions connected", |s| {
        s.len() == 30 && s.values().all(|v| v["connected"] == true)
    })
    .await;

    let mut rogue = tokio::net::TcpStream::connect(&sim.antennas[0])
        .await
        .unwrap();
    rogue
        .write_all(b"\x00\x00\x00\x05garbage-garbage")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), rogue.read_to_end(&mut reply)).await;
    let frame = protocol::split_frame(&mut BytesMut::from(&reply[..]))
        .ok()
        .flatten();
    assert!(
        matches!(frame, Some(Frame::Error { .. })),
        "expected an ERROR frame, got {reply:?}"
    );
    let state = sim.state(&c.client).await.unwrap();
    assert_eq!(state["bad_frames"], 1);
    // Every session receives another report after the garbage, over the same connection.
    let reports: HashMap<String, u64> = sessions(&c)
        .await
        .into_iter()
        .map(|(cell, v)| (cell, v["reports"].as_u64().unwrap_or(0)))
        .collect();
    let s = wait_for(&c, "a report on every session after the garbage", |s| {
        s.iter()
            .all(|(cell, v)| v["reports"].as_u64() > reports.get(cell).copied())
    })
    .await;
    assert!(
        s.values()
            .all(|v| v["connected"] == true && v["connects"] == 1),
        "{s:?}"
    );
}
