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
    /// Print a shell completion script for every command and flag.
    #[command(after_help = "Examples:\n  \
        sonraft completions bash > /etc/bash_completion.d/sonraft\n  \
        sonraft completions zsh > \"${fpath[1]}/_sonraft\"")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of sonraft and every subcommand.
    #[command(after_help = "Example:\n  sonraft man > /usr/local/share/man/man1/sonraft.1")]
    Man,
}

fn main() {
    let cli = Cli::parse();
    // Generated from the clap definitions; no runtime needed.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "sonraft", &mut out);
            write_out(&out);
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            let rendered = clap_mangen::Man::new(cmd.clone())
                .render(&mut out)
                .and_then(|()| {
                    // Each subcommand's page after the top one, so one file holds the whole manual.
                    for sub in cmd.get_subcommands() {
                        let name = format!("sonraft-{}", sub.get_name());
                        clap_mangen::Man::new(sub.clone())
                            .title(name)
                            .render(&mut out)?;
                    }
                    Ok(())
                });
            if let Err(e) = rendered {
                let _ = writeln!(std::io::stderr(), "sonraft: cannot render the manual: {e}");
                std::process::exit(1);
            }
            write_out(&out);
        }
        _ => {}
    }
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
                let check = args.check_config;
                let config =
                    sonraft_node::config::NodeConfig::resolve(args.with_secrets_from_env())?;
                if check {
                    let _ = writeln!(std::io::stdout(), "configuration ok\n{}", config.summary());
                    return Ok(());
                }
                sonraft_node::init_logging(&config);
                sonraft_node::run(config).await
            }
            Command::Ctl(args) => ctl::run(args).await,
            Command::Sim(args) => sonraft_sim::run(args).await,
            Command::Bench(args) => sonraft_bench::run(args).await,
            Command::Completions { .. } | Command::Man => Ok(()),
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

/// Writes generated text to stdout and exits: 0, or quietly 0 when the reader closed the pipe
/// (`sonraft man | head`).
fn write_out(bytes: &[u8]) -> ! {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
    std::process::exit(0)
}
