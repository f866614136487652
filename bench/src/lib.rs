//! `sonraft bench`: the load generator and the failover benchmark. Figures are printed as a
//! table and as one JSON line per row; nothing here asserts on time.
//!
//! - [`load`]: N clients looping read-modify-write (or blind writes) against a [`load::Target`];
//! - [`sonraft_target`]: the target for a sonraft cluster (admin API), each client over its own
//!   keep-alive connection ([`session`]);
//! - `etcd_target` (feature `etcd`): the same workload against etcd's gRPC API;
//! - [`failover`]: SIGKILL the leader under load, time to the first successful write;
//! - [`fleet`]: one node against a simulated fleet: sessions, memory, ingestion, latency;
//! - [`son`]: the SON left alone on the simulator for N periods: changes undone, excluded cells
//!   and change windows honoured, parameter groups reversing, too-early handovers;
//! - [`energy`]: one simulated day with and without energy saving;
//! - [`outage`]: a cell site fails, with and without outage compensation;
//! - [`cco`]: coverage and capacity optimisation against a planted overshooter and hole;
//! - [`wan`]: the cluster across user-space WAN links against the same cluster on loopback.
//!
//! The node is measured from outside, as a client would see it: through the admin API
//! ([`sonraft_client`]) and real processes ([`sonraft_testkit`]). The node's library does not
//! depend on this crate, so nothing here can become part of what a node runs.
#![forbid(unsafe_code)]

pub mod anr;
pub mod cco;
pub mod energy;
#[cfg(feature = "etcd")]
pub mod etcd_target;
pub mod failover;
pub mod fleet;
pub mod load;
pub mod outage;
pub mod scale;
pub mod session;
pub mod son;
pub mod sonraft_target;
pub mod waits;
pub mod wan;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Closed-loop load against a running cluster.
    Load(load::LoadArgs),
    /// Kill the leader under load, repeatedly, and time the recovery.
    Failover(failover::FailoverArgs),
    /// One node against a simulated antenna fleet.
    Fleet(fleet::FleetArgs),
    /// The SON on the simulator for N periods: the acceptance figures of issue 12.
    Son(son::SonArgs),
    /// Energy saving over one simulated day, against the same day without it.
    Energy(energy::EnergyArgs),
    /// A cell site fails: detection, compensation on and off, at the busy hour and at night.
    Outage(outage::OutageArgs),
    /// A planted overshooter and coverage hole: coverage and capacity optimisation's fix.
    Cco(cco::CcoArgs),
    /// The cluster with its nodes 25 ms apart (user-space WAN links), against loopback:
    /// change-set latency, read-modify-write throughput, failover.
    Wan(wan::WanArgs),
    /// A large image (100,000 cells, 30 relations each, by default) in a local cluster:
    /// import, memory and disk per node, backup, restart, a learner's catch-up, latency.
    Scale(scale::ScaleArgs),
}

/// Runs `sonraft bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Load(a) => load::run(a).await,
        BenchCommand::Failover(a) => failover::run(a).await,
        BenchCommand::Fleet(a) => fleet::run(a).await,
        BenchCommand::Son(a) => son::run(a).await,
        BenchCommand::Energy(a) => energy::run(a).await,
        BenchCommand::Outage(a) => outage::run(a).await,
        BenchCommand::Cco(a) => cco::run(a).await,
        BenchCommand::Wan(a) => wan::run(a).await,
        BenchCommand::Scale(a) => scale::run(a).await,
    }
}

/// The `q`-quantile (0..=1) of sorted samples.
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
