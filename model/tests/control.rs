//! Command format 8: control of a cell site's antennas moves between nodes, judged on apply.

mod common;

use common::*;
use sonraft_model::command::{COMMAND_FORMAT, Command, Envelope, Response};
use sonraft_model::model::control::{ControlMove, ControlMoves, MAX_REASON};
use sonraft_model::model::image::{Changes, NetworkImage};

fn moves(list: &[(&str, &str, u64, &str)]) -> Command {
    Command::Control(ControlMoves {
        moves: list
            .iter()
            .map(|(cell_site, from, epoch, to)| ControlMove {
                cell_site: (*cell_site).into(),
                from: (*from).into(),
                epoch: *epoch,
                to: (*to).into(),
            })
            .collect(),
        reason: "test".into(),
    })
}

fn apply(
    img: &mut NetworkImage,
    index: u64,
    command: Command,
) -> (Vec<Result<u64, String>>, Changes) {
    let env = Envelope::new(&command, 1_000 + index).expect("encode");
    let mut changes = Changes::default();
    match img.apply_entry(index, &env, &mut changes).expect("apply") {
        Response::Control(r) => (r, changes),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_cell_site_is_controlled_by_its_home_at_epoch_zero_until_control_moves() {
    let mut img = image();
    assert_eq!(img.controller("A"), Some(("south", 0)));
    assert_eq!(img.controller("nowhere"), None);
    let a1 = img.cells["A-1"].clone();
    assert!(img.controls("south", &a1));

    let (r, changes) = apply(&mut img, 7, moves(&[("A", "south", 0, "north")]));
    assert_eq!(r, vec![Ok(7)]);
    assert!(changes.control.contains("A"));
    assert_eq!(img.controller("A"), Some(("north", 7)));
    assert_eq!(img.control["A"].since_ms, 1_007);
    assert!(img.controls("north", &a1) && !img.controls("south", &a1));
    // B did not move.
    assert_eq!(img.controller("B"), Some(("south", 0)));

    // Back home: a new, larger epoch (an antenna that saw 7 accepts it).
    let (r, _) = apply(&mut img, 9, moves(&[("A", "north", 7, "south")]));
    assert_eq!(r, vec![Ok(9)]);
    assert_eq!(img.controller("A"), Some(("south", 9)));
}

#[test]
fn a_move_computed_from_a_stale_view_is_refused_and_changes_nothing() {
    let mut img = image();
    apply(&mut img, 5, moves(&[("A", "south", 0, "north")]));
    // Another leader saw A at home, epoch 0: its move loses.
    let (r, changes) = apply(
        &mut img,
        6,
        moves(&[("A", "south", 0, "west"), ("B", "south", 0, "west")]),
    );
    assert!(
        r[0].as_ref()
            .unwrap_err()
            .contains("controlled by north at epoch 5"),
        "{r:?}"
    );
    assert_eq!(r[1], Ok(6));
    assert_eq!(changes.control.len(), 1);
    assert_eq!(img.controller("A"), Some(("north", 5)));
    // The right site, the wrong epoch.
    let (r, _) = apply(&mut img, 8, moves(&[("A", "north", 4, "south")]));
    assert!(r[0].is_err(), "{r:?}");
    // Unknown cell site; a move to the current controller.
    let (r, _) = apply(
        &mut img,
        9,
        moves(&[("Q", "south", 0, "north"), ("A", "north", 5, "north")]),
    );
    assert!(r[0].as_ref().unwrap_err().contains("no cell site Q"));
    assert!(r[1].as_ref().unwrap_err().contains("already controlled"));
    assert_eq!(img.controller("A"), Some(("north", 5)));
}

#[test]
fn a_malformed_control_command_is_refused_whole() {
    let mut img = image();
    let mut long = moves(&[("A", "south", 0, "north")]);
    if let Command::Control(m) = &mut long {
        m.reason = "x".repeat(MAX_REASON + 1);
    }
    let (r, changes) = apply(&mut img, 3, long);
    assert!(r[0].is_err());
    assert!(changes.control.is_empty());
    let (r, _) = apply(&mut img, 4, moves(&[("A", "south", 0, "no/slash")]));
    assert!(r[0].is_err());
    assert_eq!(img.controller("A"), Some(("south", 0)));
}

#[test]
fn control_is_command_format_8() {
    assert_eq!(moves(&[]).format(), 8);
    const { assert!(COMMAND_FORMAT >= 8) };
}
