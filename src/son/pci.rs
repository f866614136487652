//! PCI conflict resolution, per frequency.
//!
//! A cell's PCI must differ from every first-order neighbour (else a *collision*) and from every
//! second-order neighbour — another neighbour of one of its neighbours (else a *confusion* at
//! that neighbour). Of two cells in conflict, the one with the greater id changes, so the two
//! owning sites never both move; it takes the lowest PCI clean against its first- and
//! second-order neighbours on its frequency. The read set holds every cell whose PCI the choice
//! relied on: a concurrent change to any of them makes the proposal a conflict, recomputed.

use std::collections::BTreeSet;

use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Value};

use super::Proposal;
use super::view::RadioView;

/// Proposals for this period.
pub fn propose(view: &RadioView, node: u64, now_ms: u64) -> Vec<Proposal> {
    let mut out = Vec::new();
    let mut planned: Vec<(u32, u16)> = Vec::new();
    for &c in &view.own {
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
        let Some(pci) = (0..=me.rat.max_pci()).find(|p| !used.contains(p)) else {
            tracing::warn!(cell = view.id(c), "no clean PCI left for a {kind}");
            continue;
        };
        planned.push((c, pci));
        let mut read_set = vec![view.read_cell(c)];
        read_set.extend(related.iter().map(|x| view.read_cell(*x)));
        out.push(Proposal {
            change_set: ChangeSet {
                origin: Origin { node, function: Function::PciConflict },
                reason: format!(
                    "PCI {kind}: {} shares PCI {} with {} on EARFCN {}; {pci} is the lowest PCI clean against first- and second-order neighbours",
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
