//! Where the slowest requests of a failover round waited, read back from the nodes' logs.
//!
//! With `sonraft-campaign failover --trace N` every client request carries an
//! `x-request-id` (`r<number>`), the nodes log at debug level for `sonraft`, and a node runs
//! each such request in a `request{id=..}` span (forwarded requests keep their id at the
//! leader). After a round the N slowest requests are printed with what the logs say about them,
//! in time order relative to the cut:
//!
//! - the request's own lines on every node (forward attempts, the leader each went to, how long
//!   each took, the answer);
//! - every node's changes of role, term and known leader, and the watchdog's forced elections;
//! - every read proof (how it proved leadership, whether the leader had committed an entry
//!   of its term, how long confirming and applying took) while the traced requests waited.
//!
//! Log lines are matched by their wall-clock time: the campaign and the nodes run on one
//! machine, and the failover bench leaves every node's clock at offset 0.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `RUST_LOG` of the nodes while tracing.
pub const NODE_LOG: &str =
    "info,openraft=error,openraft::replication=off,sled=warn,sonraft=debug,sonraft_raft=debug";

/// One traced request: its id and when it waited, relative to the cut (may be negative).
pub struct Traced {
    pub id: String,
    pub sent_ms: f64,
    pub answered_ms: f64,
}

/// Messages that are shown whenever they fall in the traced window, whatever request they
/// belong to.
const CONTEXT: [&str; 6] = [
    "this node became the leader",
    "this node stands for election",
    "following leader",
    "no leader known",
    "starting an election",
    "read proof",
];

/// Milliseconds since midnight UTC of an RFC 3339 time (`2025-01-01T08:20:55.123456Z`).
fn ms_of_day(stamp: &str) -> Option<f64> {
    let time = stamp.get(11..)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(((h * 60.0 + m) * 60.0 + s) * 1000.0)
}

/// `t` − `cut` in milliseconds, both as times of day (a round does not span midnight, but
/// the difference may wrap).
fn relative(t: f64, cut: f64) -> f64 {
    const DAY: f64 = 86_400_000.0;
    let d = t - cut;
    if d > DAY / 2.0 {
        d - DAY
    } else if d < -DAY / 2.0 {
        d + DAY
    } else {
        d
    }
}

/// The lines of the nodes' logs (`(node id, log file)`) about `traced`, and the context lines
/// of the window they waited in, as `+ms node N | message`, in time order.
pub fn lines(logs: &[(u64, PathBuf)], cut: SystemTime, traced: &[Traced]) -> Vec<String> {
    let Some(from) = traced.iter().map(|t| t.sent_ms).reduce(f64::min) else {
        return Vec::new();
    };
    let to = traced.iter().map(|t| t.answered_ms).fold(from, f64::max);
    let cut_ms = (cut
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as f64
        / 1000.0)
        % 86_400_000.0;
    let tags: Vec<String> = traced.iter().map(|t| format!("id={}", t.id)).collect();
    let mut found: Vec<(f64, String)> = Vec::new();
    for (node, path) in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            let Some((stamp, rest)) = line.split_once(' ') else {
                continue;
            };
            let Some(at) = ms_of_day(stamp).map(|t| relative(t, cut_ms)) else {
                continue;
            };
            let tagged = tags
                .iter()
                .any(|t| rest.contains(&format!("{t} ")) || rest.contains(&format!("{t}}}")));
            let context = CONTEXT.iter().any(|c| rest.contains(c));
            if tagged || (context && at >= from - 50.0 && at <= to + 10.0) {
                found.push((at, format!("{at:>+9.1} ms node {node} | {}", rest.trim())));
            }
        }
    }
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_read_as_milliseconds_of_the_day() {
        assert_eq!(ms_of_day("2025-01-01T00:00:01.500000Z"), Some(1500.0));
        assert_eq!(
            ms_of_day("2025-01-01T08:20:55.123456Z").map(|t| t.round()),
            Some(30_055_123.0)
        );
        assert_eq!(ms_of_day("garbage"), None);
    }

    #[test]
    fn times_across_midnight_stay_close() {
        assert_eq!(relative(100.0, 86_399_900.0), 200.0);
        assert_eq!(relative(86_399_900.0, 100.0), -200.0);
        assert_eq!(relative(5_000.0, 4_000.0), 1_000.0);
    }
}
