//! Mounting, serving, and shutting down.
//!
//! Order matters for the campaign: the control socket is bound only once the FUSE
//! session has completed its handshake with the kernel, so "the control socket accepts
//! connections" means "the mount is live". On SIGTERM, SIGINT or `unmount` the filesystem
//! is unmounted first (lazily, if something still has files open), then the pending
//! pages are written back and fsynced, like a clean shutdown of a real machine; a second
//! signal exits at once, losing them, like pulling the plug.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, bail};
use fuser::{Config, MountOption, Session, SessionUnmounter};
use nix::sys::signal::{SigSet, Signal};

use crate::control::{ControlServer, UnmountRequest};
use crate::fs::{LazyFs, lock};
use crate::page_cache::PageCache;

/// What `sonraft-lazyfs --backing … --mount … --control …` was asked to do.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Directory holding the durable bytes ("the disk").
    pub backing: PathBuf,
    /// Empty directory to mount on.
    pub mount: PathBuf,
    /// Path of the control socket.
    pub control: PathBuf,
    /// Seed of the coins a torn power cut flips.
    pub seed: u64,
    /// Cap on memory held by pending pages.
    pub max_pending_bytes: u64,
    /// FUSE worker threads.
    pub threads: usize,
}

/// Why the main thread woke up.
enum Event {
    Signal(Signal),
    Unmount(UnmountRequest),
    /// The FUSE session ended: after our unmount, or someone ran `umount` on the mount.
    SessionEnded(std::io::Result<()>),
}

/// Mounts, serves until told to stop, and shuts down cleanly.
pub fn run(options: &MountOptions) -> anyhow::Result<()> {
    // Block the signals before any thread exists, so every thread inherits the mask and
    // only the signal thread receives them (via sigwait, no handler needed).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking SIGTERM/SIGINT")?;

    let backing = options
        .backing
        .canonicalize()
        .with_context(|| format!("backing directory {}", options.backing.display()))?;
    if !backing.is_dir() {
        bail!("backing path {} is not a directory", backing.display());
    }
    let cache = Arc::new(Mutex::new(PageCache::new(
        options.max_pending_bytes,
        options.seed,
    )));
    let fs = LazyFs::new(backing.clone(), Arc::clone(&cache))
        .with_context(|| format!("backing directory {}", backing.display()))?;

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sonraft-lazyfs".to_owned()),
        MountOption::Subtype("sonraft-lazyfs".to_owned()),
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    let mut session = Session::new(fs, &options.mount, &config)
        .with_context(|| format!("mounting on {}", options.mount.display()))?;
    let mut unmounter = session.unmount_callable();

    let (events_tx, events) = mpsc::channel();
    let session_done = events_tx.clone();
    thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let result = session.run();
            let _ = session_done.send(Event::SessionEnded(result));
        })
        .context("starting the FUSE session thread")?;
    let signalled = events_tx.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = signals.wait() {
                if signalled.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;

    let server = match ControlServer::bind(&options.control, Arc::clone(&cache)) {
        Ok(server) => server,
        Err(err) => {
            let _ = unmounter.unmount();
            return Err(err).context("binding the control socket");
        }
    };
    let unmount_asked = events_tx;
    thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            if let Some(request) = server.serve() {
                let _ = unmount_asked.send(Event::Unmount(request));
            }
        })
        .context("starting the control thread")?;
    tracing::info!(
        backing = %backing.display(),
        mount = %options.mount.display(),
        control = %options.control.display(),
        seed = options.seed,
        max_pending_bytes = options.max_pending_bytes,
        "mounted"
    );

    let mut requester = None;
    let session_result = match events.recv() {
        Ok(Event::SessionEnded(result)) => {
            tracing::warn!("the mount went away without an unmount request");
            result
        }
        Ok(Event::Signal(signal)) => {
            tracing::info!(?signal, "unmounting");
            unmount(&mut unmounter, options)?;
            wait_for_session(&events)
        }
        Ok(Event::Unmount(request)) => {
            tracing::info!("unmount requested");
            requester = Some(request);
            unmount(&mut unmounter, options)?;
            wait_for_session(&events)
        }
        Err(_) => Ok(()),
    };

    let written = write_back(&cache);
    let _ = std::fs::remove_file(&options.control);
    match (&written, requester) {
        (Ok(pages), Some(request)) => {
            request.answer(&format!("ok unmounted written_back_pages={pages}"))
        }
        (Err(err), Some(request)) => {
            request.answer(&format!("err unmounted, write-back failed: {err}"))
        }
        (_, None) => {}
    }
    session_result.context("FUSE session")?;
    let pages = written.context("writing pending pages back at unmount")?;
    tracing::info!(written_back_pages = pages, "unmounted");
    Ok(())
}

/// Unmounts; if files are still open (EBUSY), detaches lazily: the mount disappears from
/// the namespace now and the session ends when the last file is closed.
fn unmount(unmounter: &mut SessionUnmounter, options: &MountOptions) -> anyhow::Result<()> {
    if let Err(err) = unmounter.unmount() {
        tracing::warn!(%err, "unmount failed; detaching lazily");
        let mount = options.mount.canonicalize().context("mount point")?;
        nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("lazy unmount of {}", mount.display()))?;
    }
    Ok(())
}

/// Waits for the FUSE session to end; a second signal meanwhile exits at once.
fn wait_for_session(events: &mpsc::Receiver<Event>) -> std::io::Result<()> {
    loop {
        match events.recv() {
            Ok(Event::SessionEnded(result)) => return result,
            Ok(Event::Signal(signal)) => {
                tracing::warn!(
                    ?signal,
                    "second signal: exiting without writing pending pages back"
                );
                std::process::exit(1);
            }
            Ok(Event::Unmount(request)) => request.answer("err already unmounting"),
            Err(_) => return Ok(()),
        }
    }
}

/// Writes every pending page back and fsyncs the files, as a clean shutdown would.
fn write_back(cache: &Mutex<PageCache>) -> std::io::Result<usize> {
    let (pages, files) = {
        let mut cache = lock(cache);
        let files = cache.backing_files();
        (cache.checkpoint()?, files)
    };
    for file in files {
        file.sync_all()?;
    }
    Ok(pages)
}
