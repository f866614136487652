//! FUSE inode numbers and the backing paths they stand for.
//!
//! The kernel names files by the numbers we hand out in `lookup`/`create`/`mkdir` and
//! gives them back in every later request; this table maps them to backing paths. Numbers
//! are allocated here, never reused, rather than taken from the backing `st_ino`: the
//! root must be 1, and a backing inode number freed by an unlink and reused by a new file
//! must not alias a number the kernel still holds.
//!
//! A path is dropped (`None`) when its file is unlinked or replaced by a rename: the
//! number may live on in the kernel (an open file), but its old path may soon name a
//! different file, so operations on it must go through an open handle instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fuser::{Errno, INodeNo};

use crate::page_cache::FileKey;

/// Inode numbers handed to the kernel, with their backing paths and lookup counts.
#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    /// The number currently handed out for a backing file that still has a path, so
    /// that two lookups of one file (or of two hard links) give one number.
    by_key: HashMap<FileKey, u64>,
    next: u64,
}

#[derive(Debug)]
struct Node {
    key: FileKey,
    /// Absolute backing path; `None` once unlinked.
    path: Option<PathBuf>,
    /// Lookups the kernel has not yet forgotten.
    lookups: u64,
}

impl InodeTable {
    /// A table holding only the root, inode 1, at `root` (the backing directory).
    pub fn new(root: PathBuf, root_key: FileKey) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                key: root_key,
                path: Some(root),
                lookups: 1,
            },
        );
        Self {
            nodes,
            by_key: HashMap::from([(root_key, INodeNo::ROOT.0)]),
            next: INodeNo::ROOT.0 + 1,
        }
    }

    /// The backing path of `ino`; ENOENT if the kernel names a number we do not know or a
    /// file that has been unlinked.
    pub fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.nodes
            .get(&ino.0)
            .and_then(|node| node.path.clone())
            .ok_or(Errno::ENOENT)
    }

    /// The backing identity of `ino`.
    pub fn key(&self, ino: INodeNo) -> Result<FileKey, Errno> {
        self.nodes.get(&ino.0).map(|n| n.key).ok_or(Errno::ENOENT)
    }

    /// The backing path of `name` inside directory `parent`.
    pub fn child(&self, parent: INodeNo, name: &std::ffi::OsStr) -> Result<PathBuf, Errno> {
        let mut path = self.path(parent)?;
        path.push(name);
        Ok(path)
    }

    /// Hands the kernel a number for the file `key` found at `path`, counting one lookup.
    pub fn remember(&mut self, path: PathBuf, key: FileKey) -> INodeNo {
        if let Some(ino) = self.by_key.get(&key).copied()
            && let Some(node) = self.nodes.get_mut(&ino)
        {
            node.lookups += 1;
            node.path = Some(path);
            return INodeNo(ino);
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                key,
                path: Some(path),
                lookups: 1,
            },
        );
        self.by_key.insert(key, ino);
        INodeNo(ino)
    }

    /// The kernel dropped `lookups` references to `ino`.
    pub fn forget(&mut self, ino: INodeNo, lookups: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino.0) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(lookups);
        if node.lookups == 0 {
            let key = node.key;
            self.nodes.remove(&ino.0);
            if self.by_key.get(&key) == Some(&ino.0) {
                self.by_key.remove(&key);
            }
        }
    }

    /// The name `path` no longer exists (unlinked, removed, or replaced by a rename).
    pub fn unlinked(&mut self, path: &Path) {
        for (ino, node) in &mut self.nodes {
            if node.path.as_deref() == Some(path) {
                node.path = None;
                if self.by_key.get(&node.key) == Some(ino) {
                    self.by_key.remove(&node.key);
                }
            }
        }
    }

    /// `from` (a file, or a directory and everything under it) is now at `to`.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        for node in self.nodes.values_mut() {
            let Some(path) = &node.path else { continue };
            if let Ok(rest) = path.strip_prefix(from) {
                node.path = Some(if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                });
            }
        }
    }
}
