//! What the campaign needs from the machine, checked up front with a message that says what
//! to install, instead of failing halfway through with an obscure error.

use std::path::{Path, PathBuf};

use crate::clock;

/// A missing prerequisite and how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub what: String,
    pub fix: String,
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Everything missing for a run with these binaries (`lazyfs: None` for plain directories).
pub fn missing(sonraft: &Path, lazyfs: Option<&Path>) -> Vec<Missing> {
    let mut out = Vec::new();
    let mut need = |ok: bool, what: &str, fix: &str| {
        if !ok {
            out.push(Missing {
                what: what.into(),
                fix: fix.into(),
            });
        }
    };
    need(
        is_root(),
        "root (network namespaces, iptables, FUSE mounts)",
        "run as root, e.g. with sudo",
    );
    need(on_path("ip"), "ip (iproute2)", "apt-get install iproute2");
    need(on_path("iptables"), "iptables", "apt-get install iptables");
    need(on_path("kill"), "kill (procps)", "apt-get install procps");
    need(
        clock::libfaketime().is_some(),
        "libfaketime",
        "apt-get install faketime",
    );
    need(
        sonraft.is_file(),
        &format!("the sonraft binary at {}", sonraft.display()),
        "cargo build --release --bin sonraft (or pass --sonraft)",
    );
    if let Some(l) = lazyfs {
        need(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse",
            "load the fuse module (modprobe fuse) or run with --device /dev/fuse in a container",
        );
        need(
            on_path("fusermount3"),
            "fusermount3",
            "apt-get install fuse3",
        );
        need(
            l.is_file(),
            &format!("the sonraft-lazyfs binary at {}", l.display()),
            "cargo build --release -p sonraft-lazyfs (or pass --lazyfs)",
        );
    }
    out
}

/// A binary next to this one (how the test and the script find `sonraft` and
/// `sonraft-lazyfs`).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}
