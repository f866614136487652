//! `sonraft completions SHELL` and `sonraft man` (issue 15): generated from the clap
//! definitions, so every command and flag is in them; a closed pipe ends them quietly.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::binary;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_and_the_manual_name_every_command_and_flag() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["ctl", "history", "follow", "since", "son-policy", "node"] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
    }
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");

    let (code, man, err) = run(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        man.contains(".TH sonraft 1"),
        "{}",
        &man[..man.len().min(300)]
    );
    for page in [
        "sonraft-node",
        "sonraft-ctl",
        "sonraft-sim",
        "sonraft-bench",
    ] {
        assert!(man.contains(&format!(".TH {page} 1")), "no page {page}");
    }
    assert!(
        man.contains("history"),
        "ctl's commands are not in the manual"
    );

    // A reader that stops early: quiet, status 0.
    let mut child = Command::new(binary())
        .arg("man")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
