//! Cell ids, shared rather than copied.
//!
//! A national image holds millions of relations, each naming two cells, and the relation
//! index names them again. As `String`s that was four heap copies of short ids per relation
//! (a 9-byte id takes a 32-byte allocation), about 40 % of the image's memory. A [`CellId`]
//! is a reference-counted string: cloning it copies a pointer, and the image hands relations
//! the ids its cells already hold ([`super::image::NetworkImage::share_ids`]), so each id is
//! stored once however many relations name it.
//!
//! It encodes exactly as a `String` (serde and bincode alike), so no stored or replicated
//! format changes, and it compares, orders and hashes as its text.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A cell (sector-carrier) id as the operator names it (e.g. `S001-1`). Never contains `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellId(Arc<str>);

impl CellId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both name the same allocation (not only the same text).
    pub fn shares(&self, other: &CellId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for CellId {
    fn default() -> Self {
        CellId(Arc::from(""))
    }
}

impl Deref for CellId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CellId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for CellId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<String> for CellId {
    fn from(s: String) -> Self {
        CellId(Arc::from(s))
    }
}

impl From<&String> for CellId {
    fn from(s: &String) -> Self {
        CellId(Arc::from(s.as_str()))
    }
}

impl From<&str> for CellId {
    fn from(s: &str) -> Self {
        CellId(Arc::from(s))
    }
}

impl From<&CellId> for CellId {
    fn from(s: &CellId) -> Self {
        s.clone()
    }
}

impl From<CellId> for String {
    fn from(id: CellId) -> Self {
        id.0.to_string()
    }
}

impl From<&CellId> for String {
    fn from(id: &CellId) -> Self {
        id.0.to_string()
    }
}

impl PartialEq<str> for CellId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for CellId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for CellId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<CellId> for String {
    fn eq(&self, other: &CellId) -> bool {
        **self == *other.0
    }
}

impl PartialEq<CellId> for str {
    fn eq(&self, other: &CellId) -> bool {
        *self == *other.0
    }
}

impl PartialEq<CellId> for &str {
    fn eq(&self, other: &CellId) -> bool {
        **self == *other.0
    }
}

impl Serialize for CellId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CellId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = CellId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a cell id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CellId, E> {
                Ok(decoded(s))
            }
        }
        d.deserialize_str(Text)
    }
}

thread_local! {
    /// The ids decoded so far on this thread inside [`SharedIds::decoding`].
    static DECODING: RefCell<Option<SharedIds>> = const { RefCell::new(None) };
}

/// The id a decoder found: shared with the ids decoded before it inside
/// [`SharedIds::decoding`], a new one otherwise.
fn decoded(text: &str) -> CellId {
    DECODING.with(|d| match d.borrow_mut().as_mut() {
        Some(ids) => ids.shared(text, || CellId::from(text)),
        None => CellId::from(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_encodes_as_a_string_does() {
        let id = CellId::from("S00001-2");
        let cfg = bincode::config::standard();
        assert_eq!(
            bincode::serde::encode_to_vec(&id, cfg).unwrap(),
            bincode::serde::encode_to_vec("S00001-2".to_string(), cfg).unwrap()
        );
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"S00001-2\"");
        let back: CellId = serde_json::from_str("\"S00001-2\"").unwrap();
        assert_eq!(back, "S00001-2");
    }

    #[test]
    fn ids_decoded_together_share_their_text_and_others_do_not() {
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(vec!["A-1", "B", "A-1"], cfg).unwrap();
        let decode =
            || -> Vec<CellId> { bincode::serde::decode_from_slice(&bytes, cfg).unwrap().0 };
        let shared = SharedIds::decoding(decode);
        assert_eq!(shared, ["A-1", "B", "A-1"]);
        assert!(shared[0].shares(&shared[2]) && !shared[0].shares(&shared[1]));
        let again = SharedIds::decoding(decode);
        assert!(!again[0].shares(&shared[0]), "each decoding shares its own");
        let apart = decode();
        assert!(
            !apart[0].shares(&apart[2]),
            "outside a decoding, each its own"
        );
        let json: Vec<CellId> =
            SharedIds::decoding(|| serde_json::from_str(r#"["x\"y", "x\"y"]"#).unwrap());
        assert!(json[0] == "x\"y" && json[0].shares(&json[1]));
    }

    #[test]
    fn it_orders_and_finds_as_its_text() {
        let mut ids = vec![CellId::from("b"), CellId::from("a-10"), CellId::from("a-2")];
        ids.sort();
        assert_eq!(ids, ["a-10", "a-2", "b"]);
        let map: std::collections::BTreeMap<CellId, u8> = ids.into_iter().zip(0..).collect();
        assert_eq!(map.get("a-2"), Some(&1));
        let clone = map.keys().next().unwrap().clone();
        assert!(clone.shares(map.keys().next().unwrap()));
    }
}

/// Cell ids to share, found by their text in one hash lookup (a B-tree of cells costs a dozen
/// string comparisons a lookup, millions of times in a national image's load or import).
#[derive(Debug, Default, Clone)]
pub struct SharedIds(HashSet<CellId>);

impl SharedIds {
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a CellId>) -> SharedIds {
        SharedIds(ids.into_iter().cloned().collect())
    }

    /// The shared id whose text is `id`, or a new one when there is none.
    pub fn get(&self, id: &str) -> CellId {
        self.0.get(id).cloned().unwrap_or_else(|| CellId::from(id))
    }

    /// Runs `f`, in which every cell id decoded on this thread is shared with those decoded
    /// before it that have its text: a snapshot of a national image names each cell a dozen
    /// times or more, and decoded one allocation an occurrence then shared afterwards
    /// ([`super::image::NetworkImage::share_ids`], a rebuild of the relation map), its decoding
    /// took 22 s on a node restarted beside busy ones.
    pub fn decoding<T>(f: impl FnOnce() -> T) -> T {
        struct Restore(Option<SharedIds>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let before = self.0.take();
                DECODING.with(|d| *d.borrow_mut() = before);
            }
        }
        let _restore = Restore(DECODING.with(|d| d.replace(Some(SharedIds::default()))));
        f()
    }

    /// Makes `id` the shared id with its text; `id` becomes that one when there is none yet.
    pub fn share(&mut self, id: &mut CellId) {
        let own = id.clone();
        *id = self.shared(&own, || own.clone());
    }

    /// The shared id whose text is `text`; `new()` becomes it when there is none yet.
    fn shared(&mut self, text: &str, new: impl FnOnce() -> CellId) -> CellId {
        if let Some(id) = self.0.get(text) {
            return id.clone();
        }
        let id = new();
        self.0.insert(id.clone());
        id
    }
}
