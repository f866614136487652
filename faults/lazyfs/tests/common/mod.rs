//! A real `sonraft-lazyfs` process on a temporary backing directory and mount point.
//!
//! The tests need `/dev/fuse` and root (or `fusermount3`); without them they fail with a
//! message naming what is missing rather than passing without having tested anything.

#![allow(dead_code)] // each test file uses a different part of the fixture

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the mount may take to come up or go down.
const PATIENCE: Duration = Duration::from_secs(20);

/// A mounted filesystem, unmounted (and its process reaped) on drop.
pub struct LazyMount {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl LazyMount {
    /// Mounts with torn cuts seeded by `0`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Mounts with extra command-line arguments (`--seed`, `--max-pending-bytes`).
    pub fn start_with(args: &[&str]) -> Self {
        require_fuse();
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["backing", "mnt"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create dir");
        }
        let log = File::create(dir.path().join("lazyfs.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sonraft-lazyfs"))
            .arg("--backing")
            .arg(dir.path().join("backing"))
            .arg("--mount")
            .arg(dir.path().join("mnt"))
            .arg("--control")
            .arg(dir.path().join("control.sock"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sonraft-lazyfs");
        let mut mount = Self {
            dir,
            child: Some(child),
        };
        mount.wait_until_live();
        mount
    }

    /// Polls until the control socket exists (bound only after the FUSE handshake) and
    /// the mount is listed in /proc/mounts.
    fn wait_until_live(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "sonraft-lazyfs exited with {status} before mounting:\n{}",
                    self.log()
                );
            }
            let socket =
                std::fs::symlink_metadata(self.control()).is_ok_and(|m| m.file_type().is_socket());
            if socket && self.is_mounted() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mount not live after {PATIENCE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the mount point is in the mount table.
    pub fn is_mounted(&self) -> bool {
        let target = self.mount_point().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/mounts")
            .expect("read /proc/mounts")
            .lines()
            .any(|line| line.split(' ').nth(1) == Some(target.as_str()))
    }

    /// `name` as seen through the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mount_point().join(name)
    }

    /// `name` in the backing directory: what a power cut leaves.
    pub fn on_disk(&self, name: &str) -> PathBuf {
        self.dir.path().join("backing").join(name)
    }

    pub fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// Runs `sonraft-lazyfs ctl SOCKET command`; returns exit code and reply line.
    pub fn ctl(&self, command: &str) -> (i32, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_sonraft-lazyfs"))
            .arg("ctl")
            .arg(self.control())
            .arg(command)
            .output()
            .expect("run sonraft-lazyfs ctl");
        let reply = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.code().unwrap_or(-1), reply)
    }

    /// Sends a command that must succeed; returns the reply.
    pub fn ok(&self, command: &str) -> String {
        let (code, reply) = self.ctl(command);
        assert_eq!(code, 0, "`{command}` answered {reply:?}\n{}", self.log());
        assert!(reply.starts_with("ok"), "`{command}` answered {reply:?}");
        reply
    }

    /// Cuts the power, dropping every unsynced write.
    pub fn crash(&self) -> String {
        self.ok("crash")
    }

    /// One `key=value` field of `stats`.
    pub fn stat(&self, key: &str) -> u64 {
        field(&self.ok("stats"), key)
    }

    /// Unmounts through the control socket and waits for the process to exit 0.
    pub fn unmount(&mut self) -> String {
        let reply = self.ok("unmount");
        let status = self
            .child
            .take()
            .map(|mut c| c.wait().expect("wait for sonraft-lazyfs"));
        assert!(
            status.is_some_and(|s| s.success()),
            "unclean exit:\n{}",
            self.log()
        );
        reply
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit success.
    pub fn terminate(&mut self) -> bool {
        let child = self.child.take().expect("running");
        stop(child).is_some_and(|s| s.success())
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lazyfs.log")).unwrap_or_default()
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
        if self.is_mounted() {
            // Last resort, so a failed test does not leave a dead mount behind.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mount_point())
                .status();
        }
    }
}

/// SIGTERM, then SIGKILL if it does not exit in time.
fn stop(mut child: Child) -> Option<std::process::ExitStatus> {
    let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The value of `key=` in a reply line.
pub fn field(reply: &str, key: &str) -> u64 {
    reply
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {reply:?}"))
}

/// Fails the test, naming what is missing, if FUSE cannot be mounted here.
fn require_fuse() {
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing
            .push("/dev/fuse (load the fuse module, or run the container with --device /dev/fuse)");
    }
    let root = nix::unistd::geteuid().is_root();
    let fusermount = [
        "/usr/bin/fusermount3",
        "/bin/fusermount3",
        "/usr/bin/fusermount",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !root && !fusermount {
        missing.push("root, or fusermount3 (apt install fuse3)");
    }
    assert!(
        missing.is_empty(),
        "these tests mount a FUSE filesystem; missing: {}",
        missing.join("; ")
    );
}

/// Writes `data` at `offset` of `path` (created if needed) without syncing, and closes.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open for writing");
    file.write_all_at(data, offset).expect("write");
}

/// Writes `data` at `offset` of `path` (created if needed), fsyncs, and closes.
pub fn write_synced(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open for writing");
    file.write_all_at(data, offset).expect("write");
    file.sync_all().expect("fsync");
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
