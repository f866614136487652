//! Every file's unsynced pages, and the three things that end them: fsync, memory
//! pressure, and a power cut.
//!
//! Files are identified by their backing `(device, inode)` ([`FileKey`]), not by path or
//! by FUSE inode number: renames and hard links keep the identity, a handle opened before
//! an unlink keeps writing to the same pending pages, and the FUSE layer may hand out and
//! forget inode numbers as it likes.
//!
//! # Memory pressure
//!
//! Pending pages are capped (`--max-pending-bytes`). When a write takes the total over the
//! cap, the oldest dirty pages (by when they first became dirty) are written to the
//! backing files, without fsync, until the total is down to three quarters of the cap.
//! That is what the kernel's writeback does, and like real writeback it means those pages
//! survive a later power cut: a campaign under heavy write load loses less than an
//! unbounded cache would make it lose, never more. The alternative, refusing writes with
//! ENOSPC/EIO, would test the node's error paths instead of its durability, and running
//! out of memory is not an option. The number of pages written back this way is in
//! `stats` (`written_back_pages`) and logged, so a campaign can tell when its crashes
//! were softened.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::dirty_file::{DirtyFile, PAGE_SIZE, read_backing};
use crate::rng::Coin;

/// The identity of a backing file: its device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    dev: u64,
    ino: u64,
}

impl FileKey {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What a power cut did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CrashReport {
    /// Files that had pending pages.
    pub files: usize,
    /// Pending pages that were lost.
    pub dropped_pages: usize,
    /// Pending pages that a torn cut wrote to the backing files before dropping the rest.
    pub kept_pages: usize,
    /// Pages a torn cut meant to keep but could not write (backing I/O error); lost too.
    pub failed_pages: usize,
}

/// Counters for `stats`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Files with pending pages.
    pub pending_files: usize,
    /// Pending pages.
    pub pending_pages: usize,
    /// Memory held by pending pages.
    pub pending_bytes: u64,
    /// The cap on `pending_bytes` before write-back starts.
    pub max_pending_bytes: u64,
    /// `fsync`/`fdatasync` calls on files (and `O_SYNC` writes).
    pub syncs: u64,
    /// `fsync` calls on directories.
    pub dir_syncs: u64,
    /// Power cuts, torn or not.
    pub crashes: u64,
    /// Torn power cuts.
    pub torn_crashes: u64,
    /// Pages written back, unsynced, because of memory pressure or `checkpoint`.
    pub written_back_pages: u64,
}

/// How a power cut treats pending pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Every pending page is lost.
    Clean,
    /// Each pending page independently had (probability ½) already reached the disk.
    Torn,
}

/// All pending pages of all files.
#[derive(Debug)]
pub struct PageCache {
    files: HashMap<FileKey, DirtyFile>,
    /// Stamps pages as they become dirty, to write back the oldest first.
    clock: u64,
    pending_pages: usize,
    max_pending_pages: usize,
    coin: Coin,
    stats: Stats,
}

impl PageCache {
    /// An empty cache that holds at most `max_pending_bytes` (at least one page) and
    /// tears power cuts with coins seeded by `seed`.
    pub fn new(max_pending_bytes: u64, seed: u64) -> Self {
        let max_pending_pages = usize::try_from(max_pending_bytes / PAGE_SIZE)
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            files: HashMap::new(),
            clock: 0,
            pending_pages: 0,
            max_pending_pages,
            coin: Coin::seeded(seed),
            stats: Stats {
                max_pending_bytes,
                ..Stats::default()
            },
        }
    }

    /// The size of `key` as seen through the mount, if it has pending pages.
    pub fn size(&self, key: FileKey) -> Option<u64> {
        self.files.get(&key).map(DirtyFile::size)
    }

    /// When the pending contents of `key` last changed, if it has pending pages.
    pub fn modified(&self, key: FileKey) -> Option<SystemTime> {
        self.files.get(&key).map(DirtyFile::modified)
    }

    /// Reads through the cache: pending pages over the backing file `via`.
    pub fn read(&self, key: FileKey, via: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if let Some(dirty) = self.files.get(&key) {
            return dirty.read(offset, len);
        }
        let mut buf = vec![0; len];
        let size = via.metadata()?.len();
        let end = offset.saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        let keep = usize::try_from(end.min(size).saturating_sub(offset)).unwrap_or(len);
        buf.truncate(keep);
        read_backing(via, &mut buf, offset)?;
        Ok(buf)
    }

    /// Keeps a write in memory. `via` must be open read-write on the backing file; it is
    /// kept to write the pages back later. May write back the oldest pages of any file if
    /// the cap is exceeded.
    pub fn write(
        &mut self,
        key: FileKey,
        via: &Arc<File>,
        path: &Path,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let dirty = match self.files.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(DirtyFile::open(Arc::clone(via), path.to_path_buf())?)
            }
        };
        let before = dirty.page_count();
        let result = dirty.write(offset, data, &mut self.clock);
        self.pending_pages = self.pending_pages - before + dirty.page_count();
        if dirty.page_count() == 0 {
            self.files.remove(&key);
        }
        result?;
        if self.pending_pages > self.max_pending_pages {
            self.relieve_pressure()?;
        }
        Ok(())
    }

    /// Follows a truncation already applied to the backing file of `key`.
    pub fn truncate(&mut self, key: FileKey, size: u64) {
        self.change(key, |dirty| dirty.truncate(size));
    }

    /// Writes every pending page of `key` to its backing file. The caller then fsyncs
    /// the backing file, outside the cache lock so other files' I/O is not held up.
    pub fn sync(&mut self, key: FileKey) -> io::Result<()> {
        self.stats.syncs += 1;
        let mut result = Ok(());
        self.change(key, |dirty| result = dirty.write_back(|_| true).map(drop));
        result
    }

    /// Counts an fsync of a directory (which has no pending pages: metadata is applied
    /// at once).
    pub fn count_dir_sync(&mut self) {
        self.stats.dir_syncs += 1;
    }

    /// Records that the backing path `from` (a file, or a directory and everything under
    /// it) is now `to`.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        for dirty in self.files.values_mut() {
            if let Ok(rest) = dirty.path().strip_prefix(from) {
                let moved: PathBuf = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                dirty.moved_to(moved);
            }
        }
    }

    /// Drops the pending pages of a file that is gone: unlinked and no longer open. Its
    /// bytes can never be read again, so keeping them would only hold memory.
    pub fn forget_if_unlinked(&mut self, key: FileKey) {
        let unlinked = self
            .files
            .get(&key)
            .is_some_and(|dirty| dirty.backing().metadata().is_ok_and(|m| m.nlink() == 0));
        if unlinked {
            self.change(key, |dirty| dirty.truncate(0));
        }
    }

    /// Simulates a power cut: every file loses its pending pages, except that a torn cut
    /// first writes a random subset of them (see [`Cut::Torn`]). Files are visited in
    /// backing-path order and pages in file order, so for a given seed the same history
    /// of writes and cuts keeps the same pages.
    pub fn crash(&mut self, cut: Cut) -> CrashReport {
        self.stats.crashes += 1;
        if cut == Cut::Torn {
            self.stats.torn_crashes += 1;
        }
        let mut files: Vec<(FileKey, DirtyFile)> = self.files.drain().collect();
        files.sort_by(|(ka, a), (kb, b)| a.path().cmp(b.path()).then(ka.cmp(kb)));
        let mut report = CrashReport {
            files: files.len(),
            ..CrashReport::default()
        };
        for (_, mut dirty) in files {
            let before = dirty.page_count();
            if cut == Cut::Torn {
                let keep: Vec<u64> = dirty
                    .page_indexes()
                    .into_iter()
                    .filter(|_| self.coin.flip())
                    .collect();
                if let Err(err) = dirty.write_back(|index| keep.binary_search(&index).is_ok()) {
                    tracing::error!(path = %dirty.path().display(), %err,
                        "torn power cut could not write the pages it keeps");
                    report.failed_pages += keep.len() - (before - dirty.page_count());
                }
            }
            report.kept_pages += before - dirty.page_count();
            report.dropped_pages += dirty.page_count();
        }
        self.pending_pages = 0;
        report
    }

    /// Writes every pending page back, unsynced, as the kernel's writeback eventually
    /// would; returns how many pages were written.
    pub fn checkpoint(&mut self) -> io::Result<usize> {
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
        let mut written = 0;
        for key in keys {
            let mut result = Ok(0);
            self.change(key, |dirty| result = dirty.write_back(|_| true));
            written += result?;
        }
        self.stats.written_back_pages += u64::try_from(written).unwrap_or(u64::MAX);
        Ok(written)
    }

    /// The descriptors of every file with pending pages, to fsync after a checkpoint.
    pub fn backing_files(&self) -> Vec<Arc<File>> {
        self.files
            .values()
            .map(|d| Arc::clone(d.backing()))
            .collect()
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        Stats {
            pending_files: self.files.len(),
            pending_pages: self.pending_pages,
            pending_bytes: u64::try_from(self.pending_pages).unwrap_or(u64::MAX) * PAGE_SIZE,
            ..self.stats.clone()
        }
    }

    /// Applies `change` to the pending pages of `key`, keeping the page count right and
    /// dropping the entry once nothing is pending (the backing file is then exactly the
    /// file, see the invariants in `dirty_file`).
    fn change(&mut self, key: FileKey, change: impl FnOnce(&mut DirtyFile)) {
        if let Some(dirty) = self.files.get_mut(&key) {
            let before = dirty.page_count();
            change(dirty);
            self.pending_pages = self.pending_pages - before + dirty.page_count();
            if dirty.page_count() == 0 {
                self.files.remove(&key);
            }
        }
    }

    /// Writes back the oldest pages until a quarter of the cap is free again.
    fn relieve_pressure(&mut self) -> io::Result<()> {
        let target = self.max_pending_pages / 4 * 3;
        let excess = self.pending_pages.saturating_sub(target);
        let mut ages: Vec<(u64, FileKey, u64)> = self
            .files
            .iter()
            .flat_map(|(key, dirty)| {
                dirty
                    .page_ages()
                    .map(move |(dirtied, index)| (dirtied, *key, index))
            })
            .collect();
        ages.sort_unstable();
        ages.truncate(excess);
        let mut chosen: HashMap<FileKey, Vec<u64>> = HashMap::new();
        for (_, key, index) in ages {
            chosen.entry(key).or_default().push(index);
        }
        let mut written = 0;
        for (key, mut indexes) in chosen {
            indexes.sort_unstable();
            let mut result = Ok(0);
            self.change(key, |dirty| {
                result = dirty.write_back(|index| indexes.binary_search(&index).is_ok());
            });
            written += result?;
        }
        self.stats.written_back_pages += u64::try_from(written).unwrap_or(u64::MAX);
        tracing::warn!(
            written_back_pages = written,
            max_pending_bytes = self.stats.max_pending_bytes,
            "pending writes over the cap: oldest pages written back unsynced; \
             they will survive a power cut"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
