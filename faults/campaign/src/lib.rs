//! A fault campaign against a three-node sonraft cluster, with its own checker.
//!
//! kill -9 and SIGSTOP cannot reach the holes that matter most in a replicated store: data a
//! node acknowledged but had not synced, a leader cut off by a firewall that answers, a
//! commit of an older term's entry right after an election. This crate starts three real
//! `sonraft node` processes where those faults are real — each in its own network namespace,
//! on its own `sonraft-lazyfs` filesystem (unsynced writes are lost on a power cut), on its
//! own libfaketime clock — runs read-modify-write clients against them while a seeded
//! nemesis injects faults, and then judges what the clients saw.
//!
//! It is a black box: it drives the `sonraft` binary over HTTP and signals only, and shares no
//! code with the node, so that the checker cannot inherit the node's mistakes.
//!
//! ## Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`campaign`] | one run, top to bottom |
//! | [`netns`] | namespaces, bridge, partitions (iptables) |
//! | [`lazyfs`] | the power-loss filesystem of each site |
//! | [`clock`] | each node's jumpable wall clock (libfaketime) |
//! | [`node`], [`cluster`] | node processes and the three sites ("slots") |
//! | [`http`], [`api`] | the admin API as seen from outside |
//! | [`workload`], [`history`] | the clients and what they were told |
//! | [`nemesis`] | the seeded fault schedule |
//! | [`checks`], [`linearizability`], [`witness`] | the judgement |
//! | [`report`] | the summary |
//! | [`failover`], [`wait_trace`] | a benchmark apart: client waits while a cut-off leader is replaced, and where the slowest waited |
//! | [`teardown`], [`prerequisites`], [`command`] | leaving the machine clean; what it needs |
//!
//! ## A run
//!
//! 1. Tear down leftovers of dead runs of the same prefix; check the machine; check that
//!    libfaketime moves `SystemTime` and not `Instant` in a Rust process.
//! 2. Create a bridge and three namespaces, mount three lazyfs, start three nodes
//!    (`--timing loopback`), `POST /cluster/init`, import a few cells.
//! 3. Clients read a cell from a random node and propose, through a random node, a change set
//!    conditional on the version read, with a unique token as its reason; every operation
//!    goes to `history.jsonl`. Meanwhile the nemesis injects one fault at a time, heals it,
//!    and checks that every node starts again and the cluster is whole (`faults.jsonl`).
//! 4. Heal, wait until all nodes applied the same index, compare digests, read the final
//!    history and cells (`evidence.json`), and check: no acknowledged change set lost, no
//!    version acknowledged twice, each cell's version chain intact, each cell linearizable.
//! 5. Print the summary (also `summary.json`); exit 1 on any anomaly.

#![forbid(unsafe_code)]

pub mod api;
pub mod campaign;
pub mod checks;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod failover;
pub mod history;
pub mod http;
pub mod lazyfs;
pub mod linearizability;
pub mod nemesis;
pub mod netns;
pub mod node;
pub mod prerequisites;
pub mod report;
pub mod teardown;
pub mod wait_trace;
pub mod witness;
pub mod workload;
