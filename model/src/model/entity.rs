//! Entity names: `cell/<cell-id>` and `relation/<source-id>/<target-id>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CellId;

/// A versioned entity of the image that a change set can read or write.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityRef {
    Cell(CellId),
    Relation(CellId, CellId),
}

/// An entity name that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad entity name {name:?}: expected cell/<cell-id> or relation/<source-id>/<target-id>")]
pub struct EntityError {
    pub name: String,
}

impl EntityRef {
    pub fn cell(id: impl Into<CellId>) -> Self {
        EntityRef::Cell(id.into())
    }

    pub fn relation(source: impl Into<CellId>, target: impl Into<CellId>) -> Self {
        EntityRef::Relation(source.into(), target.into())
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityRef::Cell(id) => write!(f, "cell/{id}"),
            EntityRef::Relation(s, t) => write!(f, "relation/{s}/{t}"),
        }
    }
}

/// True for ids that can appear in an entity name: non-empty, no `/`, no control characters,
/// at most 64 bytes.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && !id.contains('/') && !id.chars().any(char::is_control)
}

impl FromStr for EntityRef {
    type Err = EntityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EntityError {
            name: s.chars().take(200).collect(),
        };
        let mut parts = s.split('/');
        let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("cell"), Some(id), None, None) if valid_id(id) => EntityRef::Cell(id.into()),
            (Some("relation"), Some(src), Some(tgt), None) if valid_id(src) && valid_id(tgt) => {
                EntityRef::Relation(src.into(), tgt.into())
            }
            _ => return Err(bad()),
        };
        Ok(parsed)
    }
}

impl Serialize for EntityRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntityRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_round_trip() {
        for name in ["cell/S001-1", "relation/S001-1/S002-3"] {
            let e: EntityRef = name.parse().unwrap();
            assert_eq!(e.to_string(), name);
        }
    }

    #[test]
    fn malformed_entity_names_are_refused() {
        for name in [
            "",
            "cell/",
            "cell/a/b",
            "relation/a",
            "relation/a/",
            "site/S1",
            "cell/a\n",
        ] {
            assert!(name.parse::<EntityRef>().is_err(), "{name:?} parsed");
        }
    }
}
