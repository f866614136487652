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
pub const DATA_FORMAT: u32 = 1;
/// Format of one stored log entry value (its first byte).
pub const LOG_ENTRY_FORMAT: u8 = 1;

const MARKER: &str = "FORMAT";
const PREFIX: &str = "sonraft data format ";

/// Creates the marker in a new or empty directory, or checks it in an existing one.
pub fn check_or_create(dir: &Path) -> Result<(), OpenError> {
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
            Ok(())
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
            let tmp = dir.join("FORMAT.tmp");
            let mut f = fs::File::create(&tmp).map_err(io("cannot write the format marker"))?;
            f.write_all(format!("{PREFIX}{DATA_FORMAT}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io("cannot write the format marker"))?;
            fs::rename(&tmp, &marker).map_err(io("cannot write the format marker"))?;
            sync_dir(dir).map_err(io("cannot sync the data directory"))?;
            Ok(())
        }
        Err(e) => Err(io("cannot read the format marker")(e)),
    }
}
