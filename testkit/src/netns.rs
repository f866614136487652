//! One network namespace per sonraft site on a bridge, so a test can cut a node off with
//! iptables while the test (and the simulated antennas) in the root namespace still reach it.
//!
//! Loopback cannot lose packets; a veth can. A run is named `sp<pid>-<run>` (hex). Site `n`
//! gets the namespace `<name>-s<n>` at `10.78.<net>.<10 + n>`, joined by the bridge
//! `<name>br`, which holds `10.78.<net>.1`: the address of the root namespace, where the
//! test's client and the simulator are. Each namespace has its own ports, so every node can
//! listen on the same fixed ones.
//!
//! Cuts are iptables rules inside the cut node's namespace, on one TCP port and the peers'
//! addresses only, so a cut node keeps its antennas and its admin API. Everything this makes
//! (namespaces, veths, the bridge, a root FORWARD rule, and what runs in the namespaces) is
//! removed when the [`SiteNetwork`] is dropped, a failing test's unwinding included; what a
//! killed test left behind, the next [`SiteNetwork::create`] removes. This is the part of
//! `sonraft-campaign`'s `netns` a test needs; the campaign keeps its own, as it links none of
//! the project's crates.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// Why namespaces cannot be made on this machine, if they cannot: the tools are missing or
/// the process is not root.
pub fn unavailable() -> Option<String> {
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install {package})"
            ));
        }
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    match uid.as_deref() {
        Some("0") => None,
        Some(uid) => Some(format!(
            "network namespaces need root (effective uid {uid})"
        )),
        None => Some("cannot tell the effective uid (no /proc/self/status)".into()),
    }
}

/// Runs `args` and returns its stdout, or an error with its stderr.
fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the namespaces (and what runs in them), veths, rules and bridges of runs whose
/// process is gone: a test killed (a timeout, SIGKILL) never ran its drop.
fn sweep_abandoned() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    let mut abandoned: BTreeMap<String, usize> = BTreeMap::new();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        // `sp<pid>-<run>-s<site>`, as `SiteNetwork::create` names them.
        let Some((name, site)) = ns.rsplit_once("-s") else {
            continue;
        };
        let Some((pid, run_no)) = name.strip_prefix("sp").and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Ok(pid), Ok(_), Ok(site)) = (
            u32::from_str_radix(pid, 16),
            u32::from_str_radix(run_no, 16),
            site.parse::<usize>(),
        ) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let sites = abandoned.entry(name.to_string()).or_default();
            *sites = (*sites).max(site);
        }
    }
    for (name, sites) in abandoned {
        drop(SiteNetwork {
            name,
            net: 0,
            sites,
        });
    }
}

/// A bridge and one namespace per site, removed on drop.
#[derive(Debug)]
pub struct SiteNetwork {
    /// Unique to this run; every namespace and interface name starts with it.
    pub name: String,
    net: u8,
    sites: usize,
}

impl SiteNetwork {
    /// Makes the bridge and `sites` namespaces (numbered from 1), under a name and a
    /// `10.78.<net>.0/24` no other run on this machine uses.
    pub fn create(sites: usize) -> anyhow::Result<SiteNetwork> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        sweep_abandoned();
        // Interface names are at most 15 bytes: `sp<pid>-<run>` in hex, then `br` or `v<n>`.
        let run_no = RUNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("sp{:x}-{run_no:x}", std::process::id());
        let used = run(&["ip", "-4", "addr"])?;
        let seed = std::process::id() + run_no;
        let net = (0..250u32)
            .map(|i| ((seed + i) % 250 + 1) as u8)
            .find(|n| !used.contains(&format!("10.78.{n}.")))
            .context("every 10.78.<n>.0/24 is in use")?;
        // From here on, drop cleans up whatever was made.
        let network = SiteNetwork { name, net, sites };
        let br = network.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.78.{net}.1/24"),
            "dev",
            &br,
        ])?;
        run(&["ip", "link", "set", &br, "up"])?;
        // With br_netfilter loaded, bridged packets cross the root FORWARD chain, whose policy
        // a container runtime may have set to DROP.
        run(&[
            "iptables", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT",
        ])?;
        for site in 1..=sites {
            let ns = network.namespace(site);
            let (host, peer) = (network.veth(site), format!("{}p{site}", network.name));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
            ])?;
            run(&["ip", "link", "set", &peer, "netns", &ns])?;
            run(&["ip", "link", "set", &host, "master", &br])?;
            run(&["ip", "link", "set", &host, "up"])?;
            let address = format!("{}/24", network.ip(site));
            for args in [
                &["ip", "link", "set", "lo", "up"][..],
                &["ip", "addr", "add", &address, "dev", &peer],
                &["ip", "link", "set", &peer, "up"],
            ] {
                let mut full = vec!["ip", "netns", "exec", &ns];
                full.extend_from_slice(args);
                run(&full)?;
            }
        }
        Ok(network)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.name)
    }

    fn veth(&self, site: usize) -> String {
        format!("{}v{site}", self.name)
    }

    /// The namespace of `site`.
    pub fn namespace(&self, site: usize) -> String {
        format!("{}-s{site}", self.name)
    }

    /// The address of `site`'s namespace.
    pub fn ip(&self, site: usize) -> String {
        format!("10.78.{}.{}", self.net, 10 + site)
    }

    /// The root namespace's address on the bridge (where the test and the simulator are).
    pub fn root_ip(&self) -> String {
        format!("10.78.{}.1", self.net)
    }

    /// The command prefix that runs a program inside `site`'s namespace. `ip netns exec`
    /// execs the program, so the child's pid is the program's.
    pub fn exec_prefix(&self, site: usize) -> Vec<String> {
        ["ip", "netns", "exec"]
            .into_iter()
            .map(str::to_string)
            .chain([self.namespace(site)])
            .collect()
    }

    /// Cuts `site` off from `peers` on TCP `port`, both ways, by dropping the packets (a cut
    /// cable: no reset, connections hang): its connections to their `port` and theirs to its
    /// `port`, new or established. Every rule takes effect at one instant (one
    /// `iptables-restore` commit).
    pub fn cut(&self, site: usize, peers: &[usize], port: u16) -> anyhow::Result<()> {
        let mut rules = String::from("*filter\n");
        for &p in peers {
            let peer = self.ip(p);
            for (chain, side) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                for end in ["--dport", "--sport"] {
                    rules.push_str(&format!(
                        "-A {chain} {side} {peer} -p tcp {end} {port} -j DROP\n"
                    ));
                }
            }
        }
        rules.push_str("COMMIT\n");
        let ns = self.namespace(site);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "iptables-restore", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run iptables-restore")?;
        child
            .stdin
            .take()
            .context("no stdin for iptables-restore")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "iptables-restore in {ns} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Removes every cut of `site`.
    pub fn heal(&self, site: usize) -> anyhow::Result<()> {
        let ns = self.namespace(site);
        for chain in ["INPUT", "OUTPUT"] {
            run(&["ip", "netns", "exec", &ns, "iptables", "-F", chain])?;
        }
        Ok(())
    }
}

impl Drop for SiteNetwork {
    /// Best effort, on every exit path: kills what still runs in the namespaces, then removes
    /// them, the veths, the FORWARD rule and the bridge.
    fn drop(&mut self) {
        for site in 1..=self.sites {
            let ns = self.namespace(site);
            if let Ok(pids) = run(&["ip", "netns", "pids", &ns]) {
                for pid in pids.split_whitespace() {
                    let _ = run(&["kill", "-KILL", pid]);
                }
            }
            let _ = run(&["ip", "netns", "del", &ns]);
            let _ = run(&["ip", "link", "del", &self.veth(site)]);
        }
        let br = self.bridge();
        let _ = run(&[
            "iptables", "-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT",
        ]);
        let _ = run(&["ip", "link", "del", &br]);
    }
}
