//! Leaving the machine as it was: on a normal end, an error, a panic, ctrl-c or SIGTERM, and
//! at the next start after a run that was killed outright.
//!
//! Everything a run creates outside its run directory (namespaces, the bridge, FUSE mounts,
//! filesystem and node processes) is listed in a small state file under
//! `/run/sonraft-campaign/<name>.json`, rewritten whenever it changes. Teardown works from
//! that list alone, so the same function serves the panic hook, the signal handler, `Drop`,
//! and the next run, which tears down every run of its prefix whose campaign process is gone.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::command::{alive, run};
use crate::{lazyfs, netns};

/// Where the state files live (tmpfs: gone after a reboot, like the namespaces).
const STATE_DIR: &str = "/run/sonraft-campaign";

/// What one run created outside its run directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    pub campaign_pid: u32,
    pub name: String,
    pub slots: usize,
    pub run_dir: PathBuf,
    pub mounts: Vec<PathBuf>,
    pub lazyfs_pids: Vec<u32>,
}

static CURRENT: Mutex<Option<Registry>> = Mutex::new(None);

fn state_file(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.json"))
}

fn save(r: &Registry) {
    let _ = std::fs::create_dir_all(STATE_DIR);
    if let Ok(text) = serde_json::to_string_pretty(r) {
        let _ = std::fs::write(state_file(&r.name), text);
    }
}

/// Starts tracking the resources of this run.
pub fn begin(name: &str, slots: usize, run_dir: &Path) {
    let r = Registry {
        campaign_pid: std::process::id(),
        name: name.to_string(),
        slots,
        run_dir: run_dir.to_path_buf(),
        ..Registry::default()
    };
    save(&r);
    if let Ok(mut current) = CURRENT.lock() {
        *current = Some(r);
    }
}

/// Records a change to this run's resources.
pub fn update(change: impl FnOnce(&mut Registry)) {
    if let Ok(mut current) = CURRENT.lock()
        && let Some(r) = current.as_mut()
    {
        change(r);
        save(r);
    }
}

/// Removes everything `r` lists; idempotent and best effort.
pub fn teardown(r: &Registry) {
    // Nodes first (they hold files on the mounts), then the filesystems, then the network.
    netns::kill_processes(&r.name, r.slots);
    // Innermost first: the filesystems, then the shared directory that holds them.
    for m in r.mounts.iter().rev() {
        lazyfs::force_unmount(m);
    }
    for &pid in &r.lazyfs_pids {
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sonraft-lazyfs"));
        if ours && alive(pid) {
            let _ = run(&["kill", "-KILL", &pid.to_string()]);
        }
    }
    netns::destroy(&r.name, r.slots);
    let _ = std::fs::remove_file(state_file(&r.name));
}

/// Tears down the resources of this run, if any are still tracked.
pub fn teardown_current() {
    let taken = CURRENT.lock().ok().and_then(|mut c| c.take());
    if let Some(r) = taken {
        teardown(&r);
    }
}

/// Tears down every run whose name starts with `prefix` and whose campaign process is gone;
/// returns their names.
pub fn cleanup_leftovers(prefix: &str, slots_if_unknown: usize) -> Vec<String> {
    let mut cleaned = Vec::new();
    let entries = std::fs::read_dir(STATE_DIR).into_iter().flatten().flatten();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(name) = name.strip_suffix(".json") else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(r) = serde_json::from_str::<Registry>(&text) else {
            let _ = std::fs::remove_file(entry.path());
            continue;
        };
        if r.campaign_pid != std::process::id() && !alive(r.campaign_pid) {
            teardown(&r);
            cleaned.push(r.name);
        }
    }
    // Namespaces whose state file is gone (a run killed before it wrote one).
    for ns in netns::namespaces_with_prefix(prefix) {
        let Some((name, _)) = ns.rsplit_once("-s") else {
            continue;
        };
        if !state_file(name).exists() && !cleaned.iter().any(|c| c == name) {
            netns::destroy(name, slots_if_unknown);
            cleaned.push(name.to_string());
        }
    }
    cleaned
}

/// Makes panics and SIGINT/SIGTERM tear this run down and end the process.
pub fn install_handlers() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        // A panic anywhere (a client task included) is a bug of the campaign: stop the run
        // rather than go on with half of it.
        teardown_current();
        std::process::exit(101);
    }));
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        eprintln!("sonraft-campaign: interrupted; tearing down (the run directory is kept)");
        teardown_current();
        std::process::exit(code);
    });
}

/// Tears the run down when dropped (the normal and error paths of `main`).
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        teardown_current();
    }
}
