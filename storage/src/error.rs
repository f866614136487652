//! Errors of opening and reading a data directory.

use std::path::PathBuf;

/// Why a data directory cannot be used. Every variant says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{dir} holds sonraft data format {found}, but this build reads formats up to {supported}; run a sonraft release that knows format {found} (it was written by a newer release)"
    )]
    FormatTooNew {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{dir} is not empty and has no readable sonraft format marker ({reason}); point --data-dir at a sonraft data directory or an empty one"
    )]
    NotSonraft { dir: PathBuf, reason: String },
    #[error(
        "{dir} is in use: another sonraft process has it open (or, within this process, a store of it was not closed yet); stop that process first, each node needs a data directory of its own"
    )]
    InUse { dir: PathBuf },
    #[error("cannot open the sled store in {dir}: {source}")]
    Sled { dir: PathBuf, source: sled::Error },
    #[error("{what} in {dir}: {source}")]
    Io {
        what: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{dir} holds damaged data: {reason}; restore this node from a backup or remove the directory and rejoin the node as a learner"
    )]
    Corrupt { dir: PathBuf, reason: String },
}

/// Damage found while decoding stored bytes.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Damaged {
    pub what: String,
    pub reason: String,
}

impl Damaged {
    pub fn new(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Damaged {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
