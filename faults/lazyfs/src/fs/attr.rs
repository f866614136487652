//! File attributes as the mount shows them: the backing file's, with the size and mtime
//! of pending writes laid over them.
//!
//! Attributes and entries are given with a time-to-live of zero: the kernel must ask
//! again every time, because a power cut changes sizes behind its back and a cached size
//! would keep showing bytes that are gone.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::page_cache::{FileKey, PageCache};

/// How long the kernel may cache attributes and names: not at all.
pub const TTL: Duration = Duration::ZERO;

/// The attributes of `ino`, whose backing file is described by `meta`.
pub fn attr_of(ino: INodeNo, meta: &Metadata, cache: &PageCache) -> FileAttr {
    let key = FileKey::of(meta);
    let size = cache.size(key).unwrap_or(meta.len());
    let changed = time(meta.ctime(), meta.ctime_nsec());
    let modified = cache
        .modified(key)
        .unwrap_or_else(|| time(meta.mtime(), meta.mtime_nsec()));
    FileAttr {
        ino,
        size,
        blocks: meta.blocks().max(size.div_ceil(512)),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: modified,
        ctime: changed.max(modified),
        crtime: UNIX_EPOCH,
        kind: kind_of(meta.file_type()),
        perm: u16::try_from(meta.mode() & 0o7777).unwrap_or(0),
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

/// The FUSE file type of a backing file type.
pub fn kind_of(kind: std::fs::FileType) -> FileType {
    if kind.is_dir() {
        FileType::Directory
    } else if kind.is_symlink() {
        FileType::Symlink
    } else if kind.is_fifo() {
        FileType::NamedPipe
    } else if kind.is_socket() {
        FileType::Socket
    } else if kind.is_block_device() {
        FileType::BlockDevice
    } else if kind.is_char_device() {
        FileType::CharDevice
    } else {
        FileType::RegularFile
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
        Err(_) => {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(u64::from(nanos))
        }
    }
}
