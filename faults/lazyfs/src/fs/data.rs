//! File contents: where a write becomes pending and an fsync makes it durable.
//!
//! - `write` puts bytes in the page cache only.
//! - `fsync`/`fdatasync` write the file's pending pages to the backing file and fsync it.
//!   Durability is per file, as on a real filesystem: syncing one file says nothing about
//!   another, and any descriptor of the file (even a read-only one) syncs all its pages.
//! - `flush`/`release` (close) persist nothing.
//! - `sync_file_range` never reaches a FUSE filesystem (there is no such FUSE request, and
//!   with direct I/O the kernel has no pages of ours to write), so it persists nothing,
//!   which is what makes sled's `flush()` visible as not durable.
//! - A file opened with `O_SYNC` or `O_DSYNC` has each write synced before it returns.
//!   `O_DIRECT` gives no durability and is treated as a plain write.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use fuser::{Errno, FileAttr, FileHandle, FopenFlags, INodeNo, OpenAccMode, OpenFlags};
use nix::fcntl::OFlag;

use super::handles::OpenFile;
use super::{LazyFs, lock};
use crate::page_cache::FileKey;

/// Every file is opened for direct I/O: the kernel must hold no page of ours (see the
/// module docs of `fs`).
pub const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

impl LazyFs {
    pub(super) fn open_file(&self, ino: INodeNo, flags: OpenFlags) -> Result<FileHandle, Errno> {
        let path = lock(&self.inodes).path(ino)?;
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        // Read-write whenever the caller may write: partly written pages are filled from
        // the backing file, and pending pages are written back through this descriptor.
        // Never O_APPEND: the kernel already turned appends into offsets.
        let file = OpenOptions::new().read(true).write(writable).open(&path)?;
        let key = FileKey::of(&file.metadata()?);
        Ok(lock(&self.handles).open_file(OpenFile {
            key,
            file: Arc::new(file),
            writable,
            sync_writes: syncs_writes(flags.0),
        }))
    }

    /// Creates the file in the backing directory at once (its name is durable, its bytes
    /// are not until an fsync) and opens it.
    pub(super) fn create_file(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, FileHandle), Errno> {
        let path = lock(&self.inodes).child(parent, name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(mode & 0o7777);
        if flags & OFlag::O_EXCL.bits() != 0 {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options.open(&path)?;
        let key = FileKey::of(&file.metadata()?);
        if flags & OFlag::O_TRUNC.bits() != 0 {
            let mut cache = lock(&self.cache);
            file.set_len(0)?;
            cache.truncate(key, 0);
        }
        let attr = self.remember(path)?;
        let fh = lock(&self.handles).open_file(OpenFile {
            key,
            file: Arc::new(file),
            writable: OpenFlags(flags).acc_mode() != OpenAccMode::O_RDONLY,
            sync_writes: syncs_writes(flags),
        });
        Ok((attr, fh))
    }

    pub(super) fn read_file(
        &self,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let open = lock(&self.handles).file(fh)?;
        let len = usize::try_from(size).map_err(|_| Errno::EINVAL)?;
        Ok(lock(&self.cache).read(open.key, &open.file, offset, len)?)
    }

    pub(super) fn write_file(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        // The path only orders files in a torn power cut; an unlinked file has none.
        let path = lock(&self.inodes).path(ino).unwrap_or_default();
        let open = lock(&self.handles).file(fh)?;
        if !open.writable {
            return Err(Errno::EBADF);
        }
        {
            let mut cache = lock(&self.cache);
            cache.write(open.key, &open.file, &path, offset, data)?;
            if open.sync_writes {
                cache.sync(open.key)?;
            }
        }
        if open.sync_writes {
            open.file.sync_data()?;
        }
        Ok(written)
    }

    pub(super) fn close_file(&self, fh: FileHandle) {
        let closed = lock(&self.handles).close(fh);
        if let Some(closed) = closed {
            self.forget_if_closed(closed.key);
        }
    }

    /// Makes every pending page of the file durable: written to the backing file under
    /// the cache lock, then fsynced outside it so other files' I/O is not held up. A power
    /// cut between the two may keep the pages or not; both are outcomes a real fsync that
    /// has not yet returned allows.
    pub(super) fn sync_file(&self, fh: FileHandle, datasync: bool) -> Result<(), Errno> {
        let open = lock(&self.handles).file(fh)?;
        lock(&self.cache).sync(open.key)?;
        if datasync {
            open.file.sync_data()?;
        } else {
            open.file.sync_all()?;
        }
        Ok(())
    }
}

/// Whether open flags ask for each write to be durable on return (`O_SYNC` includes the
/// `O_DSYNC` bit on Linux).
fn syncs_writes(flags: i32) -> bool {
    flags & OFlag::O_DSYNC.bits() != 0
}
