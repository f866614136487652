//! The data directory's format marker and layout.
//!
//! ```text
//! <data dir>/FORMAT       "sonraft data format <n>\n": checked before anything else is opened
//! <data dir>/sled/        the sled database: trees `log`, `raft` and `sm`
//! <data dir>/snapshots/   snapshot files (see `snapshot.rs`)
//! ```
//!
//! The marker lives outside sled so that a directory written by a newer release (possibly
//! with a newer sled) is refused before sled touches it.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::durable::sync_dir;
use crate::error::OpenError;

/// The data format this build writes and reads.
///
/// | format | since | layout |
/// | --- | --- | --- |
/// | 1 | 0.1.0 | one history record per key (`h/<index>[<position>]`) |
/// | 2 | 0.2.0 | one history value per log entry (`g/<index>`); format-1 directories are migrated when opened |
/// | 3 | 0.2.0 | `m/staged`, an import waiting for its last part (format-2 directories have none) |
/// | 4 | 0.3.0 | `m/son`, the SON controls and pending proposals (format-3 directories have none) |
/// | 5 | 0.3.0 | `m/tuning`, the SON functions' thresholds (format-4 directories have none) |
/// | 6 | 0.3.0 | values may name the `outage_compensation` function (format-5 directories have none), so a build that could not decode them refuses the directory by its number |
/// | 7 | 0.3.0 | values may name the `coverage_capacity` and `anr_add` functions (format-6 directories have none) |
/// | 8 | 0.3.0 | `o/<cell site>`, who controls a cell site's antennas once control moved (format-7 directories have none) |
/// | 9 | 0.3.0 | `m/tuning/availability`, the outage, compensation and energy-saving thresholds (format-8 directories have none) |
/// | 10 | 0.3.0 | `m/staged/<part>`, a staged import one value per part (was one value, `m/staged`, rewritten whole with each part) |
pub const DATA_FORMAT: u32 = 10;
/// The oldest data format this build opens (and migrates to [`DATA_FORMAT`]).
pub const OLDEST_DATA_FORMAT: u32 = 1;
/// Format of one stored log entry value (its first byte).
pub const LOG_ENTRY_FORMAT: u8 = 1;

const MARKER: &str = "FORMAT";
const PREFIX: &str = "sonraft data format ";

/// Creates the marker in a new or empty directory, or checks it in an existing one. Returns the
/// format the directory holds (older than [`DATA_FORMAT`] means the caller must migrate it and
/// then [`write_marker`]).
pub fn check_or_create(dir: &Path) -> Result<u32, OpenError> {
    let io = |what: &'static str| {
        move |source| OpenError::Io {
            what,
            dir: dir.to_path_buf(),
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io("cannot create the data directory"))?;
    let marker = dir.join(MARKER);
    match fs::read_to_string(&marker) {
        Ok(text) => {
            let found = text
                .strip_prefix(PREFIX)
                .and_then(|n| n.trim().parse::<u32>().ok())
                .ok_or_else(|| OpenError::NotSonraft {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "{MARKER} reads {:?}",
                        text.chars().take(60).collect::<String>()
                    ),
                })?;
            if found > DATA_FORMAT {
                return Err(OpenError::FormatTooNew {
                    dir: dir.to_path_buf(),
                    found,
                    supported: DATA_FORMAT,
                });
            }
            if found < OLDEST_DATA_FORMAT {
                return Err(OpenError::NotSonraft {
                    dir: dir.to_path_buf(),
                    reason: format!("{MARKER} names data format {found}, which never existed"),
                });
            }
            Ok(found)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let non_empty = fs::read_dir(dir)
                .map_err(io("cannot list the data directory"))?
                .next()
                .is_some();
            if non_empty {
                return Err(OpenError::NotSonraft {
                    dir: dir.to_path_buf(),
                    reason: format!("no {MARKER} file"),
                });
            }
            write_marker(dir, DATA_FORMAT)?;
            Ok(DATA_FORMAT)
        }
        Err(e) => Err(io("cannot read the format marker")(e)),
    }
}

/// Writes the marker for `format` atomically and durably (temporary file, fsync, rename,
/// fsync of the directory).
pub fn write_marker(dir: &Path, format: u32) -> Result<(), OpenError> {
    let io = |what: &'static str| {
        move |source| OpenError::Io {
            what,
            dir: dir.to_path_buf(),
            source,
        }
    };
    let tmp = dir.join("FORMAT.tmp");
    let mut f = fs::File::create(&tmp).map_err(io("cannot write the format marker"))?;
    f.write_all(format!("{PREFIX}{format}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("cannot write the format marker"))?;
    fs::rename(&tmp, dir.join(MARKER)).map_err(io("cannot write the format marker"))?;
    sync_dir(dir).map_err(io("cannot sync the data directory"))
}
