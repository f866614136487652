//! One file's writes that no fsync has made durable yet.
//!
//! A [`DirtyFile`] is what the kernel's page cache holds for a file between a `write` and
//! the `fsync` that follows it: whole 4 KiB pages with their latest contents, plus the size
//! the file has as seen through the mount. The backing file is "the disk": it holds only
//! what was synced (or written back under memory pressure, see `page_cache`).
//!
//! Pages rather than a log of writes, because that is how a real machine loses data: the
//! page cache keeps the newest bytes of each page, writeback and power loss act on whole
//! pages, and a page written twice before a power cut survives with one of its versions,
//! never with a mix of the two writes at byte granularity. Within a page a power cut is
//! atomic here; a real drive may tear inside a 4 KiB page at sector (512 B) granularity,
//! which this does not model.
//!
//! Invariants, relied on by reads and write-back:
//! - the backing file is never longer than [`DirtyFile::size`]: writes only grow the
//!   logical size, and truncation cuts the backing file and the pages together;
//! - bytes of a page past the logical size are zero, so growing the file later (by
//!   truncate) reads zeros there, as POSIX requires;
//! - if the logical size is larger than the backing file, the page holding the last byte
//!   is dirty (only a write can make the file longer than its backing), so writing back
//!   every page leaves the backing file exactly [`DirtyFile::size`] bytes long.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The unit of caching, write-back and loss.
pub const PAGE_SIZE: u64 = 4096;

/// `PAGE_SIZE` as a buffer length; 4096 fits every `usize`.
const PAGE_LEN: usize = PAGE_SIZE as usize;

/// The pending (unsynced) pages of one file, over the backing file that holds its
/// durable bytes.
#[derive(Debug)]
pub struct DirtyFile {
    /// A read-write descriptor of the backing file, kept while pages are pending so they
    /// can be written back even after every handle is closed or the file renamed.
    backing: Arc<File>,
    /// Absolute backing path, kept current across renames: it orders files in a torn
    /// power cut (so a seed means the same thing from run to run) and names them in logs.
    path: PathBuf,
    /// The size as seen through the mount.
    size: u64,
    /// When the pending bytes last changed; reported as the file's mtime.
    modified: SystemTime,
    pages: BTreeMap<u64, DirtyPage>,
}

/// A page with newer contents than the backing file.
#[derive(Debug)]
struct DirtyPage {
    bytes: Box<[u8]>,
    /// Logical clock value when the page first became dirty; the oldest pages are the
    /// first written back under memory pressure, like the kernel's `dirty_expire`.
    dirtied: u64,
}

impl DirtyFile {
    /// Starts tracking `backing`, whose current length is its durable size.
    pub fn open(backing: Arc<File>, path: PathBuf) -> io::Result<Self> {
        let size = backing.metadata()?.len();
        Ok(Self {
            backing,
            path,
            size,
            modified: SystemTime::now(),
            pages: BTreeMap::new(),
        })
    }

    /// The file's size as seen through the mount.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// When the pending contents last changed.
    pub fn modified(&self) -> SystemTime {
        self.modified
    }

    /// The backing path this file was last known under.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the file now lives at `path` in the backing directory.
    pub fn moved_to(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// The descriptor pending pages are written back through.
    pub fn backing(&self) -> &Arc<File> {
        &self.backing
    }

    /// How many pages are pending.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// `(dirtied, page index)` of every pending page, for choosing what to write back.
    pub fn page_ages(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pages
            .iter()
            .map(|(index, page)| (page.dirtied, *index))
    }

    /// Index of every pending page, in file order.
    pub fn page_indexes(&self) -> Vec<u64> {
        self.pages.keys().copied().collect()
    }

    /// Applies a write to the pending pages only; the backing file is not touched except
    /// to read the old contents of partially overwritten pages. `clock` stamps pages that
    /// become dirty and is advanced.
    pub fn write(&mut self, offset: u64, data: &[u8], clock: &mut u64) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let len = u64::try_from(data.len()).map_err(|_| too_large())?;
        let end = offset.checked_add(len).ok_or_else(too_large)?;
        for index in offset / PAGE_SIZE..=(end - 1) / PAGE_SIZE {
            let page_start = index * PAGE_SIZE;
            let lo = offset.max(page_start);
            let hi = end.min(page_start + PAGE_SIZE);
            if !self.pages.contains_key(&index) {
                let whole = lo == page_start && hi == page_start + PAGE_SIZE;
                let bytes = if whole {
                    vec![0; PAGE_LEN].into_boxed_slice()
                } else {
                    self.clean_page(index)?
                };
                self.pages.insert(
                    index,
                    DirtyPage {
                        bytes,
                        dirtied: *clock,
                    },
                );
                *clock += 1;
            }
            if let Some(page) = self.pages.get_mut(&index) {
                page.bytes[in_page(lo - page_start)..in_page(hi - page_start)]
                    .copy_from_slice(&data[in_buf(lo - offset)..in_buf(hi - offset)]);
            }
        }
        self.size = self.size.max(end);
        self.modified = SystemTime::now();
        Ok(())
    }

    /// Reads `len` bytes at `offset` as seen through the mount: pending pages over backing
    /// bytes, holes as zeros, nothing past the logical size.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let want = u64::try_from(len).unwrap_or(u64::MAX);
        let end = offset.saturating_add(want).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; in_buf(end - offset)];
        read_backing(&self.backing, &mut buf, offset)?;
        for (index, page) in self.pages.range(offset / PAGE_SIZE..=(end - 1) / PAGE_SIZE) {
            let page_start = index * PAGE_SIZE;
            let lo = offset.max(page_start);
            let hi = end.min(page_start + PAGE_SIZE);
            buf[in_buf(lo - offset)..in_buf(hi - offset)]
                .copy_from_slice(&page.bytes[in_page(lo - page_start)..in_page(hi - page_start)]);
        }
        Ok(buf)
    }

    /// Follows a truncation the caller has already applied to the backing file: pages
    /// past the new end go, the tail of the page holding the new end becomes zeros.
    pub fn truncate(&mut self, size: u64) {
        let first_gone = size.div_ceil(PAGE_SIZE);
        self.pages.split_off(&first_gone);
        let tail = in_page(size % PAGE_SIZE);
        if tail != 0
            && let Some(page) = self.pages.get_mut(&(size / PAGE_SIZE))
        {
            page.bytes[tail..].fill(0);
        }
        self.size = size;
        self.modified = SystemTime::now();
    }

    /// Writes the chosen pending pages to the backing file (without syncing it) and
    /// forgets them; returns how many were written. Pages are written in file order. On
    /// an error the pages not yet written stay pending.
    pub fn write_back(&mut self, mut chosen: impl FnMut(u64) -> bool) -> io::Result<usize> {
        let indexes: Vec<u64> = self.pages.keys().copied().filter(|i| chosen(*i)).collect();
        for index in &indexes {
            self.write_back_page(*index)?;
            self.pages.remove(index);
        }
        Ok(indexes.len())
    }

    fn write_back_page(&self, index: u64) -> io::Result<()> {
        let Some(page) = self.pages.get(&index) else {
            return Ok(());
        };
        let start = index * PAGE_SIZE;
        if start >= self.size {
            return Ok(());
        }
        let len = in_page((self.size - start).min(PAGE_SIZE));
        self.backing.write_all_at(&page.bytes[..len], start)
    }

    /// The contents of page `index` as the backing file has them, zeros past its end or
    /// past the logical size.
    fn clean_page(&self, index: u64) -> io::Result<Box<[u8]>> {
        let mut bytes = vec![0; PAGE_LEN].into_boxed_slice();
        let start = index * PAGE_SIZE;
        if start < self.size {
            let len = in_page((self.size - start).min(PAGE_SIZE));
            read_backing(&self.backing, &mut bytes[..len], start)?;
        }
        Ok(bytes)
    }
}

/// Fills `buf` from `file` at `offset`; bytes past the end of the file stay as they were
/// (zero in every caller).
pub fn read_backing(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset + u64::try_from(done).map_err(|_| too_large())?;
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// An offset within one page; always below `PAGE_SIZE`, so it fits a `usize`.
fn in_page(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(PAGE_LEN)
}

/// An offset within a buffer the caller already holds in memory, so it fits a `usize`.
fn in_buf(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

fn too_large() -> io::Error {
    io::Error::from_raw_os_error(nix::libc::EFBIG)
}

#[cfg(test)]
mod tests;
