//! The `sonraft` command: `node` runs a site's node, `ctl` administers a cluster, `sim`
//! simulates an antenna fleet (`sonraft-sim`), `bench` measures a cluster (`sonraft-bench`).
#![forbid(unsafe_code)]

use std::io::Write;

use clap::{Parser, Subcommand};

mod ctl;
mod upgrade;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sonraft",
    version,
    about = "Self-optimizing network controller on a Raft-replicated network image"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node of one site.
    Node(Box<sonraft_node::config::NodeArgs>),
    /// Administer a cluster over its admin API.
    Ctl(ctl::CtlArgs),
    /// Simulate a fleet of antennas.
    Sim(sonraft_sim::SimArgs),
    /// Benchmarks: load generator, failover.
    Bench(sonraft_bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonraft: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let is_ctl = matches!(cli.command, Command::Ctl(_));
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => {
                let config = sonraft_node::config::NodeConfig::resolve(*args)?;
                sonraft_node::init_logging(&config);
                sonraft_node::run(config).await
            }
            Command::Ctl(args) => ctl::run(args).await,
            Command::Sim(args) => sonraft_sim::run(args).await,
            Command::Bench(args) => sonraft_bench::run(args).await,
        }
    });
    // Exit without waiting for background threads (sled's periodic flusher sleeps up to a
    // second): a node has already synced its store at the end of its graceful stop.
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            // `ctl` documents what its exit status means (`sonraft ctl --help`); the rest fail
            // with 1.
            let (code, say) = if is_ctl {
                ctl::exit::classify(&e)
            } else {
                (1, true)
            };
            if say {
                // Not `eprintln!`: a closed stderr must not turn a failure into a panic.
                let _ = writeln!(std::io::stderr(), "sonraft: {e:#}");
            }
            std::process::exit(code)
        }
    }
}
