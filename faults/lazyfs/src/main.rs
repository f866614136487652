//! `sonraft-lazyfs`: a FUSE filesystem that loses unsynced writes on a simulated power
//! cut, for fault campaigns against sonraft's storage (sled 0.34 under openraft).
//!
//! `kill -9` never loses the page cache, so it cannot find durability bugs. This
//! filesystem has the semantics of LazyFS (the tool etcd's robustness tests use): written
//! bytes live in memory until an fsync of their file, and a `crash` command drops them.
//! A node's data directory lives on such a mount during a campaign.
//!
//! # Mounting
//!
//! ```text
//! sonraft-lazyfs --backing DIR --mount MNT --control SOCK [--seed N]
//!                [--max-pending-bytes 512MiB] [--threads 4]
//! ```
//!
//! Serves a passthrough of `DIR` (the "disk": it holds exactly what survives a power
//! cut) at `MNT`, in the foreground. Needs `/dev/fuse` and either root (mounts with
//! mount(2)) or `fusermount3`; only the mounting user can use the mount. The control
//! socket `SOCK` appears once the mount is live, so poll for it before starting the node.
//! Stops on SIGTERM/SIGINT or the `unmount` command: unmounts (lazily if files are still
//! open), writes pending pages back and fsyncs them, and exits 0; a second signal exits
//! at once without writing them. If the process is SIGKILLed the pending pages are lost
//! and the mount is left dead: `umount -l MNT` clears it.
//!
//! # Control
//!
//! `sonraft-lazyfs ctl SOCK COMMAND` sends one command, waits until it has taken effect,
//! prints the reply line and exits 0 on `ok …`, 1 on `err …`, 2 if the socket cannot be
//! reached. Commands: `crash`, `crash-torn`, `checkpoint`, `stats`, `unmount`; the
//! protocol and reply formats are in `control.rs`. A campaign's power cut is: SIGKILL the
//! node and wait for it to exit, `ctl SOCK crash` (or `crash-torn`), restart the node.
//!
//! # Semantics, and what they simplify
//!
//! - **Data** (`page_cache.rs`, `dirty_file.rs`, `fs/data.rs`): `write` goes to 4 KiB
//!   pages in memory; reads see them over the backing bytes, and the size includes them.
//!   `fsync`/`fdatasync` of a file write its pages to the backing file and fsync it.
//!   `close` persists nothing; `sync_file_range` is not a FUSE request and persists
//!   nothing (that is how sled 0.34's `flush()` fails to be durable); `O_SYNC`/`O_DSYNC`
//!   writes are synced before they return.
//! - **Power cut**: `crash` drops every pending page of every file; `crash-torn` first
//!   writes each pending page with probability ½ (seeded by `--seed`, same seed and same
//!   history give the same survivors), so a file may come back with holes and with a
//!   size set by the last page that made it. A page is never torn inside; real drives
//!   can tear at 512-byte sectors.
//! - **Metadata** (`fs/tree.rs`): create, mkdir, unlink, rename, link, symlink, chmod and
//!   truncate act on the backing directory at once, as if journaled; a real filesystem
//!   can lose a rename or create not followed by a directory fsync, this one does not.
//!   A file created and written without fsync comes back empty after a cut.
//! - **Memory** (`page_cache.rs`): above `--max-pending-bytes`, the oldest pages are
//!   written back unsynced (as kernel writeback does) and then survive a cut; counted in
//!   `stats` as `written_back_pages`.
//! - **Kernel caches** (`fs/mod.rs`): files are opened with direct I/O and attributes
//!   cached for zero seconds, so nothing the kernel holds can outlive a cut. Shared
//!   writable mmap is refused by the kernel; sled does not mmap.
//!
//! # Layout
//!
//! - `mount.rs`: mounting, the threads, signals, clean shutdown.
//! - `control.rs`: the control socket protocol, server and client.
//! - `page_cache.rs`: every file's pending pages, fsync, write-back, power cuts.
//! - `dirty_file.rs`: one file's pending pages over its backing file.
//! - `fs/`: the FUSE filesystem (data, names, inode numbers, handles, attributes).
//! - `rng.rs`: the seeded coin of torn cuts.

#![forbid(unsafe_code)]

mod control;
mod dirty_file;
mod fs;
mod mount;
mod page_cache;
mod rng;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A FUSE filesystem that keeps unsynced writes in memory and drops them on a simulated
/// power cut.
#[derive(Debug, Parser)]
#[command(
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,
    /// Directory holding the durable bytes: what survives a power cut.
    #[arg(long, required = true)]
    backing: Option<PathBuf>,
    /// Empty directory to mount the filesystem on.
    #[arg(long, required = true)]
    mount: Option<PathBuf>,
    /// Path of the control socket (created; a stale socket there is replaced).
    #[arg(long, required = true)]
    control: Option<PathBuf>,
    /// Seed of the coins `crash-torn` flips.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Memory pending writes may hold before the oldest are written back (unsynced);
    /// bytes, or with a K/M/G (KiB/MiB/GiB) suffix.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    max_pending_bytes: u64,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Send one command to a running instance's control socket and print the reply.
    Ctl {
        /// The control socket.
        socket: PathBuf,
        /// crash | crash-torn | checkpoint | stats | unmount
        command: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Tool::Ctl { socket, command }) = cli.command {
        return match control::request(&socket, &command) {
            Ok(reply) => {
                println!("{reply}");
                if reply.starts_with("ok") {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(err) => {
                eprintln!("sonraft-lazyfs ctl: {err}");
                ExitCode::from(2)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (Some(backing), Some(mount), Some(control)) = (cli.backing, cli.mount, cli.control) else {
        eprintln!("sonraft-lazyfs: --backing, --mount and --control are required");
        return ExitCode::from(2);
    };
    let options = mount::MountOptions {
        backing,
        mount,
        control,
        seed: cli.seed,
        max_pending_bytes: cli.max_pending_bytes,
        threads: cli.threads,
    };
    match mount::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `1048576`, `64K`, `512M`, `512MiB`, `1G`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
    }

    #[test]
    fn a_size_with_an_unknown_unit_is_refused() {
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("M").is_err());
    }
}
