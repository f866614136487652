//! Snapshot files: how they are laid out, written durably, found and verified.
//!
//! ```text
//! magic "SRSNAP\0\0" | format u16 BE | bincode SnapshotMeta | bincode SnapshotBody | crc32 u32 BE
//! ```
//!
//! | format | since | body |
//! | --- | --- | --- |
//! | 1 | 0.1.0 | image, history |
//! | 2 | 0.2.0 | image, history, the import staged in parts, if any |
//! | 3 | 0.3.0 | image, history, staged import, the SON controls and pending proposals |
//! | 4 | 0.3.0 | image, history, staged import, SON controls, the SON functions' tuning |
//! | 5 | 0.3.0 | as format 4; values may name the `outage_compensation` function |
//! | 6 | 0.3.0 | as format 5; values may name the `coverage_capacity` and `anr_add` functions |
//! | 7 | 0.3.0 | as format 6, then who controls the cell sites whose control moved |
//! | 8 | 0.3.0 | as format 7, then the tuning's outage, compensation and energy-saving sections |
//!
//! A snapshot is written in the oldest format that holds its body: format 3 only once the
//! cluster has SON controls (set by command format 4, which every voter understands), format 4
//! only once it has a tuning (command format 5), format 5 only once something names outage
//! compensation (command format 6), format 6 only once something names coverage and capacity
//! optimisation or ANR adding relations (command format 7), format 7 only once control of a cell
//! site moved (command format 8), format 8 only once the tuning sets the outage, compensation or
//! energy-saving sections (command format 9), so a node of the previous release can still install the
//! snapshots of an upgraded one until then — and refuses, by number, one it could not decode.
//!
//! The CRC covers everything between the magic and itself. A file is written as
//! `.<name>.part`, synced, renamed to `<index>-<term>-<id>.snap` and the directory synced, so a
//! crash leaves either the old snapshot or the complete new one. Only the newest snapshot is
//! kept.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sonraft_raft::changeset::Function;
use sonraft_raft::model::SharedIds;
use sonraft_raft::model::image::{HistoryRecord, NetworkImage};
use sonraft_raft::son::{AvailabilityTuning, SonState, Tuning, TuningV1};
use sonraft_raft::{SnapshotMeta, codec};

use crate::durable::sync_dir;
use crate::error::Damaged;

/// The newest snapshot format this build writes (it reads all since format 1).
pub const SNAPSHOT_FORMAT: u16 = 8;
/// The oldest snapshot format this build reads.
pub const OLDEST_SNAPSHOT_FORMAT: u16 = 1;
const MAGIC: &[u8; 8] = b"SRSNAP\0\0";
const SUFFIX: &str = ".snap";

/// Everything a snapshot restores besides its metadata.
///
/// Encoded (format 8) as the image, the history, `image.staged` (an import waiting for its last
/// part), `image.son` (the SON controls), the part of `image.son.tuning` older formats carry
/// ([`TuningV1`]), `image.control` and the tuning's sections of command format 9
/// ([`AvailabilityTuning`]), which the image's and the SON state's own encodings leave out.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotBody {
    pub image: NetworkImage,
    /// In log order, as the state machine captures them: an install stores each run of
    /// records with the same log index as one value.
    pub history: Vec<HistoryRecord>,
}

impl SnapshotBody {
    /// The oldest format that holds this body.
    pub fn format(&self) -> u16 {
        if self.image.son.tuning.needs_format_9() {
            8
        } else if !self.image.control.is_empty() {
            7
        } else if names_function(self, Function::CoverageCapacity)
            || names_function(self, Function::AnrAdd)
        {
            6
        } else if names_function(self, Function::OutageCompensation) {
            5
        } else if self.image.son.tuning.v1() != TuningV1::default() {
            4
        } else if self.image.son == SonState::default() {
            2
        } else {
            3
        }
    }

    /// Encodes the body in [`SnapshotBody::format`]. Each format is the one before it with one
    /// more value at the end (formats 5 and 6 only name more functions), and bincode writes a
    /// tuple as its values one after another, so writing them one by one gives the bytes every
    /// release wrote (the golden fixtures hold them).
    pub fn encode_into<W: Write>(&self, w: &mut W) -> Result<(), codec::CodecError> {
        let format = self.format();
        let image = &self.image;
        codec::encode_into(image, w)?;
        codec::encode_into(&self.history, w)?;
        if format >= 2 {
            codec::encode_into(&image.staged, w)?;
        }
        if format >= 3 {
            codec::encode_into(&image.son, w)?;
        }
        if format >= 4 {
            codec::encode_into(&image.son.tuning.v1(), w)?;
        }
        if format >= 7 {
            codec::encode_into(&image.control, w)?;
        }
        if format >= 8 {
            codec::encode_into(&image.son.tuning.availability(), w)?;
        }
        Ok(())
    }

    /// Decodes a body of snapshot `format`, read as [`SnapshotBody::encode_into`] writes it:
    /// what an older format lacks keeps its default.
    ///
    /// Cell ids are shared as they are decoded ([`SharedIds::decoding`]): each is held once.
    fn decode_from<R: Read>(format: u16, r: &mut R) -> Result<SnapshotBody, codec::CodecError> {
        SharedIds::decoding(|| Self::decode_shared(format, r))
    }

    fn decode_shared<R: Read>(format: u16, r: &mut R) -> Result<SnapshotBody, codec::CodecError> {
        let mut image: NetworkImage = codec::decode_from(r)?;
        let history = codec::decode_from(r)?;
        if format >= 2 {
            image.staged = codec::decode_from(r)?;
        }
        if format >= 3 {
            image.son = codec::decode_from(r)?;
        }
        if format >= 4 {
            let v1: TuningV1 = codec::decode_from(r)?;
            image.son.tuning = Tuning::from(v1);
        }
        if format >= 7 {
            image.control = codec::decode_from(r)?;
        }
        if format >= 8 {
            let availability: AvailabilityTuning = codec::decode_from(r)?;
            image.son.tuning = Tuning::from_parts(image.son.tuning.v1(), availability);
        }
        Ok(SnapshotBody { image, history })
    }
}

/// Whether any value of `body` names `f` (a function older formats cannot decode).
fn names_function(body: &SnapshotBody, f: Function) -> bool {
    let image = &body.image;
    let son = &image.son;
    let stamped = |stamps: &std::collections::BTreeMap<_, sonraft_raft::model::Stamp>| {
        stamps.values().any(|s| s.by == f)
    };
    body.history.iter().any(|h| h.origin.function == f)
        || image.cells.values().any(|c| stamped(&c.last_change))
        || image.relations.values().any(|r| stamped(&r.last_change))
        || son.policy.functions.contains_key(&f)
        || son
            .pending
            .values()
            .any(|p| p.change_set.origin.function == f)
        || son.trials.values().any(|t| t.function == f)
        || image.staged.as_ref().is_some_and(|s| {
            s.cells().any(|c| stamped(&c.last_change))
                || s.relations().any(|r| stamped(&r.last_change))
        })
        || son.journal.values().any(|t| t.trial.function == f)
        || son.holds.keys().any(|(_, g)| *g == f)
}

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Bytes a snapshot file is written between two syncs of its data, and the most one write
/// hands the file: what the drive takes in one request.
///
/// A log sync on the same disk queues behind whatever the drive is taking at the time. With a
/// snapshot synced every 1 MiB, each sync sent the drive a 1 MiB request, and while three nodes
/// wrote a national image's snapshot (~36 MB/s each) the change sets' p99 was 2.1–2.9x its p99
/// without: the nodes' log syncs over 2 ms went from 0.3 % to 3 % (`sonraft bench scale`). On
/// this machine's disk, log syncs beside three such writers (`fdatasync` of 4 KiB, measured
/// alone): p99 0.4–0.7 ms with none, 2.7–3.6 ms with 1 MiB pieces, 0.4–0.5 ms with 128 KiB
/// and 0.9 ms with 128 KiB unpaced.
const SYNC_EVERY: u64 = 128 << 10;

/// A file that syncs its data every [`SYNC_EVERY`] bytes written rather than only at the end.
///
/// A national image's snapshot is 434 MB. Synced once at the end, the drive took it in one go,
/// and the Raft log's own syncs on the same disk (a follower answers an append only once it is
/// synced) waited behind it: a follower answered heartbeats 0.3–1.1 s late while it wrote one,
/// and its leader counted it silent. Synced as it goes, in pieces no larger than
/// [`SYNC_EVERY`] whatever its writer's buffer, a log sync waits for at most one piece.
///
/// Paced (a background snapshot), it also writes no faster than its rate: the drive is shared
/// with the Raft log, whose syncs every write waits for.
struct SyncedAsItGoes {
    file: File,
    unsynced: u64,
    syncs: u32,
    /// Bytes a second at most, and since when; `None`: as fast as it comes.
    pace: Option<(u64, std::time::Instant)>,
    written: u64,
}

impl SyncedAsItGoes {
    fn new(file: File) -> Self {
        SyncedAsItGoes {
            file,
            unsynced: 0,
            syncs: 0,
            pace: None,
            written: 0,
        }
    }

    fn paced(file: File, bytes_per_second: u64) -> Self {
        SyncedAsItGoes {
            pace: Some((bytes_per_second.max(1), std::time::Instant::now())),
            ..SyncedAsItGoes::new(file)
        }
    }
}

/// How long a writer at `rate` bytes a second waits after `written` bytes in `elapsed`.
fn pause(written: u64, rate: u64, elapsed: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs_f64(written as f64 / rate as f64).saturating_sub(elapsed)
}

impl Write for SyncedAsItGoes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = usize::try_from(SYNC_EVERY - self.unsynced).unwrap_or(usize::MAX);
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.unsynced += n as u64;
        self.written += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
            self.syncs += 1;
            if let Some((rate, since)) = self.pace {
                std::thread::sleep(pause(self.written, rate, since.elapsed()));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Bytes a superseded snapshot file is cut by at a time as it goes, and the pause after each
/// cut: ~40 MB/s, 11 s for a national image's 434 MB.
const CUT: u64 = 4 << 20;
const CUT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Removes a superseded snapshot file [`CUT`] bytes at a time, on a thread of its own.
///
/// Unlinked at once, a national image's 434 MB snapshot was freed in one journal commit, and
/// on a disk mounted with `discard` (as this machine's) the drive then took ~140 discards at
/// once: queue depth 6, 1.5 s of discard time in a second, every node's log syncs behind them,
/// at the end of every snapshot of all three nodes (`sonraft bench scale`). Cut down as it
/// goes, each commit frees a few megabytes. (RocksDB deletes its files at a rate for the same
/// reason.) The file is first set aside under a name a start removes, so a crash part way
/// leaves nothing behind.
fn remove_gradually(path: &Path) {
    let (part, f) = match set_aside(path) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "old snapshot not removed");
            return;
        }
    };
    cut_away(part, f);
}

/// Cuts the set-aside file `part` (open as `f`) down to nothing on a thread of its own, once no
/// other descriptor has it open, then unlinks it.
fn cut_away(part: PathBuf, f: File) {
    let left = part.clone();
    let spawned = std::thread::Builder::new()
        .name("sonraft-remove".into())
        .spawn(move || {
            // A follower still being sent this snapshot reads it through a descriptor of its
            // own: cut, it would get a short file. Renamed, nobody can open it anew, so once
            // those descriptors are closed it is ours alone. Unlinked, a file lives on until
            // they close: where that cannot be told (no /proc), it goes so, at once.
            let alone = loop {
                match opened_elsewhere(&f) {
                    Ok(true) => std::thread::sleep(READER_POLL),
                    Ok(false) => break true,
                    Err(_) => break false,
                }
            };
            let cut = if alone { cut_down(&f) } else { Ok(()) };
            if let Err(e) = cut.and_then(|()| fs::remove_file(&part)) {
                tracing::warn!(file = %part.display(), error = %e, "old snapshot not removed; the next start will");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to remove the old snapshot gradually; removing it at once");
        if let Err(e) = fs::remove_file(&left) {
            tracing::warn!(file = %left.display(), error = %e, "old snapshot not removed; the next start will");
        }
    }
}

/// Renames a snapshot file to one [`SnapshotDir::open`] removes (`.NAME.gone.part`), and opens
/// it to be cut down.
fn set_aside(path: &Path) -> io::Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("a snapshot path without a file name"))?;
    let part = path.with_file_name(format!(".{name}.gone.part"));
    fs::rename(path, &part)?;
    let f = fs::OpenOptions::new().write(true).open(&part)?;
    Ok((part, f))
}

/// How often the removal looks again whether a file it would cut is still being read.
const READER_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a descriptor of this process other than `f` has `f`'s file open (Linux's
/// `/proc/self/fd`; an error where that cannot be read).
fn opened_elsewhere(f: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let me = f.metadata()?;
    let mut open = 0;
    for entry in fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        // Follows the descriptor's link to what it has open (a socket, a pipe, a file).
        if let Ok(m) = fs::metadata(entry.path())
            && m.dev() == me.dev()
            && m.ino() == me.ino()
        {
            open += 1;
        }
    }
    Ok(open > 1)
}

/// Cuts `f` down to nothing, [`CUT`] bytes every [`CUT_PAUSE`].
fn cut_down(f: &File) -> io::Result<()> {
    while cut_once(f)? {
        std::thread::sleep(CUT_PAUSE);
    }
    Ok(())
}

/// Cuts [`CUT`] bytes off the end of `f`; false once it is empty.
fn cut_once(f: &File) -> io::Result<bool> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    f.set_len(len.saturating_sub(CUT))?;
    Ok(true)
}

/// Writes a complete snapshot to `w`.
pub fn encode_snapshot<W: Write>(w: W, meta: &SnapshotMeta, body: &SnapshotBody) -> io::Result<W> {
    let mut w = w;
    w.write_all(MAGIC)?;
    let mut cw = CrcWriter {
        inner: w,
        crc: crc32fast::Hasher::new(),
    };
    cw.write_all(&body.format().to_be_bytes())?;
    codec::encode_into(meta, &mut cw).map_err(io::Error::other)?;
    body.encode_into(&mut cw).map_err(io::Error::other)?;
    let crc = cw.crc.finalize();
    let mut w = cw.inner;
    w.write_all(&crc.to_be_bytes())?;
    Ok(w)
}

fn read_header<R: Read>(r: &mut R) -> Result<(), Damaged> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|e| Damaged::new("snapshot header", e))?;
    if &magic != MAGIC {
        return Err(Damaged::new(
            "snapshot header",
            "not a sonraft snapshot (bad magic)",
        ));
    }
    Ok(())
}

fn check_format<R: Read>(r: &mut R) -> Result<u16, Damaged> {
    let mut f = [0u8; 2];
    r.read_exact(&mut f)
        .map_err(|e| Damaged::new("snapshot header", e))?;
    let format = u16::from_be_bytes(f);
    if !(OLDEST_SNAPSHOT_FORMAT..=SNAPSHOT_FORMAT).contains(&format) {
        return Err(Damaged::new(
            "snapshot header",
            format!(
                "snapshot format {format}; this build reads formats {OLDEST_SNAPSHOT_FORMAT} to {SNAPSHOT_FORMAT} (a newer release wrote it?)"
            ),
        ));
    }
    Ok(format)
}

/// Checks a snapshot's bytes as they come (a download), without decoding them: its magic and
/// its trailing CRC, so that a copy cut short or damaged on the way is known before it is kept.
#[derive(Default)]
pub struct StreamCheck {
    magic: Vec<u8>,
    crc: crc32fast::Hasher,
    /// The last bytes seen, not yet hashed: the trailing CRC is among them.
    tail: Vec<u8>,
}

impl StreamCheck {
    pub fn update(&mut self, mut data: &[u8]) {
        let want = MAGIC.len() - self.magic.len();
        let (magic, rest) = data.split_at(want.min(data.len()));
        self.magic.extend_from_slice(magic);
        data = rest;
        self.tail.extend_from_slice(data);
        if self.tail.len() > 4 {
            let n = self.tail.len() - 4;
            self.crc.update(&self.tail[..n]);
            self.tail.drain(..n);
        }
    }

    /// Whether what came is a whole snapshot whose CRC holds.
    pub fn finish(self) -> Result<(), Damaged> {
        if self.magic.as_slice() != MAGIC.as_slice() {
            return Err(Damaged::new(
                "snapshot header",
                "not a sonraft snapshot (bad magic)",
            ));
        }
        let Ok(trailer) = <[u8; 4]>::try_from(self.tail.as_slice()) else {
            return Err(Damaged::new("snapshot", "cut short before its CRC"));
        };
        let (want, got) = (u32::from_be_bytes(trailer), self.crc.finalize());
        if want != got {
            return Err(Damaged::new(
                "snapshot",
                format!("CRC {got:08x} where the file says {want:08x}: cut short or damaged"),
            ));
        }
        Ok(())
    }
}

/// Reads and verifies a complete snapshot.
pub fn decode_snapshot<R: Read>(r: R) -> Result<(SnapshotMeta, SnapshotBody), Damaged> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    read_header(&mut r)?;
    let mut cr = CrcReader {
        inner: r,
        crc: crc32fast::Hasher::new(),
    };
    let format = check_format(&mut cr)?;
    let meta: SnapshotMeta =
        codec::decode_from(&mut cr).map_err(|e| Damaged::new("snapshot metadata", e))?;
    let body =
        SnapshotBody::decode_from(format, &mut cr).map_err(|e| Damaged::new("snapshot body", e))?;
    let computed = cr.crc.finalize();
    let mut r = cr.inner;
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored)
        .map_err(|e| Damaged::new("snapshot checksum", e))?;
    if u32::from_be_bytes(stored) != computed {
        return Err(Damaged::new(
            "snapshot checksum",
            "CRC mismatch: the file is damaged",
        ));
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(|e| Damaged::new("snapshot", e))? != 0 {
        return Err(Damaged::new(
            "snapshot",
            "unexpected bytes after the checksum",
        ));
    }
    Ok((meta, body))
}

/// Reads only the metadata of a snapshot file (no checksum check).
pub fn read_meta(path: &Path) -> Result<SnapshotMeta, Damaged> {
    let f = File::open(path).map_err(|e| Damaged::new(path.display().to_string(), e))?;
    let mut r = BufReader::new(f);
    read_header(&mut r)?;
    check_format(&mut r)?;
    codec::decode_from(&mut r).map_err(|e| Damaged::new("snapshot metadata", e))
}

/// The snapshot directory and the newest snapshot in it.
pub struct SnapshotDir {
    dir: PathBuf,
    current: Mutex<Option<(SnapshotMeta, PathBuf)>>,
}

fn file_name(meta: &SnapshotMeta) -> String {
    let (index, term) = meta
        .last_log_id
        .map_or((0, 0), |l| (l.index, l.leader_id.term));
    let id: String = meta
        .snapshot_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{index:020}-{term:020}-{id}{SUFFIX}")
}

impl SnapshotDir {
    /// Opens (creating) the directory, removes unfinished files, and finds the newest snapshot
    /// whose metadata reads. Damaged older files are left for the operator, with a warning.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut best: Option<(SnapshotMeta, PathBuf)> = None;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.ends_with(".gone.part") {
                // An old snapshot a stop cut short: cut down the rest as gradually.
                if let Ok(f) = fs::OpenOptions::new().write(true).open(&path) {
                    cut_away(path, f);
                }
                continue;
            }
            if name.ends_with(".part") {
                // One being written when the node stopped. (A store opened again in this
                // process may race a removal still running.)
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue;
            }
            match read_meta(&path) {
                Ok(meta) => {
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| b.last_log_id < meta.last_log_id)
                    {
                        best = Some((meta, path));
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable snapshot file")
                }
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
            current: Mutex::new(best),
        })
    }

    /// The current snapshot, opened while it is current: a newer one published meanwhile sets
    /// this one aside only once its file is open here (see [`remove_gradually`]).
    pub fn open_current(&self) -> io::Result<Option<(SnapshotMeta, File)>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_ref() {
            Some((meta, path)) => Ok(Some((meta.clone(), File::open(path)?))),
            None => Ok(None),
        }
    }

    pub fn current(&self) -> Option<(SnapshotMeta, PathBuf)> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes a new snapshot durably and makes it current (unless a newer one is); with
    /// `pace`, at most that many bytes a second. Returns its path and the file opened to read.
    pub fn write(
        &self,
        meta: &SnapshotMeta,
        body: &SnapshotBody,
        pace: Option<u64>,
    ) -> io::Result<(PathBuf, File)> {
        let name = file_name(meta);
        let part = self.dir.join(format!(".{name}.part"));
        let f = File::create(&part)?;
        let f = match pace {
            Some(rate) => SyncedAsItGoes::paced(f, rate),
            None => SyncedAsItGoes::new(f),
        };
        let w = encode_snapshot(BufWriter::with_capacity(1 << 20, f), meta, body)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.file.sync_all()?;
        // Opened before it is published: an install published meanwhile may set it aside.
        let reader = File::open(&part)?;
        Ok((self.publish(&part, &name, meta)?, reader))
    }

    /// Copies a received snapshot from `src` durably, verifies it, and makes it current.
    /// Returns the verified contents.
    pub fn receive(
        &self,
        src: &mut File,
        meta: &SnapshotMeta,
    ) -> Result<(PathBuf, SnapshotBody), Damaged> {
        let name = file_name(meta);
        let part = self.dir.join(format!(".{name}.part"));
        let fail = |e: io::Error| Damaged::new("received snapshot", e);
        src.seek(SeekFrom::Start(0)).map_err(fail)?;
        let mut dst = SyncedAsItGoes::new(File::create(&part).map_err(fail)?);
        io::copy(src, &mut dst).map_err(fail)?;
        dst.file.sync_all().map_err(fail)?;
        let checked = File::open(&part).map_err(fail).and_then(decode_snapshot);
        let (found, body) = match checked {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&part);
                return Err(e);
            }
        };
        if found.last_log_id != meta.last_log_id || found.last_membership != meta.last_membership {
            let _ = fs::remove_file(&part);
            return Err(Damaged::new(
                "received snapshot",
                format!("its metadata {found:?} differs from the announced {meta:?}"),
            ));
        }
        let path = self.publish(&part, &name, meta).map_err(fail)?;
        Ok((path, body))
    }

    /// Makes the written `part` the snapshot `name`, and current unless the current one is
    /// newer; the one that is not current goes (gradually).
    ///
    /// A newer one can be current already: a snapshot built in the background is written for
    /// ~20 s (paced), and an install from the leader may publish a later one meanwhile. Made
    /// current, the older would be served to followers whose log the leader purged past it, and
    /// restored after a torn checkpoint with the entries between gone.
    fn publish(&self, part: &Path, name: &str, meta: &SnapshotMeta) -> io::Result<PathBuf> {
        let path = self.dir.join(name);
        fs::rename(part, &path)?;
        sync_dir(&self.dir)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let newer = current
            .as_ref()
            .filter(|(m, _)| m.last_log_id > meta.last_log_id)
            .map(|(m, _)| m.last_log_id);
        let gone = match newer {
            Some(newer) => {
                tracing::info!(
                    snapshot = ?meta.last_log_id,
                    current = ?newer,
                    "a snapshot finished after a newer one; keeping the newer"
                );
                Some(path.clone())
            }
            None => current
                .replace((meta.clone(), path.clone()))
                .map(|(_, old)| old)
                .filter(|old| *old != path),
        };
        drop(current);
        if let Some(gone) = gone {
            remove_gradually(&gone);
        }
        Ok(path)
    }

    /// A fresh anonymous file in the snapshot directory to receive chunks into.
    pub fn receiving_file(&self) -> io::Result<File> {
        tempfile::tempfile_in(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_snapshot_file_still_being_read_is_not_cut_until_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("00000000000000000007-00000000000000000001-x.snap");
        fs::write(&path, vec![9u8; 100_000]).unwrap();
        // A follower being sent it.
        let mut reader = File::open(&path).unwrap();
        let (_, f) = set_aside(&path).unwrap();
        assert!(opened_elsewhere(&f).unwrap(), "read elsewhere");
        let mut sent = Vec::new();
        reader.read_to_end(&mut sent).unwrap();
        assert_eq!(sent.len(), 100_000, "the reader gets it whole");
        drop(reader);
        assert!(!opened_elsewhere(&f).unwrap(), "only the removal has it");
    }

    #[test]
    fn a_paced_writer_waits_until_its_rate_allows_what_it_wrote() {
        let ms = std::time::Duration::from_millis;
        let mib = 1 << 20;
        // 20 MiB/s: 2 MiB take 100 ms.
        assert_eq!(pause(2 * mib, 20 * mib, ms(40)), ms(60));
        assert_eq!(pause(2 * mib, 20 * mib, ms(100)), ms(0));
        assert_eq!(pause(2 * mib, 20 * mib, ms(900)), ms(0), "late: no wait");
    }

    #[test]
    fn an_old_snapshot_file_goes_a_few_megabytes_at_a_time_and_a_restart_finishes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("00000000000000000007-00000000000000000001-x.snap");
        let f = File::create(&path).unwrap();
        f.set_len(3 * CUT + 5).unwrap();
        drop(f);
        let (part, f) = set_aside(&path).unwrap();
        assert!(!path.exists(), "no longer a snapshot under its name");
        assert!(
            part.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(".part")
        );
        let mut lengths = Vec::new();
        while cut_once(&f).unwrap() {
            lengths.push(f.metadata().unwrap().len());
        }
        assert_eq!(lengths, [2 * CUT + 5, CUT + 5, 5, 0]);
        // Cut short by a stop: the next start cuts down what is left.
        drop(f);
        f_len(&part, 5);
        SnapshotDir::open(dir.path()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_dir(dir.path()).unwrap().count() > 0 {
            assert!(std::time::Instant::now() < deadline, "left behind");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn f_len(path: &Path, len: u64) {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    #[test]
    fn a_snapshot_finished_after_a_newer_one_does_not_become_current() {
        use sonraft_raft::{LogId, StoredMembership};
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::open(dir.path()).unwrap();
        let meta = |index: u64| SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        };
        let body = SnapshotBody {
            image: NetworkImage::default(),
            history: Vec::new(),
        };
        // An install at 200 published while a build captured at 100 was still being written.
        let (newer, _) = snapshots.write(&meta(200), &body, None).unwrap();
        let (older, mut reader) = snapshots.write(&meta(100), &body, None).unwrap();
        assert_eq!(snapshots.current().unwrap(), (meta(200), newer.clone()));
        let (m, _) = snapshots.open_current().unwrap().unwrap();
        assert_eq!(m, meta(200));
        // The build's own handle still reads its file whole, while it goes.
        assert!(!older.exists(), "set aside");
        let (read_meta, _) = decode_snapshot(&mut reader).unwrap();
        assert_eq!(read_meta, meta(100));
        // A restart finds the newer one.
        drop(reader);
        let again = SnapshotDir::open(dir.path()).unwrap();
        assert_eq!(again.current().unwrap().0, meta(200));
    }

    #[test]
    fn a_large_snapshot_file_goes_to_the_drive_in_pieces_of_128_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = SyncedAsItGoes::new(File::create(&path).unwrap());
        // As the encoder's buffer hands them over: 1 MiB at a time.
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for _ in 0..20 {
            f.write_all(&chunk).unwrap();
        }
        assert_eq!(f.syncs, 20 * 8, "20 MiB: synced after every 128 KiB");
        assert_eq!(f.unsynced, 0);
        f.write_all(&chunk[..1000]).unwrap();
        assert_eq!(
            (f.syncs, f.unsynced),
            (160, 1000),
            "a tail waits for the end"
        );
        f.file.sync_all().unwrap();
        let mut want = [chunk.as_slice(); 20].concat();
        want.extend_from_slice(&chunk[..1000]);
        assert_eq!(fs::read(&path).unwrap(), want);
    }
}
