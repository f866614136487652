//! A sorted map whose copy costs next to nothing, for the image's large maps.
//!
//! A snapshot or a backup captures the image under the state lock, so that no entry applies
//! while it is copied. With `BTreeMap`s the copy of a national image (300,000 cells, 9 million
//! relations) held the lock for 0.4–3 s on every node, and every change set waited that long;
//! the copy also doubled the image's memory while the snapshot was written. A [`CowMap`] is
//! the same sorted map cut into shards of a few hundred entries behind `Arc`s: a copy shares
//! every shard (a 9-million-entry map copies ~20,000 pointers), and a write to a shared shard
//! copies that shard first (under a thousand entries). A copy held while the image changes
//! therefore costs memory only for the shards written meanwhile.
//!
//! Shards cover consecutive key ranges (each starts at its first key), none is empty, and a
//! shard that grows past twice [`SHARD`] splits in two; one that shrinks below a quarter of it
//! joins its left neighbour. Iteration is in key order across shards, so the map encodes
//! exactly as a `BTreeMap` with the same entries does (a map of its length, then its entries
//! in order): formats on disk and on the wire are unchanged.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Entries of a shard built in one go; a shard splits past twice this.
pub const SHARD: usize = 512;

type Shard<K, V> = Arc<BTreeMap<K, V>>;

/// Sorts `items` by `order` and keeps, of items that order equal, the last one given (as a map
/// built from them an insert at a time would).
pub fn sort_keeping_last<T>(items: &mut Vec<T>, mut order: impl FnMut(&T, &T) -> Ordering) {
    // Stable: of equal items, the last given stays last.
    items.sort_by(&mut order);
    // `dedup_by` keeps the first of equal neighbours: move the later item into it.
    items.dedup_by(|later, kept| {
        let same = order(later, kept) == Ordering::Equal;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
}

/// A sorted map that shares its shards with its copies (see the module docs).
pub struct CowMap<K, V> {
    shards: Vec<Shard<K, V>>,
    len: usize,
}

impl<K, V> Clone for CowMap<K, V> {
    /// Shares every shard: no entry is copied.
    fn clone(&self) -> Self {
        CowMap {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            shards: Vec::new(),
            len: 0,
        }
    }
}

/// A shard's first key (a `CowMap` keeps no empty shard).
fn first_key<K: Ord, V>(shard: &BTreeMap<K, V>) -> &K {
    key_of(shard.first_key_value())
}

/// A shard's last key.
fn last_key<K: Ord, V>(shard: &BTreeMap<K, V>) -> &K {
    key_of(shard.last_key_value())
}

fn key_of<'a, K, V>(end: Option<(&'a K, &'a V)>) -> &'a K {
    end.map(|(k, _)| k).expect("a CowMap keeps no empty shard")
}

impl<K: Ord + Clone, V: Clone> CowMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shard that holds `key` if the map does, or would take it: the last one whose first
    /// key is not above it (the first one for a key below all). None when the map is empty.
    fn shard_of<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if self.shards.is_empty() {
            return None;
        }
        let above = self
            .shards
            .partition_point(|s| first_key(s).borrow() <= key);
        Some(above.saturating_sub(1))
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.shards[self.shard_of(key)?].get(key)
    }

    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.shards[self.shard_of(key)?].get_key_value(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The value of `key` to change in place (its shard is copied first if a copy of the map
    /// shares it; a key not in the map copies nothing).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.shard_holding(key)?;
        Arc::make_mut(&mut self.shards[i]).get_mut(key)
    }

    /// The shard that holds `key`, if the map does.
    fn shard_holding<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.shard_of(key)
            .filter(|&i| self.shards[i].contains_key(key))
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let Some(i) = self.shard_of(&key) else {
            self.shards.push(Arc::new(BTreeMap::from([(key, value)])));
            self.len = 1;
            return None;
        };
        let shard = Arc::make_mut(&mut self.shards[i]);
        let old = shard.insert(key, value);
        if old.is_none() {
            self.len += 1;
            if shard.len() > 2 * SHARD {
                let middle = shard
                    .keys()
                    .nth(SHARD)
                    .cloned()
                    .expect("the shard holds more than its middle");
                let upper = shard.split_off(&middle);
                self.shards.insert(i + 1, Arc::new(upper));
            }
        }
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.shard_holding(key)?;
        let removed = Arc::make_mut(&mut self.shards[i]).remove(key);
        self.len -= 1;
        self.settle(i);
        removed
    }

    /// Drops shard `i` if it is empty, or joins it to its left neighbour if it became small
    /// and they fit in one.
    fn settle(&mut self, i: usize) {
        let len = self.shards[i].len();
        if len == 0 {
            self.shards.remove(i);
        } else if len < SHARD / 4 && i > 0 && self.shards[i - 1].len() + len <= 2 * SHARD {
            let small = self.shards.remove(i);
            let entries = Arc::unwrap_or_clone(small);
            Arc::make_mut(&mut self.shards[i - 1]).extend(entries);
        }
    }

    /// Keeps the entries for which `keep` is true. Shards it keeps whole are not copied.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let mut i = 0;
        while i < self.shards.len() {
            if self.shards[i].iter().all(|(k, v)| keep(k, v)) {
                i += 1;
                continue;
            }
            let shard = Arc::make_mut(&mut self.shards[i]);
            let before = shard.len();
            shard.retain(|k, v| keep(k, v));
            self.len -= before - shard.len();
            if shard.is_empty() {
                self.shards.remove(i);
            } else {
                i += 1;
            }
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Every entry to change in place: copies every shard a copy of the map shares.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> + '_ {
        self.shards
            .iter_mut()
            .flat_map(|s| Arc::make_mut(s).iter_mut())
    }

    /// Every value to change in place: copies every shard a copy of the map shares.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        self.iter_mut().map(|(_, v)| v)
    }

    /// The entries in `range`, in key order (panics where `BTreeMap::range` does).
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> + '_ {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let start = match &bounds.0 {
            Bound::Included(k) | Bound::Excluded(k) => self.shard_of(k).unwrap_or(0),
            Bound::Unbounded => 0,
        };
        let end = bounds.1.clone();
        self.shards[start.min(self.shards.len())..]
            .iter()
            .take_while(move |s| match &end {
                Bound::Included(k) => first_key(s) <= k,
                Bound::Excluded(k) => first_key(s) < k,
                Bound::Unbounded => true,
            })
            .flat_map(move |s| s.range(bounds.clone()))
    }

    /// The values in key order; shards a copy still shares are copied as they go.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.into_iter().map(|(_, v)| v)
    }

    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.shards.first()?.first_key_value()
    }

    pub fn last_key_value(&self) -> Option<(&K, &V)> {
        self.shards.last()?.last_key_value()
    }

    /// Shards in the map (tests and figures).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Whether `self` and `other` share every shard (a copy not written to since).
    pub fn shares_all(&self, other: &Self) -> bool {
        self.shards.len() == other.shards.len()
            && self
                .shards
                .iter()
                .zip(&other.shards)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// Builds a map from entries given one at a time, in shards of [`SHARD`] built in one go while
/// the keys come in order (as a map's own encoding, or a store's key order mostly, gives them:
/// nothing else is held); from the first key out of order on, everything is gathered for
/// [`CowMap::from_vec`].
pub struct Builder<K, V> {
    shards: Vec<Shard<K, V>>,
    pending: Vec<(K, V)>,
    len: usize,
    /// Set once a key came out of order: everything gathered here, sorted at the end.
    unsorted: Option<Vec<(K, V)>>,
}

impl<K: Ord + Clone, V: Clone> Default for Builder<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone, V: Clone> Builder<K, V> {
    pub fn new() -> Self {
        Builder {
            shards: Vec::new(),
            pending: Vec::with_capacity(SHARD),
            len: 0,
            unsorted: None,
        }
    }

    fn last_key(&self) -> Option<&K> {
        match self.pending.last() {
            Some((k, _)) => Some(k),
            None => self.shards.last().map(|s| last_key(s)),
        }
    }

    /// Adds an entry; of a repeated key the last value is kept.
    pub fn push(&mut self, key: K, value: V) {
        if let Some(all) = &mut self.unsorted {
            all.push((key, value));
            return;
        }
        if self.last_key().is_some_and(|last| *last >= key) {
            let mut all = Vec::with_capacity(self.len + self.pending.len() + 1);
            for shard in self.shards.drain(..) {
                all.extend(Arc::unwrap_or_clone(shard));
            }
            all.append(&mut self.pending);
            all.push((key, value));
            self.unsorted = Some(all);
            return;
        }
        self.pending.push((key, value));
        if self.pending.len() == SHARD {
            self.cut();
        }
    }

    fn cut(&mut self) {
        let entries = std::mem::replace(&mut self.pending, Vec::with_capacity(SHARD));
        self.len += entries.len();
        self.shards.push(Arc::new(BTreeMap::from_iter(entries)));
    }

    pub fn finish(mut self) -> CowMap<K, V> {
        if let Some(all) = self.unsorted.take() {
            return CowMap::from_vec(all);
        }
        if !self.pending.is_empty() {
            self.cut();
        }
        CowMap {
            shards: self.shards,
            len: self.len,
        }
    }
}

impl<K: Ord + Clone, V: Clone> CowMap<K, V> {
    /// The map of `entries` in any order; of a repeated key the last value is kept, as
    /// `BTreeMap::from_iter` does. Sorts in place when they are out of order (a store's keys
    /// are sorted as bytes, which is not always the keys' own order), then moves them into
    /// shards built in one go.
    pub fn from_vec(mut entries: Vec<(K, V)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            sort_keeping_last(&mut entries, |a, b| a.0.cmp(&b.0));
        }
        let len = entries.len();
        let mut shards = Vec::with_capacity(len.div_ceil(SHARD));
        let mut entries = entries.into_iter();
        loop {
            let shard: BTreeMap<K, V> = entries.by_ref().take(SHARD).collect();
            if shard.is_empty() {
                break;
            }
            shards.push(Arc::new(shard));
        }
        CowMap { shards, len }
    }
}

impl<K: Ord + Clone, V: Clone> CowMap<K, V> {
    /// The map of all entries of `maps`, the later map's value kept for a key in two. When
    /// each map's keys all follow the previous one's (maps built in parallel from consecutive
    /// ranges of keys), their shards are joined as they are: nothing is copied.
    pub fn concat(maps: Vec<CowMap<K, V>>) -> Self {
        let maps: Vec<_> = maps.into_iter().filter(|m| !m.is_empty()).collect();
        let in_order = maps.windows(2).all(|pair| {
            let (Some((last, _)), Some((first, _))) =
                (pair[0].last_key_value(), pair[1].first_key_value())
            else {
                return true;
            };
            last < first
        });
        if !in_order {
            return Self::from_vec(maps.into_iter().flatten().collect());
        }
        let len = maps.iter().map(CowMap::len).sum();
        let shards = maps.into_iter().flat_map(|m| m.shards).collect();
        CowMap { shards, len }
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for CowMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_vec(iter.into_iter().collect())
    }
}

impl<K: Ord + Clone, V: Clone, const N: usize> From<[(K, V); N]> for CowMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K: Ord + Clone, V: Clone> Extend<(K, V)> for CowMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Ord + Clone, V: Clone> IntoIterator for CowMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<Shard<K, V>>,
        btree_map::IntoIter<K, V>,
        fn(Shard<K, V>) -> btree_map::IntoIter<K, V>,
    >;

    /// The entries in key order; shards a copy still shares are copied as they go.
    fn into_iter(self) -> Self::IntoIter {
        let entries: fn(Shard<K, V>) -> btree_map::IntoIter<K, V> =
            |s| Arc::unwrap_or_clone(s).into_iter();
        self.shards.into_iter().flat_map(entries)
    }
}

impl<'a, K: Ord + Clone, V: Clone> IntoIterator for &'a CowMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, Shard<K, V>>,
        btree_map::Iter<'a, K, V>,
        fn(&'a Shard<K, V>) -> btree_map::Iter<'a, K, V>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        let entries: fn(&'a Shard<K, V>) -> btree_map::Iter<'a, K, V> = |s| s.iter();
        self.shards.iter().flat_map(entries)
    }
}

impl<K: Ord + Clone, V: Clone, Q> std::ops::Index<&Q> for CowMap<K, V>
where
    K: Borrow<Q>,
    Q: Ord + ?Sized,
{
    type Output = V;

    /// Panics when `key` is not in the map, as `BTreeMap`'s does.
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry found for key")
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for CowMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .shards
                .iter()
                .flat_map(|s| s.iter())
                .eq(other.shards.iter().flat_map(|s| s.iter()))
    }
}

impl<K: Eq, V: Eq> Eq for CowMap<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for CowMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.shards.iter().flat_map(|s| s.iter()))
            .finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for CowMap<K, V> {
    /// As a `BTreeMap` with the same entries: its length, then its entries in key order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (k, v) in self.shards.iter().flat_map(|s| s.iter()) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K, V> Deserialize<'de> for CowMap<K, V>
where
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(std::marker::PhantomData<(K, V)>);

        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: Deserialize<'de> + Ord + Clone,
            V: Deserialize<'de> + Clone,
        {
            type Value = CowMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut b = Builder::new();
                while let Some((k, v)) = access.next_entry()? {
                    b.push(k, v);
                }
                Ok(b.finish())
            }
        }

        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `CowMap` and a `BTreeMap` given the same operations hold the same entries, shard
    /// bounds stay sorted and non-empty, and a copy taken before is untouched.
    fn check(map: &CowMap<u32, u32>, model: &BTreeMap<u32, u32>) {
        assert_eq!(map.len(), model.len());
        assert!(
            map.iter().eq(model.iter()),
            "same entries in the same order"
        );
        for pair in map.shards.windows(2) {
            assert!(last_key(&pair[0]) < first_key(&pair[1]));
        }
        assert!(
            map.shards
                .iter()
                .all(|s| !s.is_empty() && s.len() <= 2 * SHARD)
        );
    }

    #[test]
    fn it_behaves_as_a_btree_map_and_a_copy_never_sees_later_writes() {
        let mut map = CowMap::new();
        let mut model = BTreeMap::new();
        // A pseudo-random walk of inserts, overwrites and removals over 20,000 keys.
        let mut x: u64 = 42;
        let mut copies = Vec::new();
        for step in 0..200_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = ((x >> 33) % 20_000) as u32;
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(map.remove(&key), model.remove(&key));
            } else {
                assert_eq!(map.insert(key, step), model.insert(key, step));
            }
            if step % 50_000 == 0 {
                copies.push((map.clone(), model.clone()));
            }
        }
        check(&map, &model);
        assert!(map.shards() > 10);
        for (copy, then) in &copies {
            check(copy, then);
        }
        for k in [0, 1, 7_777, 19_999, 20_000] {
            assert_eq!(map.get(&k), model.get(&k));
            assert_eq!(map.contains_key(&k), model.contains_key(&k));
        }
        let r: Vec<_> = map.range(5_000..6_000).collect();
        assert_eq!(r, model.range(5_000..6_000).collect::<Vec<_>>());
        let r: Vec<_> = map.range(..=100).collect();
        assert_eq!(r, model.range(..=100).collect::<Vec<_>>());
        let r: Vec<_> = map.range(19_990..).collect();
        assert_eq!(r, model.range(19_990..).collect::<Vec<_>>());

        map.retain(|k, _| k % 2 == 0);
        model.retain(|k, _| k % 2 == 0);
        check(&map, &model);
        for v in map.values_mut() {
            *v += 1;
        }
        for v in model.values_mut() {
            *v += 1;
        }
        check(&map, &model);
        for (copy, then) in &copies {
            check(copy, then);
        }
        let owned: Vec<_> = map.clone().into_iter().collect();
        assert_eq!(owned, model.clone().into_iter().collect::<Vec<_>>());

        // Collected out of order and with a key repeated: the last value wins.
        let entries = [(3, 1), (1, 2), (3, 4), (2, 0)];
        let map: CowMap<u32, u32> = entries.into_iter().collect();
        let model: BTreeMap<u32, u32> = entries.into_iter().collect();
        check(&map, &model);
    }

    #[test]
    fn maps_of_consecutive_ranges_join_without_a_copy_and_others_merge() {
        let part = |keys: std::ops::Range<u32>, value: u32| -> CowMap<u32, u32> {
            keys.map(|k| (k, value)).collect()
        };
        let (a, b, c) = (
            part(0..3_000, 1),
            part(3_000..3_001, 2),
            part(3_001..5_000, 3),
        );
        let joined = CowMap::concat(vec![a.clone(), CowMap::new(), b.clone(), c.clone()]);
        let model: BTreeMap<u32, u32> = a
            .iter()
            .chain(b.iter())
            .chain(c.iter())
            .map(|(k, v)| (*k, *v))
            .collect();
        check(&joined, &model);
        assert_eq!(joined.shards(), a.shards() + b.shards() + c.shards());
        assert!(
            Arc::ptr_eq(&joined.shards[0], &a.shards[0]),
            "shared, not copied"
        );
        // Out of order, and overlapping: the later map's value wins.
        let merged = CowMap::concat(vec![part(100..200, 1), part(0..150, 2), part(190..210, 3)]);
        let mut model: BTreeMap<u32, u32> = (100..200).map(|k| (k, 1)).collect();
        model.extend((0..150).map(|k| (k, 2)));
        model.extend((190..210).map(|k| (k, 3)));
        check(&merged, &model);
    }

    #[test]
    fn a_copy_shares_every_shard_until_one_is_written() {
        let map: CowMap<u32, u32> = (0..100_000).map(|k| (k, k)).collect();
        assert_eq!(map.shards(), 100_000 / SHARD + 1);
        let mut copy = map.clone();
        assert!(copy.shares_all(&map));
        *copy.get_mut(&5).unwrap() = 0;
        assert!(!copy.shares_all(&map));
        let shared = copy
            .shards
            .iter()
            .zip(&map.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(
            shared,
            map.shards() - 1,
            "only the written shard was copied"
        );
        assert_eq!(map.get(&5), Some(&5));
        assert_eq!(copy.get(&5), Some(&0));
        // A key not in the map copies nothing.
        let mut again = map.clone();
        assert!(again.get_mut(&1_000_000).is_none());
        assert!(again.remove(&1_000_000).is_none());
        assert!(again.shares_all(&map));
    }

    #[test]
    fn it_encodes_as_a_btree_map_and_decodes_from_any_order() {
        let model: BTreeMap<String, u32> = (0..3_000).map(|k| (format!("k{k}"), k)).collect();
        let map: CowMap<String, u32> = model.clone().into_iter().collect();
        let config = bincode::config::standard();
        let ours = bincode::serde::encode_to_vec(&map, config).unwrap();
        assert_eq!(ours, bincode::serde::encode_to_vec(&model, config).unwrap());
        let (back, _): (CowMap<String, u32>, _) =
            bincode::serde::decode_from_slice(&ours, config).unwrap();
        assert_eq!(back, map);
        assert_eq!(
            serde_json::to_string(&map).unwrap(),
            serde_json::to_string(&model).unwrap()
        );

        // Out of order and repeated, as a hand-written document may be: the last value wins.
        let json = r#"{"b": 1, "a": 2, "c": 3, "a": 4}"#;
        let map: CowMap<String, u32> = serde_json::from_str(json).unwrap();
        let model: BTreeMap<String, u32> = serde_json::from_str(json).unwrap();
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            model.iter().collect::<Vec<_>>()
        );
        assert_eq!(map.len(), 3);
    }
}
