//! Running the system tools the campaign drives (`ip`, `iptables`, `kill`, `fusermount3`),
//! with their failures as typed errors that say which command failed and what it printed.

use std::process::{Command, Output};

/// A tool that failed or could not be run.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {command}: {error}")]
    Spawn { command: String, error: String },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

fn describe(args: &[&str]) -> String {
    args.join(" ")
}

fn checked(args: &[&str], out: std::io::Result<Output>) -> Result<String, CommandError> {
    let out = out.map_err(|e| CommandError::Spawn {
        command: describe(args),
        error: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(CommandError::Failed {
            command: describe(args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `args[0]` with the rest as arguments and returns its stdout.
pub fn run(args: &[&str]) -> Result<String, CommandError> {
    checked(args, Command::new(args[0]).args(&args[1..]).output())
}

/// [`run`] without blocking the async runtime.
pub async fn run_async(args: &[&str]) -> Result<String, CommandError> {
    let out = tokio::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .await;
    checked(args, out)
}

/// A tool started with the first part of its standard input, waiting for the rest: what it
/// does at the end of its input then happens without the delay of starting it.
pub struct Feeding {
    command: Vec<String>,
    child: tokio::process::Child,
}

impl Feeding {
    /// Starts `args[0]` with the rest as arguments and writes `first` to its standard input.
    pub async fn start(args: &[&str], first: &str) -> Result<Feeding, CommandError> {
        use tokio::io::AsyncWriteExt as _;
        let spawned = tokio::process::Command::new(args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = spawned.map_err(|e| CommandError::Spawn {
            command: describe(args),
            error: e.to_string(),
        })?;
        if let Some(stdin) = child.stdin.as_mut() {
            // A tool that exits early shows in its status and stderr at `finish`.
            let _ = stdin.write_all(first.as_bytes()).await;
            let _ = stdin.flush().await;
        }
        Ok(Feeding {
            command: args.iter().map(|a| a.to_string()).collect(),
            child,
        })
    }

    /// Writes `rest`, closes the input and waits for the tool; returns its stdout.
    pub async fn finish(mut self, rest: &str) -> Result<String, CommandError> {
        use tokio::io::AsyncWriteExt as _;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(rest.as_bytes()).await;
        }
        let args: Vec<&str> = self.command.iter().map(String::as_str).collect();
        checked(&args, self.child.wait_with_output().await)
    }
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to process `pid`.
pub async fn signal(pid: u32, signal: &str) -> Result<(), CommandError> {
    run_async(&["kill", &format!("-{signal}"), &pid.to_string()])
        .await
        .map(drop)
}

/// The state letter of a `/proc/.../stat` line (`pid (comm) state ...`; comm may hold spaces
/// and parentheses).
fn proc_state(stat: &str) -> Option<&str> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
}

/// How many of process `pid`'s threads are not stopped yet. SIGSTOP is delivered to each
/// thread on its own: right after `kill -STOP` returns, some may still run (and, say, answer a
/// heartbeat). A thread gone meanwhile is not running either; so is a process gone.
pub fn threads_not_stopped(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| !matches!(proc_state(stat), Some("T" | "t")))
        .count()
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| proc_state(&s).is_some_and(|state| state != "Z" && state != "X"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_process_has_no_running_thread_and_a_gone_one_counts_as_stopped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        assert!(alive(pid));
        signal(pid, "STOP").await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads_not_stopped(pid) > 0 {
            assert!(std::time::Instant::now() < deadline, "not stopped");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        signal(pid, "CONT").await.unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(pid));
        assert_eq!(threads_not_stopped(pid), 0);
    }
}
