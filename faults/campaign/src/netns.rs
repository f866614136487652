//! One network namespace per site, joined by a bridge, and partitions made with iptables.
//!
//! Loopback cannot lose packets; namespaces can. Each site ("slot") gets its own namespace
//! with one veth onto a bridge in the root namespace, at `10.77.<net>.<10 + slot>`; the
//! bridge holds `10.77.<net>.1`, which is where the campaign's clients come from, so cutting
//! node-to-node traffic never cuts the clients off (an isolated leader still gets asked, which
//! is the point). Partitions are iptables rules inside the namespaces, on the node-to-node
//! addresses only: DROP (silence, like a cut cable) or REJECT with a TCP reset (like a
//! firewall that answers, the case that makes nodes see "connection refused").

use crate::command::{CommandError, Feeding, run, run_async};

/// How a cut link behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cut {
    Drop,
    Reset,
}

/// Which packets of a link a rule stops, seen from the namespace it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// One rule: in `slot`'s namespace, stop `direction` traffic with `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    pub slot: usize,
    pub peer: usize,
    pub direction: Direction,
    pub cut: Cut,
}

/// The namespaces and bridge of one run.
#[derive(Debug)]
pub struct Network {
    /// Unique name of the run; every interface and namespace starts with it.
    pub name: String,
    pub net: u8,
    pub slots: usize,
}

/// The namespace of `slot` in the run called `name`.
pub fn namespace(name: &str, slot: usize) -> String {
    format!("{name}-s{slot}")
}

/// The bridge of the run called `name`.
pub fn bridge(name: &str) -> String {
    format!("{name}br")
}

impl Network {
    /// Creates the bridge and `slots` namespaces (slots are numbered from 1).
    pub fn create(name: &str, net: u8, slots: usize) -> Result<Network, CommandError> {
        let network = Network {
            name: name.to_string(),
            net,
            slots,
        };
        let br = bridge(name);
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.{net}.1/24"),
            "dev",
            &br,
        ])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for slot in 1..=slots {
            let ns = namespace(name, slot);
            let (host, peer) = (format!("{name}v{slot}"), format!("{name}p{slot}"));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
            ])?;
            run(&["ip", "link", "set", &peer, "netns", &ns])?;
            run(&["ip", "link", "set", &host, "master", &br])?;
            run(&["ip", "link", "set", &host, "up"])?;
            let inside = |args: &[&str]| {
                let mut full = vec!["ip", "netns", "exec", &ns];
                full.extend_from_slice(args);
                run(&full)
            };
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", network.ip(slot)),
                "dev",
                &peer,
            ])?;
            inside(&["ip", "link", "set", &peer, "up"])?;
        }
        Ok(network)
    }

    /// The address of `slot`'s namespace.
    pub fn ip(&self, slot: usize) -> String {
        format!("10.77.{}.{}", self.net, 10 + slot)
    }

    /// The command prefix that runs a program inside `slot`'s namespace.
    pub fn exec_prefix(&self, slot: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            namespace(&self.name, slot),
        ]
    }

    /// Installs partition rules.
    pub async fn cut(&self, rules: &[Rule]) -> Result<(), CommandError> {
        for r in rules {
            let ns = namespace(&self.name, r.slot);
            let peer = self.ip(r.peer);
            let (chain, side) = match r.direction {
                Direction::Inbound => ("INPUT", "-s"),
                Direction::Outbound => ("OUTPUT", "-d"),
            };
            if r.cut == Cut::Reset {
                // The resets this cut answers with must pass the rule of the opposite
                // direction (a reset to the peer's SYN leaves towards the peer), or the peer
                // sees a timeout instead of a refusal and the cut acts like DROP.
                run_async(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-I",
                    chain,
                    side,
                    &peer,
                    "-p",
                    "tcp",
                    "--tcp-flags",
                    "RST",
                    "RST",
                    "-j",
                    "ACCEPT",
                ])
                .await?;
            }
            let mut args = vec![
                "ip", "netns", "exec", &ns, "iptables", "-A", chain, side, &peer,
            ];
            match r.cut {
                Cut::Drop => args.extend(["-j", "DROP"]),
                Cut::Reset => {
                    args.extend(["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"])
                }
            }
            run_async(&args).await?;
        }
        Ok(())
    }

    /// Prepares cutting `slot` off from `peers` on TCP `port` only (the Raft port; the admin
    /// API stays reachable), both ways, with TCP resets: its connections to their `port` and
    /// theirs to its `port`, new or established. The rules wait in an `iptables-restore` for
    /// their COMMIT ([`PendingCut::commit`]), so the cut happens at one instant, not rule by
    /// rule, and not after the tools started.
    pub async fn prepare_port_cut(
        &self,
        slot: usize,
        peers: &[usize],
        port: u16,
    ) -> Result<PendingCut, CommandError> {
        let mut rules = String::from("*filter\n");
        for &p in peers {
            let peer = self.ip(p);
            for (chain, side) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                // The resets the rules below answer with must pass the opposite rule (a reset
                // to a peer's SYN leaves from the Raft port), or a SYN would go unanswered
                // and the peer would see a timeout instead of a refusal.
                rules.push_str(&format!(
                    "-A {chain} {side} {peer} -p tcp --tcp-flags RST RST -j ACCEPT\n"
                ));
                for end in ["--dport", "--sport"] {
                    rules.push_str(&format!(
                        "-A {chain} {side} {peer} -p tcp {end} {port} -j REJECT --reject-with tcp-reset\n"
                    ));
                }
            }
        }
        let ns = namespace(&self.name, slot);
        let tool = ["ip", "netns", "exec", &ns, "iptables-restore", "--noflush"];
        Ok(PendingCut(Feeding::start(&tool, &rules).await?))
    }

    /// Removes every partition rule.
    pub async fn heal(&self) -> Result<(), CommandError> {
        for slot in 1..=self.slots {
            let ns = namespace(&self.name, slot);
            for chain in ["INPUT", "OUTPUT"] {
                run_async(&["ip", "netns", "exec", &ns, "iptables", "-F", chain]).await?;
            }
        }
        Ok(())
    }
}

/// Partition rules waiting for their commit.
pub struct PendingCut(Feeding);

impl PendingCut {
    /// Installs the rules; they are in force when this returns.
    pub async fn commit(self) -> Result<(), CommandError> {
        self.0.finish("COMMIT\n").await.map(drop)
    }
}

/// Kills what still runs in the namespaces of the run called `name` (the nodes it started).
pub fn kill_processes(name: &str, slots: usize) {
    for slot in 1..=slots {
        if let Ok(pids) = run(&["ip", "netns", "pids", &namespace(name, slot)]) {
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-KILL", pid]);
            }
        }
    }
}

/// Deletes the namespaces and bridge of the run called `name` (whatever of them exists).
/// Best effort: used on every exit path.
pub fn destroy(name: &str, slots: usize) {
    kill_processes(name, slots);
    for slot in 1..=slots {
        let _ = run(&["ip", "netns", "del", &namespace(name, slot)]);
        let _ = run(&["ip", "link", "del", &format!("{name}v{slot}")]);
    }
    let _ = run(&["ip", "link", "del", &bridge(name)]);
}

/// Names of namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    run(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// A `10.77.<net>.0/24` network no interface on this machine uses yet.
pub fn free_net(seed: u64) -> Option<u8> {
    let used = run(&["ip", "-4", "addr"]).unwrap_or_default();
    (0..250u64)
        .map(|i| ((seed + i) % 250 + 1) as u8)
        .find(|n| !used.contains(&format!("10.77.{n}.")))
}
