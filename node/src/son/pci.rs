//! PCI conflict resolution, per frequency.
//!
//! A cell's PCI must differ from every first-order neighbour (else a *collision*) and from every
//! second-order neighbour — another neighbour of one of its neighbours (else a *confusion* at
//! that neighbour). Of two cells in conflict, the one with the greater id changes, so the two
//! owning sites never both move; it takes a PCI clean against its first- and second-order
//! neighbours on its frequency: of those, the one whose value mod 3 (and then mod 30) it shares
//! with the fewest first-order neighbours and co-site cells on its frequency, then the lowest.
//! LTE PCIs are 0..=503, NR's 0..=1007; the tuning's reserved PCIs are never chosen. The read set holds every cell whose PCI the choice
//! relied on: a concurrent change to any of them makes the proposal a conflict, recomputed.

use std::collections::BTreeSet;

use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};

use super::Proposal;
use super::view::RadioView;

/// Whether a first- or second-order neighbour of `c` on its frequency has its PCI and the
/// lower id: the question the search below answers with sets, asked first without them (the
/// search visits every own cell each time it runs, and at 100,000 cells almost none is in
/// conflict).
fn in_conflict(view: &RadioView, c: u32) -> bool {
    let me = view.cell(c);
    let clash = |x: u32| {
        x != c
            && view.cell(x).arfcn == me.arfcn
            && view.cell(x).pci == me.pci
            && view.id(x) < view.id(c)
    };
    view.adjacent(c)
        .any(|n| clash(n) || view.adjacent(n).any(clash))
}

/// Proposals for this period.
pub fn propose(view: &RadioView, node: u64, now_ms: u64) -> Vec<Proposal> {
    let mut out = Vec::new();
    let mut planned: Vec<(u32, u16)> = Vec::new();
    for &c in &view.own {
        if !in_conflict(view, c) {
            continue;
        }
        let me = view.cell(c);
        let first: Vec<u32> = view.neighbours(c);
        let mut second: BTreeSet<u32> = BTreeSet::new();
        for &n in &first {
            second.extend(view.neighbours(n));
        }
        second.remove(&c);
        let same_freq = |x: &u32| view.cell(*x).arfcn == me.arfcn;
        let related: BTreeSet<u32> = first
            .iter()
            .copied()
            .chain(second.iter().copied())
            .filter(same_freq)
            .collect();
        let Some(&other) = related
            .iter()
            .find(|&&x| view.cell(x).pci == me.pci && view.id(x) < view.id(c))
        else {
            continue;
        };
        let kind = if first.contains(&other) {
            "collision"
        } else {
            "confusion"
        };
        let mut used: BTreeSet<u16> = related.iter().map(|x| view.cell(*x).pci).collect();
        used.extend(
            planned
                .iter()
                .filter(|(x, _)| related.contains(x))
                .map(|(_, p)| *p),
        );
        // Of the clean PCIs, the one sharing its PCI mod 3 (the primary synchronisation
        // signal, and LTE's reference-signal shift) with fewest cells it can interfere with —
        // first-order neighbours and co-site cells on its frequency — then mod 30 (uplink
        // reference-signal groups, LTE and NR alike), then the lowest.
        let adjacent: BTreeSet<u32> = first
            .iter()
            .copied()
            .chain(view.co_site(c))
            .filter(same_freq)
            .collect();
        let pci_of = |x: u32| {
            planned
                .iter()
                .rev()
                .find(|(y, _)| *y == x)
                .map_or(view.cell(x).pci, |(_, p)| *p)
        };
        let around: Vec<u16> = adjacent.iter().map(|x| pci_of(*x)).collect();
        let clashes = |p: u16, m: u16| around.iter().filter(|q| *q % m == p % m).count();
        let reserved = &view.tuning.pci.reserved;
        let Some(pci) = (0..=me.rat.max_pci())
            .filter(|p| !used.contains(p) && !reserved.contains(p))
            .min_by_key(|p| (clashes(*p, 3), clashes(*p, 30), *p))
        else {
            tracing::warn!(cell = view.id(c), "no clean PCI left for a {kind}");
            continue;
        };
        let mod3 = clashes(pci, 3);
        planned.push((c, pci));
        let mut read_set = vec![view.read_cell(c)];
        read_set.extend(related.union(&adjacent).map(|x| view.read_cell(*x)));
        out.push(Proposal {
            change_set: ChangeSet {
                origin: Origin { node, function: Function::PciConflict },
                reason: format!(
                    "PCI {kind}: {} shares PCI {} with {} on EARFCN {}; {pci} is clean against first- and second-order neighbours and shares its value mod 3 with {mod3} neighbouring or co-site cells",
                    view.id(c),
                    me.pci,
                    view.id(other),
                    me.arfcn
                ),
                read_set,
                writes: vec![Write { entity: EntityRef::cell(view.id(c)), param: Param::Pci, value: Value::Int(pci.into()) }],
                proposed_at_ms: now_ms,
            },
            cells: vec![view.id(c).to_string()],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use sonraft_raft::changeset::{Function, ReadVersion};
    use sonraft_raft::model::{EntityRef, Param, Value};

    use super::super::testing::{cell, image, relation, view};
    use super::*;

    /// `(cell, new pci)` of each proposal.
    fn moves(proposals: &[Proposal]) -> Vec<(String, Value)> {
        proposals
            .iter()
            .map(|p| {
                let cs = &p.change_set;
                assert_eq!(cs.origin.function, Function::PciConflict);
                assert_eq!(cs.writes.len(), 1);
                let w = &cs.writes[0];
                assert_eq!(w.param, Param::Pci);
                (w.entity.to_string(), w.value.clone())
            })
            .collect()
    }

    #[test]
    fn the_new_pci_avoids_the_mod_3_of_neighbours_and_co_site_cells() {
        // A2 collides with its co-site neighbour A1 (PCI 4, mod 3 = 1); Z1 holds 0 (mod 3 = 0).
        // 1 is the lowest clean PCI but shares mod 3 with A1; 2 shares it with nobody.
        let img = image(
            vec![
                cell("A1", 4, 1300),
                cell("A2", 4, 1300),
                cell("Z1", 0, 1300),
            ],
            vec![relation("A2", "A1"), relation("A2", "Z1")],
        );
        assert_eq!(
            moves(&propose(&view(&img), 1, 0)),
            [("cell/A2".to_string(), Value::Int(2))]
        );
        // A co-site cell on the frequency counts without a relation to it: A3 holds 6
        // (mod 3 = 0), so 0, clean and lowest, loses to 2.
        let img = image(
            vec![
                cell("A1", 4, 1300),
                cell("A2", 4, 1300),
                cell("A3", 6, 1300),
            ],
            vec![relation("A2", "A1")],
        );
        let p = propose(&view(&img), 1, 0);
        assert_eq!(moves(&p), [("cell/A2".to_string(), Value::Int(2))]);
        assert!(
            p[0].change_set
                .read_set
                .iter()
                .any(|r| r.entity == EntityRef::cell("A3")),
            "it read the co-site PCI it relied on"
        );
    }

    #[test]
    fn reserved_pcis_are_never_chosen() {
        let img = image(
            vec![
                cell("A1", 4, 1300),
                cell("A2", 4, 1300),
                cell("Z1", 0, 1300),
            ],
            vec![relation("A2", "A1"), relation("A2", "Z1")],
        );
        let mut v = view(&img);
        v.tuning.pci.reserved = [2, 5].into();
        // 2 was the choice (see above); of the rest, 8 is the lowest sharing mod 3 with nobody.
        assert_eq!(
            moves(&propose(&v, 1, 0)),
            [("cell/A2".to_string(), Value::Int(8))]
        );
    }

    #[test]
    fn a_collision_moves_the_greater_id_to_the_lowest_pci_clean_around_it() {
        // A1 -> A2 share PCI 5; A2's other neighbour A3 holds 0, A3's neighbour A4 holds 1.
        let img = image(
            vec![
                cell("A1", 5, 1300),
                cell("A2", 5, 1300),
                cell("A3", 0, 1300),
                cell("A4", 1, 1300),
            ],
            vec![
                relation("A1", "A2"),
                relation("A2", "A3"),
                relation("A3", "A4"),
            ],
        );
        let p = propose(&view(&img), 1, 0);
        assert_eq!(moves(&p), [("cell/A2".to_string(), Value::Int(2))]);
        let cs = &p[0].change_set;
        assert!(cs.reason.contains("collision"), "{}", cs.reason);
        // It read every PCI its choice relied on: itself, A1, A3 (first order), A4 (second).
        let read: Vec<&ReadVersion> = cs.read_set.iter().collect();
        for id in ["A1", "A2", "A3", "A4"] {
            assert!(
                read.iter()
                    .any(|r| r.entity == EntityRef::cell(id) && r.version == img.cells[id].version),
                "{id} missing from {read:?}"
            );
        }
        assert_eq!(p[0].cells, ["A2"]);
    }

    #[test]
    fn a_confusion_between_two_neighbours_of_a_cell_moves_the_greater_id() {
        // B1 and B2 are both neighbours of A1 (not of each other) and share PCI 7.
        let img = image(
            vec![
                cell("A1", 1, 1300),
                cell("AB1", 7, 1300),
                cell("AB2", 7, 1300),
            ],
            vec![relation("A1", "AB1"), relation("A1", "AB2")],
        );
        let p = propose(&view(&img), 1, 0);
        assert_eq!(moves(&p), [("cell/AB2".to_string(), Value::Int(0))]);
        assert!(
            p[0].change_set.reason.contains("confusion"),
            "{}",
            p[0].change_set.reason
        );
    }

    #[test]
    fn the_same_pci_on_another_frequency_or_three_hops_away_is_no_conflict() {
        let img = image(
            vec![
                cell("A1", 5, 1300),
                cell("A2", 5, 3100),
                cell("A3", 9, 1300),
                cell("A4", 2, 1300),
                cell("A5", 3, 1300),
                cell("A6", 9, 1300),
            ],
            vec![
                relation("A1", "A2"),
                relation("A3", "A4"),
                relation("A4", "A5"),
                relation("A5", "A6"),
            ],
        );
        assert!(moves(&propose(&view(&img), 1, 0)).is_empty());
    }

    #[test]
    fn a_conflict_whose_greater_id_is_another_sites_cell_is_left_to_that_site() {
        let img = image(
            vec![cell("A1", 5, 1300), cell("Z1", 5, 1300)],
            vec![relation("A1", "Z1")],
        );
        assert!(
            propose(&view(&img), 1, 0).is_empty(),
            "site-a moved its smaller id"
        );
        let theirs = propose(&RadioView::capture(&img, "site-b"), 2, 0);
        assert_eq!(moves(&theirs), [("cell/Z1".to_string(), Value::Int(0))]);
    }

    #[test]
    fn cells_moving_in_the_same_period_do_not_pick_the_same_pci() {
        // A2 and A3 both collide with A1 and neighbour each other.
        let img = image(
            vec![
                cell("A1", 5, 1300),
                cell("A2", 5, 1300),
                cell("A3", 5, 1300),
            ],
            vec![
                relation("A1", "A2"),
                relation("A1", "A3"),
                relation("A2", "A3"),
            ],
        );
        let m = moves(&propose(&view(&img), 1, 0));
        assert_eq!(
            m,
            [
                ("cell/A2".to_string(), Value::Int(0)),
                ("cell/A3".to_string(), Value::Int(1))
            ]
        );
    }

    #[test]
    fn an_nr_cell_may_take_a_pci_above_the_lte_range() {
        // Every PCI 0..=503 is used around A2 on its NR carrier; NR goes up to 1007.
        let mut cells = vec![cell("A1", 5, 632_628), cell("A2", 5, 632_628)];
        let mut relations = vec![relation("A1", "A2")];
        for pci in 0..=503u16 {
            let id = format!("AN{pci:03}");
            cells.push(cell(&id, pci, 632_628));
            relations.push(relation("A2", &id));
        }
        let img = image(cells, relations);
        let m = moves(&propose(&view(&img), 1, 0));
        assert!(
            m.contains(&("cell/A2".to_string(), Value::Int(504))),
            "{m:?}"
        );
    }
}
