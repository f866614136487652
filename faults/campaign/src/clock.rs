//! Each node's wall clock, jumpable at will with libfaketime.
//!
//! Every node runs with libfaketime preloaded and reads its offset from its own file
//! (`FAKETIME_TIMESTAMP_FILE`), re-read on every call (`FAKETIME_NO_CACHE=1`), so writing the
//! file moves that node's wall clock at once. `FAKETIME_DONT_FAKE_MONOTONIC=1` leaves
//! `CLOCK_MONOTONIC` alone: Raft's timers (tokio `Instant`s) keep running normally, only
//! what reads `SystemTime` (log time, proposal stamps, HTTP dates) jumps. The campaign checks
//! both halves at start: [`probe`] under the same environment must see the offset in
//! `SystemTime` and not in `Instant`, and a node's HTTP `Date` header must follow a jump.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where Debian and others install the preload library.
const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];

/// The installed libfaketime, if any.
pub fn libfaketime() -> Option<PathBuf> {
    LIBFAKETIME.iter().map(PathBuf::from).find(|p| p.exists())
}

/// One node's clock offset file.
#[derive(Debug)]
pub struct Clock {
    file: PathBuf,
    library: PathBuf,
    offset_secs: i64,
}

impl Clock {
    /// A clock at offset 0 kept in `file`.
    pub fn new(file: &Path, library: &Path) -> std::io::Result<Clock> {
        let clock = Clock {
            file: file.to_path_buf(),
            library: library.to_path_buf(),
            offset_secs: 0,
        };
        clock.write(0)?;
        Ok(clock)
    }

    fn write(&self, secs: i64) -> std::io::Result<()> {
        // Written aside and renamed, so that a node never reads half a line.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{secs:+}\n"))?;
        std::fs::rename(&tmp, &self.file)
    }

    /// Moves the wall clock to `secs` away from the real one.
    pub fn set_offset(&mut self, secs: i64) -> std::io::Result<()> {
        self.write(secs)?;
        self.offset_secs = secs;
        Ok(())
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset_secs
    }

    /// The environment a process needs to run on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.library.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }
}

/// What `sonraft-campaign probe-clock` prints: the wall clock and the monotonic clock as
/// this process sees them, measured over a short sleep.
pub fn probe() -> String {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mono = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let elapsed_ms = mono.elapsed().as_millis();
    serde_json::json!({"wall_secs": wall, "monotonic_elapsed_ms": elapsed_ms}).to_string()
}

/// Seconds since the Unix epoch now, on the campaign's (real) clock.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_to_epoch_seconds() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
