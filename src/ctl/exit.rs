//! The exit status of `sonraft ctl`, the one thing a script can branch on without parsing
//! text. Each failure says at its source which of four classes it is; `main` turns the class
//! into the status. The table below is printed by `sonraft ctl --help` and copied into the
//! README: the three must say the same.

use std::fmt;

use hyper::StatusCode;
use sonraft_client::ClientError;

/// The exit statuses, as `sonraft ctl --help` shows them.
pub const TABLE: &str = "\
Exit status:
  0  ok
  1  the cluster said no or is unhealthy: wrong token (401), a role too low (403), not found,
     no leader or quorum, `health` found a problem, `status` could not read every node, a wait
     timed out
  2  usage: a wrong or missing argument or flag, no --nodes / SONRAFT_NODES, a FILE that
     cannot be read or written, or is not JSON (a backup)
  3  the change was refused as given: a conflict (a read version is stale), rejected by the
     rules or the membership checks, or invalid (also for --dry-run)
  4  unreachable: no node answered";

/// Why a `ctl` command failed, by the exit status a script sees (0 is success, no failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: the cluster answered no, or is unhealthy.
    Refused,
    /// 2: the command line, or a file it names, is wrong; clap uses 2 for its own errors.
    Usage,
    /// 3: a change was refused as given: conflict, rejected or invalid.
    Conflict,
    /// 4: no node answered.
    Unreachable,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> i32 {
        match self {
            Exit::Refused => 1,
            Exit::Usage => 2,
            Exit::Conflict => 3,
            Exit::Unreachable => 4,
        }
    }

    /// The class of an HTTP error answer: 409 and 422 (and 400, a body the node cannot take)
    /// refuse the change as given; anything else (401, 404, 503...) is the cluster saying no.
    pub fn of_status(status: StatusCode) -> Exit {
        match status {
            StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
                Exit::Conflict
            }
            _ => Exit::Refused,
        }
    }

    /// The class of a request that got no answer: unreachable, except a token that cannot
    /// even be sent, which is a usage error.
    pub fn of_client_error(e: &ClientError) -> Exit {
        match e {
            ClientError::Request { .. } => Exit::Usage,
            ClientError::Connect { .. }
            | ClientError::Untrusted { .. }
            | ClientError::Unreachable { .. }
            | ClientError::Timeout { .. } => Exit::Unreachable,
        }
    }
}

/// A `ctl` failure: its class and what to tell the operator on stderr (`None` when the
/// standard output already said why, e.g. a conflicting proposal).
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    message: Option<String>,
}

impl Failure {
    pub fn of(exit: Exit, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Failure {
            exit,
            message: Some(message.into()),
        })
    }

    /// A failure whose reason was already printed.
    pub fn quiet(exit: Exit) -> anyhow::Error {
        anyhow::Error::new(Failure {
            exit,
            message: None,
        })
    }

    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Failure::of(Exit::Usage, message)
    }

    /// A request that got no answer.
    pub fn no_answer(e: ClientError) -> anyhow::Error {
        Failure::of(Exit::of_client_error(&e), e.to_string())
    }

    /// An HTTP error answer: its status and body.
    pub fn answer(status: StatusCode, body: &[u8]) -> anyhow::Error {
        Failure::of(
            Exit::of_status(status),
            format!("{status} {}", String::from_utf8_lossy(body)),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or(""))
    }
}

impl std::error::Error for Failure {}

/// The exit status for `e`, and whether its message still has to be printed. An error no
/// source classified is the cluster saying no (1), as before exit statuses were documented.
pub fn classify(e: &anyhow::Error) -> (i32, bool) {
    let failure = e.chain().find_map(|c| c.downcast_ref::<Failure>());
    let exit = failure.map_or(Exit::Refused, |f| f.exit);
    // A quiet failure with context around it still has something to say.
    let silent = failure.is_some_and(|f| f.message.is_none()) && e.chain().count() == 1;
    (exit.code(), !silent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_class_under_context() {
        let e = Failure::of(Exit::Unreachable, "no node answered").context("cell S1-1");
        assert_eq!(classify(&e), (4, true));
        assert_eq!(format!("{e:#}"), "cell S1-1: no node answered");
    }

    #[test]
    fn a_quiet_failure_prints_nothing_and_an_unclassified_error_is_a_refusal() {
        assert_eq!(classify(&Failure::quiet(Exit::Conflict)), (3, false));
        assert_eq!(classify(&anyhow::anyhow!("something")), (1, true));
    }

    #[test]
    fn the_readme_lists_the_same_exit_statuses_as_the_help() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let plain = |s: &str| {
            s.replace('`', "")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        // `  N  meaning` in the help, wrapped onto indented lines; `| N | meaning |` in the README.
        let mut rows: Vec<String> = Vec::new();
        for line in TABLE.lines().skip(1) {
            match line.trim_start().split_once("  ") {
                // A status: two spaces, one digit, two spaces.
                Some((code, meaning)) if line.len() - line.trim_start().len() == 2 => {
                    rows.push(format!("| {code} | {meaning}"))
                }
                _ => {
                    if let Some(row) = rows.last_mut() {
                        row.push(' ');
                        row.push_str(line.trim());
                    }
                }
            }
        }
        assert_eq!(rows.len(), 5, "{rows:?}");
        for row in rows {
            let row = plain(&format!("{row} |"));
            assert!(
                readme.lines().any(|l| plain(l) == row),
                "the README has no row {row}"
            );
        }
    }

    #[test]
    fn conflicts_and_invalid_bodies_are_3_and_other_answers_1() {
        for (status, exit) in [
            (StatusCode::CONFLICT, Exit::Conflict),
            (StatusCode::UNPROCESSABLE_ENTITY, Exit::Conflict),
            (StatusCode::BAD_REQUEST, Exit::Conflict),
            (StatusCode::UNAUTHORIZED, Exit::Refused),
            (StatusCode::NOT_FOUND, Exit::Refused),
            (StatusCode::SERVICE_UNAVAILABLE, Exit::Refused),
            (StatusCode::INTERNAL_SERVER_ERROR, Exit::Refused),
        ] {
            assert_eq!(Exit::of_status(status), exit, "{status}");
        }
    }
}
