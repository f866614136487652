//! The open trials of the SON controls ([`crate::son::SonState::trials`]), with an index by
//! function and cell.
//!
//! Every SON change set a node proposes asks, per cell it reconfigures, whether its function
//! has a change under verification there: once when the node drops proposals the controls
//! would refuse, and again when the entry applies, on every node. Up to
//! [`crate::son::MAX_TRIALS`] trials are open at once; scanning them all for each of the
//! thousands of change sets a period brings at 100,000 cells made applying them the
//! bottleneck. The index answers from the cell's own trials.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::changeset::Function;
use crate::model::CellId;
use crate::son::Trial;

/// Open trials by index (their id): reads go through [`std::ops::Deref`] to the map, writes
/// through [`Trials::insert`] and [`Trials::remove`], which keep the index. Encoded exactly
/// as the map.
#[derive(Clone, Debug, Default)]
pub struct Trials {
    map: BTreeMap<u64, Trial>,
    by_cell: HashMap<(Function, CellId), BTreeSet<u64>>,
}

impl Trials {
    /// Opens `trial` under `index` (replacing one there).
    pub fn insert(&mut self, index: u64, trial: Trial) -> Option<Trial> {
        let old = self.remove(&index);
        self.link(index, &trial);
        self.map.insert(index, trial);
        old
    }

    /// Closes the trial under `index`.
    pub fn remove(&mut self, index: &u64) -> Option<Trial> {
        let old = self.map.remove(index)?;
        self.unlink(*index, &old);
        Some(old)
    }

    /// The open trial of `function` on `cell` with the lowest index, if any.
    pub fn of(&self, function: Function, cell: &str) -> Option<&Trial> {
        let first = self.by_cell.get(&(function, CellId::from(cell)))?.first()?;
        self.map.get(first)
    }

    fn link(&mut self, index: u64, trial: &Trial) {
        for cell in &trial.cells {
            self.by_cell
                .entry((trial.function, cell.clone()))
                .or_default()
                .insert(index);
        }
    }

    fn unlink(&mut self, index: u64, trial: &Trial) {
        for cell in &trial.cells {
            let key = (trial.function, cell.clone());
            if let Some(set) = self.by_cell.get_mut(&key) {
                set.remove(&index);
                if set.is_empty() {
                    self.by_cell.remove(&key);
                }
            }
        }
    }
}

impl std::ops::Deref for Trials {
    type Target = BTreeMap<u64, Trial>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl PartialEq for Trials {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl FromIterator<(u64, Trial)> for Trials {
    fn from_iter<I: IntoIterator<Item = (u64, Trial)>>(iter: I) -> Self {
        let mut t = Trials::default();
        for (i, trial) in iter {
            t.insert(i, trial);
        }
        t
    }
}

impl<const N: usize> From<[(u64, Trial); N]> for Trials {
    fn from(list: [(u64, Trial); N]) -> Self {
        list.into_iter().collect()
    }
}

impl Serialize for Trials {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Trials {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<u64, Trial>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(index: u64, function: Function, cells: &[&str]) -> Trial {
        Trial {
            index,
            function,
            applied_at_ms: 0,
            writes: Vec::new(),
            cells: cells.iter().map(|c| CellId::from(*c)).collect(),
            removed: Vec::new(),
        }
    }

    #[test]
    fn the_index_finds_the_lowest_open_trial_of_a_function_on_a_cell_and_forgets_closed_ones() {
        let mut t = Trials::default();
        t.insert(7, trial(7, Function::MobilityRobustness, &["a", "b"]));
        t.insert(3, trial(3, Function::MobilityRobustness, &["b"]));
        t.insert(5, trial(5, Function::LoadBalancing, &["a"]));
        assert_eq!(
            t.of(Function::MobilityRobustness, "a").map(|x| x.index),
            Some(7)
        );
        assert_eq!(
            t.of(Function::MobilityRobustness, "b").map(|x| x.index),
            Some(3)
        );
        assert_eq!(t.of(Function::LoadBalancing, "a").map(|x| x.index), Some(5));
        assert!(t.of(Function::LoadBalancing, "b").is_none());
        t.remove(&3);
        assert_eq!(
            t.of(Function::MobilityRobustness, "b").map(|x| x.index),
            Some(7)
        );
        // Replaced under the same index by one on other cells.
        t.insert(7, trial(7, Function::MobilityRobustness, &["c"]));
        assert!(t.of(Function::MobilityRobustness, "a").is_none());
        assert_eq!(
            t.of(Function::MobilityRobustness, "c").map(|x| x.index),
            Some(7)
        );
        t.remove(&7);
        t.remove(&5);
        assert!(t.by_cell.is_empty());
    }

    #[test]
    fn encoded_as_the_map_and_indexed_again_when_decoded() {
        let t: Trials = [(4, trial(4, Function::AnrPruning, &["x"]))]
            .into_iter()
            .collect();
        let bytes = crate::codec::encode(&t).unwrap();
        assert_eq!(bytes, crate::codec::encode(&*t).unwrap());
        let back: Trials = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.of(Function::AnrPruning, "x").map(|x| x.index), Some(4));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, serde_json::to_string(&*t).unwrap());
    }
}
