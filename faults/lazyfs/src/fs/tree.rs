//! Names, directories and attributes: applied to the backing directory before the reply,
//! as if every metadata change were journaled at once (see the module docs of `fs`).
//! The pending pages follow: a rename moves a file's pending bytes with it, an unlink of
//! a file nobody has open drops them, a truncation cuts them.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, INodeNo, RenameFlags, ReplyDirectory, TimeOrNow,
};
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;

use super::attr::{attr_of, kind_of};
use super::handles::Entry;
use super::{LazyFs, errno, lock, logged};
use crate::page_cache::FileKey;

/// The attribute changes of one `setattr` request.
#[derive(Debug, Default)]
pub struct Change {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

/// Capacity figures of the backing filesystem, in the units `statfs` replies with.
#[derive(Debug)]
pub struct Capacity {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl LazyFs {
    /// Looks `name` up in `parent` and hands the kernel a number for it.
    pub(super) fn lookup_child(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let path = lock(&self.inodes).child(parent, name)?;
        self.remember(path)
    }

    /// Hands the kernel a number for the file now at backing `path`, with its attributes.
    pub(super) fn remember(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(&path)?;
        let ino = lock(&self.inodes).remember(path, FileKey::of(&meta));
        Ok(attr_of(ino, &meta, &lock(&self.cache)))
    }

    /// The attributes of `ino`, through the open handle `fh` if the kernel names one
    /// (which also reaches files that have been unlinked).
    pub(super) fn attr(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let meta = match fh {
            Some(fh) => lock(&self.handles).file(fh)?.file.metadata()?,
            None => self.metadata(ino)?,
        };
        Ok(attr_of(ino, &meta, &lock(&self.cache)))
    }

    /// The backing metadata of `ino`: by path while it has one that still names the same
    /// file, else through any open handle on it.
    fn metadata(&self, ino: INodeNo) -> Result<fs::Metadata, Errno> {
        let (path, key) = {
            let inodes = lock(&self.inodes);
            (inodes.path(ino).ok(), inodes.key(ino)?)
        };
        if let Some(path) = path
            && let Ok(meta) = fs::symlink_metadata(&path)
            && FileKey::of(&meta) == key
        {
            return Ok(meta);
        }
        let open = lock(&self.handles).any_file_of(key).ok_or(Errno::ENOENT)?;
        Ok(open.file.metadata()?)
    }

    pub(super) fn set_attr(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        change: Change,
    ) -> Result<FileAttr, Errno> {
        let path = lock(&self.inodes).path(ino).ok();
        let open = match fh {
            Some(fh) => Some(lock(&self.handles).file(fh)?),
            None => None,
        };
        if let Some(size) = change.size {
            let file = match &open {
                Some(open) if open.writable => Arc::clone(&open.file),
                _ => {
                    let path = path.as_ref().ok_or(Errno::ENOENT)?;
                    Arc::new(OpenOptions::new().write(true).open(path)?)
                }
            };
            let key = FileKey::of(&file.metadata()?);
            // Under the cache lock, so no write-back can slip bytes past the new end
            // between cutting the backing file and cutting the pending pages.
            let mut cache = lock(&self.cache);
            file.set_len(size)?;
            cache.truncate(key, size);
        }
        if let Some(mode) = change.mode {
            let permissions = Permissions::from_mode(mode & 0o7777);
            match (&path, &open) {
                (Some(path), _) => fs::set_permissions(path, permissions)?,
                (None, Some(open)) => open.file.set_permissions(permissions)?,
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        if change.uid.is_some() || change.gid.is_some() {
            match (&path, &open) {
                (Some(path), _) => std::os::unix::fs::lchown(path, change.uid, change.gid)?,
                (None, Some(open)) => {
                    std::os::unix::fs::fchown(&*open.file, change.uid, change.gid)?
                }
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        if change.atime.is_some() || change.mtime.is_some() {
            match (&path, &open) {
                (Some(path), _) => nix::sys::stat::utimensat(
                    AT_FDCWD,
                    path,
                    &timespec(change.atime),
                    &timespec(change.mtime),
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(errno)?,
                (None, Some(open)) => {
                    let mut times = FileTimes::new();
                    if let Some(atime) = change.atime {
                        times = times.set_accessed(instant(atime));
                    }
                    if let Some(mtime) = change.mtime {
                        times = times.set_modified(instant(mtime));
                    }
                    open.file.set_times(times)?;
                }
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        self.attr(ino, fh)
    }

    pub(super) fn read_link(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let path = lock(&self.inodes).path(ino)?;
        Ok(fs::read_link(path)?.as_os_str().as_bytes().to_vec())
    }

    pub(super) fn make_dir(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let path = lock(&self.inodes).child(parent, name)?;
        DirBuilder::new().mode(mode & 0o7777).create(&path)?;
        self.remember(path)
    }

    pub(super) fn make_symlink(
        &self,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
    ) -> Result<FileAttr, Errno> {
        let path = lock(&self.inodes).child(parent, name)?;
        std::os::unix::fs::symlink(target, &path)?;
        self.remember(path)
    }

    pub(super) fn hard_link(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let (from, to) = {
            let inodes = lock(&self.inodes);
            (inodes.path(ino)?, inodes.child(newparent, newname)?)
        };
        fs::hard_link(from, &to)?;
        self.remember(to)
    }

    pub(super) fn remove_file(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let path = lock(&self.inodes).child(parent, name)?;
        let key = FileKey::of(&fs::symlink_metadata(&path)?);
        fs::remove_file(&path)?;
        lock(&self.inodes).unlinked(&path);
        self.forget_if_closed(key);
        Ok(())
    }

    pub(super) fn remove_dir(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let path = lock(&self.inodes).child(parent, name)?;
        fs::remove_dir(&path)?;
        lock(&self.inodes).unlinked(&path);
        Ok(())
    }

    /// Renames in the backing directory; `RENAME_NOREPLACE` is honoured, exchange and
    /// whiteout are refused (EINVAL), as nothing here needs them.
    pub(super) fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let (from, to) = {
            let inodes = lock(&self.inodes);
            (
                inodes.child(parent, name)?,
                inodes.child(newparent, newname)?,
            )
        };
        let moved = FileKey::of(&fs::symlink_metadata(&from)?);
        let replaced = fs::symlink_metadata(&to)
            .ok()
            .map(|meta| FileKey::of(&meta));
        if replaced == Some(moved) {
            // Two names of one file: POSIX says rename does nothing.
            return Ok(());
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            nix::fcntl::renameat2(
                AT_FDCWD,
                &from,
                AT_FDCWD,
                &to,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(errno)?;
        } else {
            fs::rename(&from, &to)?;
        }
        {
            let mut inodes = lock(&self.inodes);
            if replaced.is_some() {
                inodes.unlinked(&to);
            }
            inodes.renamed(&from, &to);
        }
        lock(&self.cache).renamed(&from, &to);
        if let Some(key) = replaced {
            self.forget_if_closed(key);
        }
        Ok(())
    }

    /// Drops the pending pages of `key` if nothing has it open and it has no name left.
    pub(super) fn forget_if_closed(&self, key: FileKey) {
        let open = lock(&self.handles).any_file_of(key).is_some();
        if !open {
            lock(&self.cache).forget_if_unlinked(key);
        }
    }

    /// Lists the directory once, at open, so that `readdir` offsets index a stable list.
    pub(super) fn open_dir(&self, ino: INodeNo) -> Result<FileHandle, Errno> {
        let path = lock(&self.inodes).path(ino)?;
        let mut entries = vec![
            Entry {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            Entry {
                ino: INodeNo::ROOT,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for dirent in fs::read_dir(&path)? {
            let dirent = dirent?;
            entries.push(Entry {
                ino: INodeNo(dirent.ino()),
                kind: kind_of(dirent.file_type()?),
                name: dirent.file_name(),
            });
        }
        Ok(lock(&self.handles).open_dir(entries))
    }

    pub(super) fn read_dir(&self, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match lock(&self.handles).dir(fh) {
            Ok(entries) => entries,
            Err(err) => return reply.error(logged("readdir", err)),
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in entries.iter().enumerate().skip(skip) {
            let next = u64::try_from(index + 1).unwrap_or(u64::MAX);
            if reply.add(entry.ino, next, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    /// fsyncs the backing directory (its entries are already there; this makes them
    /// durable against a real crash of the host).
    pub(super) fn sync_dir(&self, ino: INodeNo) -> Result<(), Errno> {
        let path = lock(&self.inodes).path(ino)?;
        File::open(path)?.sync_all()?;
        lock(&self.cache).count_dir_sync();
        Ok(())
    }
}

/// Capacity of the backing filesystem.
pub fn statfs(root: &Path) -> Result<Capacity, Errno> {
    let s = nix::sys::statvfs::statvfs(root).map_err(errno)?;
    Ok(Capacity {
        blocks: s.blocks(),
        bfree: s.blocks_free(),
        bavail: s.blocks_available(),
        files: s.files(),
        ffree: s.files_free(),
        bsize: u32::try_from(s.block_size()).unwrap_or(4096),
        namelen: u32::try_from(s.name_max()).unwrap_or(255),
        frsize: u32::try_from(s.fragment_size()).unwrap_or(4096),
    })
}

fn instant(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn timespec(time: Option<TimeOrNow>) -> TimeSpec {
    match time {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(time)) => time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(TimeSpec::from)
            .unwrap_or(TimeSpec::UTIME_OMIT),
    }
}
