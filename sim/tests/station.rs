//! Station sessions at the simulator, over real loopback TCP: one connection per cell site
//! carries every cell of it (welcome, reports, configurations), fenced at one epoch for the
//! whole site against station and cell sessions alike.

mod common;

use std::time::Duration;

use common::{Controller, antennas, reporting_antennas};
use serde_json::{Value, json};
use sonraft_protocol::{CellConfig, Frame, ReportView, code, split_cell_report};
use sonraft_sim::server::{FaultKind, Sim};

/// The first cell site (`S00000`, four cells: three sectors and an NR capacity cell).
const STATION: &str = "S00000";

fn station_cells(sim: &Sim) -> Vec<String> {
    sim.topo
        .cells
        .iter()
        .filter(|c| sim.topo.sites[c.site].id == STATION)
        .map(|c| c.id.clone())
        .collect()
}

fn station_hello(controller: u64, epoch: u64) -> Frame {
    Frame::HelloStation {
        station: STATION.into(),
        controller,
        epoch,
    }
}

fn cell_state(sim: &Sim, cell: &str) -> Value {
    sim.status()["configs"][cell].clone()
}

/// The configuration cell `cell` holds, with another hysteresis.
fn config_with_hysteresis(sim: &Sim, cell: &str, hysteresis: u8) -> CellConfig {
    CellConfig {
        hysteresis,
        pci: cell_state(sim, cell)["pci"].as_u64().unwrap() as u16,
        ..CellConfig::default()
    }
}

/// Polls `GET /state`'s open sessions until they are `want` (they are counted just after
/// the welcome is written, so a moment after the controller reads it).
async fn sessions_become(sim: &Sim, want: Value) {
    for _ in 0..100 {
        if sim.status()["sessions"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("sessions are {}, not {want}", sim.status()["sessions"]);
}

/// A station session's reports, a period at a time.
struct Reports {
    controller: Controller,
    /// The first report of the next period, read while looking for the end of one.
    pending: Option<(u64, String)>,
}

impl Reports {
    /// The next period's end and the cells that reported in it, in order. Each report is
    /// split with [`split_cell_report`], and its embedded body read as a `REPORT`.
    async fn next_period(&mut self) -> (u64, Vec<String>) {
        let mut period = self.pending.take().map(|(end, cell)| (end, vec![cell]));
        loop {
            let body = self
                .controller
                .next_body()
                .await
                .expect("the station closed its session");
            let (cell, report) = split_cell_report(&body).expect("a station sent a bad report");
            let end = ReportView::parse(&report).unwrap().period_end_ms;
            match &mut period {
                None => period = Some((end, vec![cell])),
                Some((e, cells)) if *e == end => cells.push(cell),
                Some(_) => {
                    self.pending = Some((end, cell));
                    return period.unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn a_station_hello_is_welcomed_with_every_cell_of_its_site_and_its_configuration() {
    let (sim, addr) = antennas().await;

    let (_c, welcome) = Controller::hello(addr, station_hello(1, 0)).await;

    let Some(Frame::WelcomeStation {
        station,
        period_ms,
        cells,
    }) = welcome
    else {
        panic!("expected WELCOME_STATION, got {welcome:?}");
    };
    assert_eq!((station.as_str(), period_ms), (STATION, 60_000));
    let ids: Vec<String> = cells.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, station_cells(&sim));
    assert_eq!(ids.len(), 4);
    for (id, config) in &cells {
        let state = cell_state(&sim, id);
        assert_eq!(u64::from(config.pci), state["pci"], "{id}");
        assert_eq!(u64::from(config.hysteresis), state["hysteresis"], "{id}");
        assert_eq!(
            config.relations.len(),
            state["relations"].as_object().unwrap().len()
        );
    }
    sessions_become(&sim, json!({"cell": 0, "station": 1})).await;
}

#[tokio::test]
async fn every_period_each_reporting_cell_sends_one_report_and_an_outage_silences_only_its_cell() {
    let (sim, addr) = reporting_antennas(250).await;
    let (controller, _) = Controller::hello(addr, station_hello(1, 0)).await;
    let mut reports = Reports {
        controller,
        pending: None,
    };
    let cells = station_cells(&sim);

    let (first, in_first) = reports.next_period().await;
    let (second, in_second) = reports.next_period().await;
    assert_eq!(in_first, cells);
    assert_eq!(in_second, cells);
    assert!(second > first, "periods {first} then {second}");

    sim.plant(&cells[1], Some(FaultKind::Outage)).unwrap();
    // The period in flight when the fault was planted may still carry the cell.
    reports.next_period().await;
    let (_, during) = reports.next_period().await;
    let (_, after) = reports.next_period().await;

    let mut without = cells.clone();
    without.remove(1);
    assert_eq!(during, without);
    assert_eq!(after, without);
    assert_eq!(sim.status()["sessions"]["station"], 1);
}

#[tokio::test]
async fn a_late_cell_of_a_station_reports_most_of_a_period_after_the_others() {
    let (sim, addr) = reporting_antennas(500).await;
    let cells = station_cells(&sim);
    sim.plant(&cells[0], Some(FaultKind::Late)).unwrap();
    let (mut c, _) = Controller::hello(addr, station_hello(1, 0)).await;

    let mut arrivals = Vec::new();
    for _ in 0..3 * cells.len() {
        let body = c.next_body().await.expect("the station closed its session");
        let (cell, report) = split_cell_report(&body).unwrap();
        let end = ReportView::parse(&report).unwrap().period_end_ms;
        arrivals.push((end, cell, tokio::time::Instant::now()));
    }

    let mut compared = 0;
    for (end, _, late_at) in arrivals.iter().filter(|a| a.1 == cells[0]) {
        let on_time = arrivals
            .iter()
            .filter(|a| a.0 == *end && a.1 != cells[0])
            .map(|a| a.2)
            .max();
        if let Some(on_time) = on_time {
            // Held 0.8 periods (400 ms); half a period leaves room for a slow scheduler.
            assert!(
                *late_at - on_time >= Duration::from_millis(250),
                "the late cell's report came {:?} after the others",
                *late_at - on_time
            );
            compared += 1;
        }
    }
    assert!(
        compared > 0,
        "no period had both the late cell and the others: {arrivals:?}"
    );
    assert_eq!(sim.status()["sessions"]["station"], 1);
}

#[tokio::test]
async fn a_cell_configuration_on_a_station_session_is_applied_and_acknowledged() {
    let (sim, addr) = antennas().await;
    let cell = station_cells(&sim)[2].clone();
    let (mut c, _) = Controller::hello(addr, station_hello(1, 2)).await;

    c.send(Frame::CellConfigSet {
        txn: 1,
        epoch: 2,
        cell: cell.clone(),
        config: config_with_hysteresis(&sim, &cell, 7),
    })
    .await;

    let ack = c.next().await;
    assert!(
        matches!(&ack, Some(Frame::CellConfigAck { txn: 1, cell: acked, config })
            if acked == &cell && config.hysteresis == 7),
        "{ack:?}"
    );
    assert_eq!(cell_state(&sim, &cell)["hysteresis"], 7);
    let fencing = sim.status()["fencing"].clone();
    assert_eq!(fencing["applied_by_controller"], json!({"1": 1}));
    assert_eq!(
        (&fencing["stale_applied"], &fencing["epoch_conflicts"]),
        (&json!(0), &json!(0))
    );
}

#[tokio::test]
async fn a_newer_station_hello_supersedes_an_older_cell_session_of_one_of_its_cells() {
    let (sim, addr) = antennas().await;
    let cells = station_cells(&sim);
    let (mut cell_session, _) = Controller::hello(
        addr,
        Frame::Hello {
            cell: cells[1].clone(),
            controller: 1,
        },
    )
    .await;

    let (_station, welcome) = Controller::hello(addr, station_hello(2, 3)).await;

    assert!(
        matches!(welcome, Some(Frame::WelcomeStation { .. })),
        "{welcome:?}"
    );
    let message = cell_session.expect_refused_as_stale().await;
    assert_eq!(
        message,
        "epoch 0 is older than epoch 3, which this antenna has seen"
    );
    for cell in &cells {
        assert_eq!(cell_state(&sim, cell)["newest_epoch"], 3, "{cell}");
    }
    let elsewhere = &sim.topo.cells[cells.len()].id;
    assert_eq!(cell_state(&sim, elsewhere)["newest_epoch"], 0);
    assert_eq!(sim.status()["fencing"]["superseded_sessions"], 1);
}

#[tokio::test]
async fn a_newer_cell_hello_supersedes_an_older_station_session() {
    let (sim, addr) = antennas().await;
    let cells = station_cells(&sim);
    let (mut station, _) = Controller::hello(addr, station_hello(1, 1)).await;

    let (_cell_session, welcome) = Controller::hello(
        addr,
        Frame::HelloFenced {
            cell: cells[3].clone(),
            controller: 2,
            epoch: 2,
        },
    )
    .await;

    assert!(
        matches!(welcome, Some(Frame::Welcome { .. })),
        "{welcome:?}"
    );
    let message = station.expect_refused_as_stale().await;
    assert_eq!(
        message,
        "epoch 1 is older than epoch 2, which this antenna has seen"
    );
    sessions_become(&sim, json!({"cell": 1, "station": 0})).await;
}

#[tokio::test]
async fn a_station_hello_older_than_any_of_its_cells_has_seen_is_refused() {
    let (sim, addr) = antennas().await;
    let cells = station_cells(&sim);
    let (_taker, _) = Controller::hello(
        addr,
        Frame::HelloFenced {
            cell: cells[2].clone(),
            controller: 2,
            epoch: 4,
        },
    )
    .await;

    let mut home = Controller::connect(addr).await;
    home.send(station_hello(1, 3)).await;

    let message = home.expect_refused_as_stale().await;
    assert_eq!(
        message,
        "epoch 3 is older than epoch 4, which this antenna has seen"
    );
    assert_eq!(cell_state(&sim, &cells[0])["newest_epoch"], 0);
    assert_eq!(sim.status()["fencing"]["stale_hellos"], 1);
}

#[tokio::test]
async fn an_older_epoch_cell_configuration_on_a_station_session_is_refused_and_nothing_applied() {
    let (sim, addr) = antennas().await;
    let cell = station_cells(&sim)[0].clone();
    let (mut c, _) = Controller::hello(addr, station_hello(2, 5)).await;
    let before = cell_state(&sim, &cell);

    c.send(Frame::CellConfigSet {
        txn: 1,
        epoch: 4,
        cell: cell.clone(),
        config: config_with_hysteresis(&sim, &cell, 9),
    })
    .await;

    c.expect_refused_as_stale().await;
    assert_eq!(
        cell_state(&sim, &cell),
        before,
        "a stale configuration was applied"
    );
    let fencing = sim.status()["fencing"].clone();
    assert_eq!(fencing["stale_refused"], 1);
    assert_eq!(fencing["applied_by_controller"], json!({}));
}

#[tokio::test]
async fn a_configuration_of_a_cell_of_another_station_is_refused_with_unknown_cell() {
    let (sim, addr) = antennas().await;
    let other = sim.topo.cells[station_cells(&sim).len()].id.clone();
    let before = cell_state(&sim, &other);
    let (mut c, _) = Controller::hello(addr, station_hello(1, 0)).await;

    c.send(Frame::CellConfigSet {
        txn: 1,
        epoch: 0,
        cell: other.clone(),
        config: config_with_hysteresis(&sim, &other, 9),
    })
    .await;

    let message = c.expect_error(code::UNKNOWN_CELL).await;
    assert_eq!(message, format!("no cell {other} at station {STATION}"));
    assert_eq!(cell_state(&sim, &other), before);
}

#[tokio::test]
async fn an_unknown_station_is_refused_with_unknown_cell() {
    let (sim, addr) = antennas().await;
    let mut c = Controller::connect(addr).await;

    c.send(Frame::HelloStation {
        station: "S99999".into(),
        controller: 1,
        epoch: 0,
    })
    .await;

    assert_eq!(
        c.expect_error(code::UNKNOWN_CELL).await,
        "no station S99999"
    );
    assert_eq!(sim.status()["sessions"], json!({"cell": 0, "station": 0}));
}
