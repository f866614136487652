//! Fencing at the simulated antenna, over real loopback TCP: a controller at an older
//! ownership epoch than the antenna has seen is refused and its session closed, whether it
//! says hello, pushes a configuration, or was connected before the newer epoch arrived.

mod common;

use common::{Controller, antennas};
use serde_json::{Value, json};
use sonraft_protocol::{CellConfig, Frame};
use sonraft_sim::server::Sim;

fn plain_hello(sim: &Sim, controller: u64) -> Frame {
    Frame::Hello {
        cell: sim.topo.cells[0].id.clone(),
        controller,
    }
}

fn fenced_hello(sim: &Sim, controller: u64, epoch: u64) -> Frame {
    Frame::HelloFenced {
        cell: sim.topo.cells[0].id.clone(),
        controller,
        epoch,
    }
}

/// The configuration the antenna of cell 0 holds, with another hysteresis.
fn config_with_hysteresis(sim: &Sim, hysteresis: u8) -> CellConfig {
    let mut config = CellConfig {
        hysteresis,
        ..CellConfig::default()
    };
    config.pci = sim.status()["configs"][&sim.topo.cells[0].id]["pci"]
        .as_u64()
        .unwrap() as u16;
    config
}

fn fencing(sim: &Sim) -> Value {
    sim.status()["fencing"].clone()
}

fn cell_state(sim: &Sim) -> Value {
    sim.status()["configs"][&sim.topo.cells[0].id].clone()
}

#[tokio::test]
async fn a_plain_hello_and_config_set_still_work_at_epoch_0() {
    let (sim, addr) = antennas().await;
    let (mut c, welcome) = Controller::hello(addr, plain_hello(&sim, 1)).await;
    assert!(
        matches!(welcome, Some(Frame::Welcome { .. })),
        "{welcome:?}"
    );

    c.send(Frame::ConfigSet {
        txn: 1,
        config: config_with_hysteresis(&sim, 7),
    })
    .await;

    let ack = c.next().await;
    assert!(
        matches!(&ack, Some(Frame::ConfigAck { txn: 1, config }) if config.hysteresis == 7),
        "{ack:?}"
    );
    assert_eq!(cell_state(&sim)["newest_epoch"], 0);
    let f = fencing(&sim);
    assert_eq!(f["applied_by_controller"], json!({"1": 1}));
    assert_eq!(f["cells_fenced"], 0);
}

#[tokio::test]
async fn a_fenced_hello_at_a_newer_epoch_closes_the_older_session_with_stale_epoch() {
    let (sim, addr) = antennas().await;
    let (mut home, _) = Controller::hello(addr, plain_hello(&sim, 1)).await;

    let (_taker, welcome) = Controller::hello(addr, fenced_hello(&sim, 2, 5)).await;

    assert!(
        matches!(welcome, Some(Frame::Welcome { .. })),
        "{welcome:?}"
    );
    let message = home.expect_refused_as_stale().await;
    assert_eq!(
        message,
        "epoch 0 is older than epoch 5, which this antenna has seen"
    );
    assert_eq!(fencing(&sim)["superseded_sessions"], 1);
    assert_eq!(cell_state(&sim)["newest_epoch"], 5);
}

#[tokio::test]
async fn after_epoch_5_a_plain_hello_and_an_epoch_4_configuration_are_refused_and_nothing_applied()
{
    let (sim, addr) = antennas().await;
    let (mut taker, _) = Controller::hello(addr, fenced_hello(&sim, 2, 5)).await;
    let before = cell_state(&sim);

    let mut home = Controller::connect(addr).await;
    home.send(plain_hello(&sim, 1)).await;
    home.expect_refused_as_stale().await;
    taker
        .send(Frame::ConfigSetFenced {
            txn: 1,
            epoch: 4,
            config: config_with_hysteresis(&sim, 9),
        })
        .await;
    taker.expect_refused_as_stale().await;

    assert_eq!(
        cell_state(&sim),
        before,
        "a stale configuration was applied"
    );
    let f = fencing(&sim);
    assert_eq!(
        (&f["stale_hellos"], &f["stale_refused"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(f["applied_by_controller"], json!({}));
}

#[tokio::test]
async fn configurations_at_the_newest_epoch_are_applied_fenced_or_plain() {
    let (sim, addr) = antennas().await;
    let (mut taker, _) = Controller::hello(addr, fenced_hello(&sim, 2, 5)).await;

    taker
        .send(Frame::ConfigSetFenced {
            txn: 1,
            epoch: 5,
            config: config_with_hysteresis(&sim, 8),
        })
        .await;
    let fenced = taker.next().await;
    taker
        .send(Frame::ConfigSet {
            txn: 2,
            config: config_with_hysteresis(&sim, 9),
        })
        .await;
    let plain = taker.next().await;

    assert!(
        matches!(fenced, Some(Frame::ConfigAck { txn: 1, .. })),
        "{fenced:?}"
    );
    assert!(
        matches!(plain, Some(Frame::ConfigAck { txn: 2, .. })),
        "{plain:?}"
    );
    assert_eq!(cell_state(&sim)["hysteresis"], 9);
    let f = fencing(&sim);
    assert_eq!(f["applied_by_controller"], json!({"2": 2}));
    assert_eq!(f["cells_fenced"], 1);
    assert_eq!(
        (&f["stale_applied"], &f["epoch_conflicts"]),
        (&json!(0), &json!(0))
    );
}

#[tokio::test]
async fn a_configuration_at_a_newer_epoch_supersedes_like_a_hello() {
    let (sim, addr) = antennas().await;
    let (mut first, _) = Controller::hello(addr, fenced_hello(&sim, 1, 3)).await;
    let (mut second, _) = Controller::hello(addr, fenced_hello(&sim, 2, 3)).await;

    second
        .send(Frame::ConfigSetFenced {
            txn: 1,
            epoch: 4,
            config: config_with_hysteresis(&sim, 8),
        })
        .await;

    assert!(matches!(second.next().await, Some(Frame::ConfigAck { .. })));
    first.expect_refused_as_stale().await;
    assert_eq!(cell_state(&sim)["newest_epoch"], 4);
    assert_eq!(fencing(&sim)["superseded_sessions"], 1);
}

#[tokio::test]
async fn the_antenna_remembers_the_newest_epoch_after_its_controller_left() {
    let (sim, addr) = antennas().await;
    let (taker, _) = Controller::hello(addr, fenced_hello(&sim, 2, 5)).await;
    drop(taker);

    let mut home = Controller::connect(addr).await;
    home.send(fenced_hello(&sim, 1, 4)).await;

    let message = home.expect_refused_as_stale().await;
    assert_eq!(
        message,
        "epoch 4 is older than epoch 5, which this antenna has seen"
    );
    assert_eq!(fencing(&sim)["stale_hellos"], 1);
}
