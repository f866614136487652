//! The control socket: how a fault campaign cuts the power.
//!
//! # Protocol
//!
//! A Unix stream socket at `--control PATH`. A client connects, sends one command as one
//! line of text, and reads one line back; the server then closes the connection. The
//! reply is sent only once the command has taken full effect, so a client that has read
//! `ok …` after `crash` knows the pending writes are gone before it restarts anything.
//!
//! | command      | effect                                                        | reply |
//! |--------------|---------------------------------------------------------------|-------|
//! | `crash`      | power cut: every write not yet fsynced is lost                | `ok files=F dropped_pages=D kept_pages=0 failed_pages=0` |
//! | `crash-torn` | power cut after the drive wrote back a seeded random half of the pending pages (not a prefix: holes are possible) | `ok files=F dropped_pages=D kept_pages=K failed_pages=E` |
//! | `checkpoint` | write every pending page to the backing files, unsynced, like the kernel's writeback (LazyFS `cache-checkpoint`) | `ok written_pages=N` |
//! | `stats`      | counters                                                      | `ok pending_files=… pending_pages=… pending_bytes=… max_pending_bytes=… syncs=… dir_syncs=… crashes=… torn_crashes=… written_back_pages=…` |
//! | `unmount`    | unmount, write pending pages back and fsync them (a clean shutdown), exit | `ok unmounted written_back_pages=N` |
//!
//! A command that fails gets `err <reason>`. Replies are `key=value` pairs after the
//! status word so scripts can pick fields with `grep -o`. From bash:
//! `sonraft-lazyfs ctl PATH crash` (exit status 0 on `ok`), or with socat:
//! `echo crash | socat - UNIX-CONNECT:PATH`.
//!
//! The process that used the files must be killed *and reaped* before `crash`: until it
//! has exited, a system call of its may still be inside the filesystem and land after the
//! cut.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fs::lock;
use crate::page_cache::{CrashReport, Cut, PageCache, Stats};

/// How long a client may take to send its command line; a silent client must not block
/// the next one (the server handles one connection at a time, which also serializes
/// power cuts).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest command line accepted.
const MAX_REQUEST: u64 = 256;

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The command line is not one of the commands.
    #[error("unknown command {0:?} (expected crash, crash-torn, checkpoint, stats or unmount)")]
    UnknownCommand(String),
    /// Something other than a socket sits at the control path; it is not ours to delete.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// Socket I/O failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The control socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The server closed the connection without a reply.
    #[error("control socket {0}: no reply")]
    NoReply(PathBuf),
}

/// A control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Power cut losing every unsynced write.
    Crash,
    /// Power cut keeping a seeded random subset of unsynced pages.
    CrashTorn,
    /// Write every pending page back, unsynced.
    Checkpoint,
    /// Report counters.
    Stats,
    /// Unmount cleanly and exit.
    Unmount,
}

impl FromStr for Command {
    type Err = ControlError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        match line.trim() {
            "crash" => Ok(Self::Crash),
            "crash-torn" => Ok(Self::CrashTorn),
            "checkpoint" => Ok(Self::Checkpoint),
            "stats" => Ok(Self::Stats),
            "unmount" => Ok(Self::Unmount),
            other => Err(ControlError::UnknownCommand(other.to_owned())),
        }
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "files={} dropped_pages={} kept_pages={} failed_pages={}",
            self.files, self.dropped_pages, self.kept_pages, self.failed_pages
        )
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pending_files={} pending_pages={} pending_bytes={} max_pending_bytes={} \
             syncs={} dir_syncs={} crashes={} torn_crashes={} written_back_pages={}",
            self.pending_files,
            self.pending_pages,
            self.pending_bytes,
            self.max_pending_bytes,
            self.syncs,
            self.dir_syncs,
            self.crashes,
            self.torn_crashes,
            self.written_back_pages
        )
    }
}

/// A connection that asked to unmount; whoever unmounts answers it.
#[derive(Debug)]
pub struct UnmountRequest(UnixStream);

impl UnmountRequest {
    /// Sends the final reply.
    pub fn answer(mut self, reply: &str) {
        if let Err(err) = writeln!(self.0, "{reply}") {
            tracing::warn!(%err, "could not answer the unmount request");
        }
    }
}

/// The listening control socket.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    cache: Arc<Mutex<PageCache>>,
}

impl ControlServer {
    /// Listens at `path`, replacing a stale socket left by an earlier run.
    pub fn bind(path: &Path, cache: Arc<Mutex<PageCache>>) -> Result<Self, ControlError> {
        let io_err = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(io_err)?
            }
            Ok(_) => return Err(ControlError::NotASocket(path.to_path_buf())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(err)),
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        Ok(Self { listener, cache })
    }

    /// Serves connections one at a time until one asks to unmount, and returns that one.
    pub fn serve(&self) -> Option<UnmountRequest> {
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(%err, "control socket accept failed");
                    continue;
                }
            };
            match self.handle(stream) {
                Ok(Some(request)) => return Some(request),
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "control request failed"),
            }
        }
        None
    }

    /// Answers one connection; returns it instead if it asks to unmount.
    fn handle(&self, mut stream: UnixStream) -> io::Result<Option<UnmountRequest>> {
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        let mut line = String::new();
        BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
        let reply = match line.parse::<Command>() {
            Ok(Command::Unmount) => return Ok(Some(UnmountRequest(stream))),
            Ok(command) => self.execute(command),
            Err(err) => format!("err {err}"),
        };
        writeln!(stream, "{reply}")?;
        Ok(None)
    }

    fn execute(&self, command: Command) -> String {
        let mut cache = lock(&self.cache);
        match command {
            Command::Crash | Command::CrashTorn => {
                let cut = if command == Command::Crash {
                    Cut::Clean
                } else {
                    Cut::Torn
                };
                let report = cache.crash(cut);
                tracing::info!(?cut, %report, "power cut");
                format!("ok {report}")
            }
            Command::Checkpoint => match cache.checkpoint() {
                Ok(written) => format!("ok written_pages={written}"),
                Err(err) => format!("err checkpoint: {err}"),
            },
            Command::Stats => format!("ok {}", cache.stats()),
            Command::Unmount => "err unmount is answered by the shutdown".to_owned(),
        }
    }
}

/// Sends `command` to the control socket at `path` and returns the reply line, waiting
/// as long as the command takes.
pub fn request(path: &Path, command: &str) -> Result<String, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(io_err)?;
    writeln!(stream, "{command}").map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(io_err)?;
    if reply.is_empty() {
        return Err(ControlError::NoReply(path.to_path_buf()));
    }
    Ok(reply.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::{Command, ControlError};

    #[test]
    fn commands_parse_with_surrounding_whitespace() {
        assert_eq!("crash\n".parse::<Command>().ok(), Some(Command::Crash));
        assert_eq!(
            " crash-torn ".parse::<Command>().ok(),
            Some(Command::CrashTorn)
        );
        assert_eq!("stats".parse::<Command>().ok(), Some(Command::Stats));
    }

    #[test]
    fn an_unknown_command_is_named_in_the_error() {
        let err = "reboot".parse::<Command>().err();
        assert!(matches!(err, Some(ControlError::UnknownCommand(ref c)) if c == "reboot"));
    }
}
