//! Open files and directories, by the handle number the kernel passes back.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::sync::Arc;

use fuser::{Errno, FileHandle, FileType, INodeNo};

use crate::page_cache::FileKey;

/// An open regular file.
#[derive(Debug, Clone)]
pub struct OpenFile {
    /// Backing identity, which keys the file's pending pages.
    pub key: FileKey,
    /// The backing file, opened read-write if the caller may write (pending pages need
    /// a readable descriptor to fill partly written pages and a writable one to be
    /// written back).
    pub file: Arc<File>,
    /// Whether the caller opened for writing.
    pub writable: bool,
    /// Whether the caller opened with `O_SYNC`/`O_DSYNC`: each write is then synced
    /// before it returns, as the flag promises.
    pub sync_writes: bool,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Informational inode number (`d_ino`); the kernel looks names up before using them.
    pub ino: INodeNo,
    /// File type.
    pub kind: FileType,
    /// File name.
    pub name: OsString,
}

#[derive(Debug)]
enum Handle {
    File(OpenFile),
    /// A listing taken at `opendir`, so that offsets stay meaningful while the directory
    /// changes between `readdir` calls.
    Dir(Arc<Vec<Entry>>),
}

/// Every open handle.
#[derive(Debug, Default)]
pub struct Handles {
    open: HashMap<u64, Handle>,
    next: u64,
}

impl Handles {
    /// Registers an open file and returns its handle number.
    pub fn open_file(&mut self, file: OpenFile) -> FileHandle {
        self.insert(Handle::File(file))
    }

    /// Registers a directory listing and returns its handle number.
    pub fn open_dir(&mut self, entries: Vec<Entry>) -> FileHandle {
        self.insert(Handle::Dir(Arc::new(entries)))
    }

    /// The open file behind `fh`; EBADF if `fh` is not an open file.
    pub fn file(&self, fh: FileHandle) -> Result<OpenFile, Errno> {
        match self.open.get(&fh.0) {
            Some(Handle::File(file)) => Ok(file.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// The listing behind `fh`; EBADF if `fh` is not an open directory.
    pub fn dir(&self, fh: FileHandle) -> Result<Arc<Vec<Entry>>, Errno> {
        match self.open.get(&fh.0) {
            Some(Handle::Dir(entries)) => Ok(Arc::clone(entries)),
            _ => Err(Errno::EBADF),
        }
    }

    /// Any open file on the backing file `key`, to reach a file that has lost its path.
    pub fn any_file_of(&self, key: FileKey) -> Option<OpenFile> {
        self.open.values().find_map(|handle| match handle {
            Handle::File(file) if file.key == key => Some(file.clone()),
            _ => None,
        })
    }

    /// Closes `fh`; returns the file it was, if it was a file.
    pub fn close(&mut self, fh: FileHandle) -> Option<OpenFile> {
        match self.open.remove(&fh.0) {
            Some(Handle::File(file)) => Some(file),
            _ => None,
        }
    }

    fn insert(&mut self, handle: Handle) -> FileHandle {
        self.next += 1;
        self.open.insert(self.next, handle);
        FileHandle(self.next)
    }
}
