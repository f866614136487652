//! `sonraft sim`: a fleet of simulated antennas.
//!
//! - [`topology`]: the layout and the planted problems;

pub mod topology;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Print the simulated network as the JSON `POST /image/import` takes.
    Export(LayoutArgs),
}

/// What determines the layout; the simulator and the exported image must use the same values.
#[derive(Args, Debug, Clone)]
pub struct LayoutArgs {
    /// Number of cells (three per cell site).
    #[arg(long, default_value_t = 300)]
    pub cells: usize,
    /// Seed of the layout and of the planted problems.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The sonraft sites that split the network between them.
    #[arg(long, value_delimiter = ',', default_value = "site-a,site-b,site-c")]
    pub regions: Vec<String>,
}

/// Runs `sonraft sim`.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Export(layout) => {
            use std::io::Write;
            let topo = topology::Topology::build(layout.cells, layout.seed, &layout.regions);
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, &topo.image_json())?;
            writeln!(out)?;
            Ok(())
        }
    }
}
