//! The FUSE filesystem: a passthrough to the backing directory whose file *data* goes
//! through the [`PageCache`] and whose *metadata* goes straight to the backing directory.
//!
//! - `data.rs`: open, create, read, write, fsync, close — where durability is decided.
//! - `tree.rs`: names, directories and attributes — applied to the backing directory at
//!   once.
//! - `inodes.rs`, `handles.rs`, `attr.rs`: the bookkeeping FUSE needs.
//!
//! # Why metadata is durable at once
//!
//! Creating, renaming, unlinking and truncating act on the backing directory immediately,
//! as if every metadata change were journaled before it returned (LazyFS does the same).
//! A real filesystem can lose a rename or a create that was not followed by an fsync of
//! the directory; this filesystem does not simulate that. What it does simulate is the
//! loss that matters for sled and for most storage engines: file contents written but
//! not synced. A file created and written without fsync comes back after a power cut as
//! it was before the writes (empty, if new): its name survives, its bytes do not.
//!
//! # Why the kernel must not cache
//!
//! Every open is answered with `FOPEN_DIRECT_IO`, so the kernel keeps no page cache for
//! our files: reads and writes reach us one system call at a time, and after a power cut
//! nothing in the kernel can still serve a dropped byte, not even to a descriptor opened
//! before the cut. Attributes and names are cached for zero seconds for the same reason.
//! The price is that shared writable `mmap` is refused by the kernel (ENODEV) and private
//! read-only maps may be served from a page cache that a power cut does not clear; sled
//! 0.34 does not mmap its files (it uses `pread`/`pwrite`). One kernel cache remains: the
//! file size a descriptor's `O_APPEND` writes start from, which the kernel takes from its
//! inode without asking; a descriptor opened with `O_APPEND` before a cut may append at
//! the pre-cut size. A campaign kills every user of the mount before a cut, so no such
//! descriptor survives it.
//!
//! # Locks
//!
//! Three mutexes, always taken in this order and never the other way round: inodes,
//! handles, page cache. The page cache is shared with the control socket, so a power cut
//! waits for the write in progress and the next write sees the cut complete.

mod attr;
mod data;
mod handles;
mod inodes;
mod tree;

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, Filesystem, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::page_cache::{FileKey, PageCache};
use attr::TTL;
use handles::Handles;
use inodes::InodeTable;

/// The filesystem served at the mount point.
#[derive(Debug)]
pub struct LazyFs {
    root: PathBuf,
    inodes: Mutex<InodeTable>,
    handles: Mutex<Handles>,
    cache: Arc<Mutex<PageCache>>,
}

impl LazyFs {
    /// A filesystem over the backing directory `root` (absolute), keeping pending writes
    /// in `cache`.
    pub fn new(root: PathBuf, cache: Arc<Mutex<PageCache>>) -> io::Result<Self> {
        let key = FileKey::of(&std::fs::metadata(&root)?);
        Ok(Self {
            inodes: Mutex::new(InodeTable::new(root.clone(), key)),
            root,
            handles: Mutex::new(Handles::default()),
            cache,
        })
    }
}

/// Takes a lock even if a thread panicked while holding it: the data behind it stays
/// usable (every mutation here is a single insert or remove), and refusing all further
/// requests would hang every process using the mount.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps an error from the `nix` wrappers to the errno FUSE returns.
fn errno(err: nix::errno::Errno) -> Errno {
    Errno::from_i32(err as i32)
}

/// Logs a refused request: EIO (the backing disk failed) is worth an operator's look,
/// the rest (ENOENT, EEXIST, …) is the caller's business.
fn logged(op: &str, err: Errno) -> Errno {
    if err == Errno::EIO {
        tracing::warn!(op, "backing I/O error");
    } else {
        tracing::debug!(op, errno = err.code(), "request refused");
    }
    err
}

fn entry(reply: ReplyEntry, op: &str, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(err) => reply.error(logged(op, err)),
    }
}

fn empty(reply: ReplyEmpty, op: &str, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(logged(op, err)),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, "lookup", self.lookup_child(parent, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.inodes).forget(ino, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(err) => reply.error(logged("getattr", err)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = tree::Change {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        match self.set_attr(ino, fh, change) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(err) => reply.error(logged("setattr", err)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.read_link(ino) {
            Ok(target) => reply.data(&target),
            Err(err) => reply.error(logged("readlink", err)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        entry(reply, "mkdir", self.make_dir(parent, name, mode & !umask));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, "unlink", self.remove_file(parent, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, "rmdir", self.remove_dir(parent, name));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            "symlink",
            self.make_symlink(parent, link_name, target),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.rename_entry(parent, name, newparent, newname, flags);
        empty(reply, "rename", result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry(reply, "link", self.hard_link(ino, newparent, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(ino, flags) {
            Ok(fh) => reply.opened(fh, data::OPEN_FLAGS),
            Err(err) => reply.error(logged("open", err)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_file(fh, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(err) => reply.error(logged("read", err)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_file(ino, fh, offset, data) {
            Ok(written) => reply.written(written),
            Err(err) => reply.error(logged("write", err)),
        }
    }

    /// `close` does not make data durable, so there is nothing to do here.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.close_file(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, "fsync", self.sync_file(fh, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_dir(ino) {
            Ok(fh) => reply.opened(fh, fuser::FopenFlags::empty()),
            Err(err) => reply.error(logged("opendir", err)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.read_dir(fh, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).close(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, "fsyncdir", self.sync_dir(ino));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match tree::statfs(&self.root) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(err) => reply.error(logged("statfs", err)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_file(parent, name, mode & !umask, flags) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, data::OPEN_FLAGS),
            Err(err) => reply.error(logged("create", err)),
        }
    }
}
