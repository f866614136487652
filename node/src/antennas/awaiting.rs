//! Committed SON change sets whose pushes the antennas have not all acknowledged yet: what the
//! close-to-ack latency is measured on.
//!
//! Every acknowledgement of a cell (and every push that finds a cell already in sync) asks
//! which change sets it completes. At 100,000 cells that is hundreds of thousands of questions
//! a period, against up to [`MAX_AWAITED`] change sets after a burst: each is answered from
//! the cell's own list, not by walking every awaited change set.

use std::collections::{BTreeMap, HashMap};

/// Most committed change sets whose acknowledgements are awaited at once (each holds the ids
/// of the cells it reconfigures, a few hundred bytes); the oldest are forgotten beyond.
pub const MAX_AWAITED: usize = 50_000;

/// When the period a change set answers ended (at the antennas) and when this node closed it
/// (every report in, or its grace passed), in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closing {
    pub end_ms: u64,
    pub closed_ms: u64,
}

struct ChangeSet {
    closing: Closing,
    cells: Vec<String>,
    /// Cells still to acknowledge.
    left: usize,
}

/// Change sets awaited, by log index, and each cell's awaited indices.
#[derive(Default)]
pub struct Awaiting {
    sets: BTreeMap<u64, ChangeSet>,
    /// Per cell, the indices of its awaited change sets, ascending.
    by_cell: HashMap<String, Vec<u64>>,
    forgotten: u64,
}

impl Awaiting {
    /// Awaits the change set committed at `index` for the period of `closing`, until every one
    /// of `cells` acknowledged a configuration at least that new.
    pub fn insert(&mut self, index: u64, closing: Closing, cells: Vec<String>) {
        if cells.is_empty() || self.sets.contains_key(&index) {
            return;
        }
        for cell in &cells {
            let list = self.by_cell.entry(cell.clone()).or_default();
            let at = list.partition_point(|&i| i < index);
            list.insert(at, index);
        }
        let left = cells.len();
        self.sets.insert(
            index,
            ChangeSet {
                closing,
                cells,
                left,
            },
        );
        // A cell whose session stopped (it moved to another site, or left the image) never
        // acknowledges: forget the oldest change sets rather than wait for them for ever.
        while self.sets.len() > MAX_AWAITED {
            let Some((i, set)) = self.sets.pop_first() else {
                break;
            };
            self.forgotten += 1;
            for cell in &set.cells {
                self.unlink(cell, i);
            }
        }
    }

    fn unlink(&mut self, cell: &str, index: u64) {
        if let Some(list) = self.by_cell.get_mut(cell) {
            list.retain(|&i| i != index);
            if list.is_empty() {
                self.by_cell.remove(cell);
            }
        }
    }

    /// `cell`'s antenna has the configuration of the image at `index`: returns the periods of
    /// the change sets that completes.
    pub fn acked(&mut self, cell: &str, index: u64) -> Vec<Closing> {
        let Some(list) = self.by_cell.get_mut(cell) else {
            return Vec::new();
        };
        let upto = list.partition_point(|&i| i <= index);
        let done: Vec<u64> = list.drain(..upto).collect();
        if list.is_empty() {
            self.by_cell.remove(cell);
        }
        let mut ends = Vec::new();
        for i in done {
            let Some(set) = self.sets.get_mut(&i) else {
                continue;
            };
            set.left -= 1;
            if set.left == 0 {
                ends.push(set.closing);
                self.sets.remove(&i);
            }
        }
        ends
    }

    /// Change sets awaited now.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Change sets forgotten unacknowledged, to keep within [`MAX_AWAITED`].
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A period that ended at `ms` and closed at once.
    fn at(ms: u64) -> Closing {
        Closing {
            end_ms: ms,
            closed_ms: ms,
        }
    }

    fn ends(done: Vec<Closing>) -> Vec<u64> {
        done.iter().map(|c| c.end_ms).collect()
    }

    fn cells(c: &[&str]) -> Vec<String> {
        c.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn a_change_set_completes_when_its_last_cell_acknowledges_that_index_or_a_newer_one() {
        let mut a = Awaiting::default();
        a.insert(10, at(1_000), cells(&["c1", "c2"]));
        a.insert(12, at(2_000), cells(&["c1"]));
        // An older configuration completes nothing.
        assert!(a.acked("c1", 9).is_empty());
        assert!(a.acked("c1", 10).is_empty());
        assert_eq!(a.len(), 2);
        // c2 at a newer index completes 10 only.
        assert_eq!(ends(a.acked("c2", 11)), vec![1_000]);
        assert_eq!(ends(a.acked("c1", 20)), vec![2_000]);
        assert_eq!(a.len(), 0);
        assert!(a.by_cell.is_empty());
        // A cell acknowledged again later completes nothing twice.
        assert!(a.acked("c1", 30).is_empty());
    }

    #[test]
    fn beyond_the_bound_the_oldest_are_forgotten_and_leave_no_trace_in_the_cells_lists() {
        let mut a = Awaiting::default();
        for i in 0..(MAX_AWAITED as u64 + 5) {
            a.insert(i + 1, at(i), cells(&["never", &format!("c{i}")]));
        }
        assert_eq!(a.len(), MAX_AWAITED);
        assert_eq!(a.forgotten(), 5);
        assert_eq!(a.by_cell["never"].len(), MAX_AWAITED);
        assert!(!a.by_cell.contains_key("c0"));
        // The forgotten ones complete nothing; the kept ones still do.
        assert!(a.acked("c2", u64::MAX).is_empty());
        assert!(a.acked("c5", u64::MAX).is_empty());
        assert_eq!(ends(a.acked("never", 6)), vec![5]);
        assert!(a.acked("c6", u64::MAX).is_empty());
        assert_eq!(a.len(), MAX_AWAITED - 1);
    }

    #[test]
    fn indices_arriving_out_of_order_are_kept_sorted_per_cell() {
        let mut a = Awaiting::default();
        a.insert(30, at(3), cells(&["c"]));
        a.insert(10, at(1), cells(&["c"]));
        a.insert(20, at(2), cells(&["c"]));
        assert_eq!(ends(a.acked("c", 20)), vec![1, 2]);
        assert_eq!(ends(a.acked("c", 30)), vec![3]);
    }
}
