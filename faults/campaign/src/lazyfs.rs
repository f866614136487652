//! A node's data directory on `sonraft-lazyfs`, whose unsynced writes a power cut loses.
//!
//! kill -9 keeps the page cache, so it never tests what a node fsynced. `sonraft-lazyfs` (a
//! FUSE passthrough in `faults/lazyfs`) keeps every write that was not fsynced in its own
//! memory and, on `crash`, throws it away (`crash-torn` keeps a random part of it, like a
//! disk that wrote some sectors). A power loss is then: SIGKILL the node, `crash` its
//! filesystem, start the node again on what survived. Everything that talks to the
//! filesystem process is in this module, so that a change of its control interface stays
//! here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::command::run;

/// Why the filesystem could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    #[error("cannot start {binary}: {error}")]
    Spawn { binary: String, error: String },
    #[error("{mount} was not mounted within {waited:?} (log: {log})")]
    NotMounted {
        mount: String,
        waited: Duration,
        log: String,
    },
    #[error("sonraft-lazyfs exited: {status} (log: {log})")]
    Exited { status: String, log: String },
    #[error("control command {command:?} failed: {detail}")]
    Control { command: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a power cut drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Crash {
    /// Every write not synced is lost.
    Clean,
    /// A random subset of the unsynced writes survives.
    Torn,
}

/// One mounted `sonraft-lazyfs`.
#[derive(Debug)]
pub struct LazyFs {
    binary: PathBuf,
    pub mount: PathBuf,
    control: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn mounted(mount: &Path) -> bool {
    let target = mount.display().to_string();
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(target.as_str()))
    })
}

impl LazyFs {
    /// Mounts `backing` at `mount`, controlled through `control`, logging to `log`.
    pub fn mount(
        binary: &Path,
        backing: &Path,
        mount: &Path,
        control: &Path,
        log: &Path,
        seed: u64,
    ) -> Result<LazyFs, LazyFsError> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mount)?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(binary)
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(mount)
            .arg("--control")
            .arg(control)
            .args(["--seed", &seed.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| LazyFsError::Spawn {
                binary: binary.display().to_string(),
                error: e.to_string(),
            })?;
        let mut fs = LazyFs {
            binary: binary.to_path_buf(),
            mount: mount.to_path_buf(),
            control: control.to_path_buf(),
            log: log.to_path_buf(),
            child: Some(child),
        };
        let waited = Duration::from_secs(20);
        let deadline = Instant::now() + waited;
        while !(mounted(mount) && control.exists()) {
            if let Some(c) = fs.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                fs.child = None;
                return Err(LazyFsError::Exited {
                    status: status.to_string(),
                    log: log.display().to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(LazyFsError::NotMounted {
                    mount: mount.display().to_string(),
                    waited,
                    log: log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(fs)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends one control command and returns its answer.
    async fn control(&self, command: &str) -> Result<String, LazyFsError> {
        let out = tokio::process::Command::new(&self.binary)
            .arg("ctl")
            .arg(&self.control)
            .arg(command)
            .output()
            .await
            .map_err(|e| LazyFsError::Control {
                command: command.into(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(LazyFsError::Control {
                command: command.into(),
                detail: format!(
                    "{}: {} (log: {})",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.log.display()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Drops (all or part of) what was not synced. The node using it must be dead already.
    pub async fn crash(&self, how: Crash) -> Result<String, LazyFsError> {
        self.control(match how {
            Crash::Clean => "crash",
            Crash::Torn => "crash-torn",
        })
        .await
    }

    /// Counters of the filesystem, for the run directory.
    pub async fn stats(&self) -> Result<String, LazyFsError> {
        self.control("stats").await
    }

    /// Unmounts and stops the filesystem process (best effort): the `unmount` command, and
    /// if it does not exit within a few seconds, SIGKILL and a lazy unmount.
    pub fn unmount(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let ctl = Command::new(&self.binary)
            .arg("ctl")
            .arg(&self.control)
            .arg("unmount")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        // Neither the command nor the filesystem may hold the run up: a few seconds each.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ctl = ctl.ok();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut ctl) = ctl.take()
            && !matches!(ctl.try_wait(), Ok(Some(_)))
        {
            let _ = ctl.kill();
            let _ = ctl.wait();
        }
        if !matches!(c.try_wait(), Ok(Some(_))) {
            let _ = c.kill();
            let _ = c.wait();
        }
        force_unmount(&self.mount);
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Makes `dir` a shared mount of its own, to hold the run's filesystems.
///
/// Every `ip netns exec` (this run's or another's) copies the whole mount table into a new
/// mount namespace. On a machine whose mounts are private, those copies keep a FUSE mount
/// alive after it is unmounted here, and its filesystem process then never sees the end of
/// its session. Under a shared parent the copies are slaves, and unmounting propagates.
pub fn shared_root(dir: &Path) -> Result<(), LazyFsError> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display().to_string();
    let failed = |e: crate::command::CommandError| LazyFsError::Control {
        command: format!("mount --bind/--make-shared {d}"),
        detail: e.to_string(),
    };
    run(&["mount", "--bind", &d, &d]).map_err(failed)?;
    run(&["mount", "--make-shared", &d]).map_err(failed)?;
    Ok(())
}

/// Unmounts a mount whose filesystem process is gone or stuck (best effort).
pub fn force_unmount(mount: &Path) {
    if mounted(mount) {
        let _ = run(&["umount", "-l", &mount.display().to_string()]);
    }
}
