//! The control socket and the process lifecycle, as a campaign drives them.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{LazyMount, field, read, write_at, write_synced};

#[test]
fn stats_count_pending_pages_syncs_and_crashes() {
    let fs = LazyMount::start();
    write_at(&fs.path("a"), 0, &[1; 3 * 4096]);
    write_synced(&fs.path("b"), 0, b"b");
    std::fs::File::open(fs.mount_point())
        .expect("open dir")
        .sync_all()
        .expect("fsyncdir");
    fs.crash();
    fs.ok("crash-torn");
    write_at(&fs.path("a"), 0, b"x");

    let stats = fs.ok("stats");

    assert_eq!(field(&stats, "pending_files"), 1, "{stats}");
    assert_eq!(field(&stats, "pending_pages"), 1, "{stats}");
    assert_eq!(field(&stats, "pending_bytes"), 4096, "{stats}");
    assert_eq!(field(&stats, "syncs"), 1, "{stats}");
    assert_eq!(field(&stats, "dir_syncs"), 1, "{stats}");
    assert_eq!(field(&stats, "crashes"), 2, "{stats}");
    assert_eq!(field(&stats, "torn_crashes"), 1, "{stats}");
}

#[test]
fn a_crash_reports_what_it_dropped() {
    let fs = LazyMount::start();
    write_at(&fs.path("a"), 0, &[1; 2 * 4096]);
    write_at(&fs.path("b"), 0, b"b");

    let reply = fs.crash();

    assert_eq!(
        reply,
        "ok files=2 dropped_pages=3 kept_pages=0 failed_pages=0"
    );
}

#[test]
fn an_unknown_command_is_refused_with_exit_status_1() {
    let fs = LazyMount::start();
    let (code, reply) = fs.ctl("reboot");
    assert_eq!(code, 1);
    assert!(
        reply.starts_with("err unknown command \"reboot\""),
        "{reply}"
    );
}

#[test]
fn ctl_without_a_listening_socket_exits_with_status_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_sonraft-lazyfs"))
        .arg("ctl")
        .arg(dir.path().join("nothing.sock"))
        .arg("stats")
        .stderr(Stdio::null())
        .status()
        .expect("run ctl");
    assert_eq!(status.code(), Some(2));
}

#[test]
fn unmount_writes_pending_pages_back_and_exits_cleanly() {
    let mut fs = LazyMount::start();
    write_at(&fs.path("f"), 0, b"pending at shutdown");
    let on_disk = fs.on_disk("f");
    let mount_point = fs.mount_point();
    let control = fs.control();

    let reply = fs.unmount();

    assert_eq!(reply, "ok unmounted written_back_pages=1");
    assert_eq!(read(&on_disk), b"pending at shutdown");
    assert!(!mounted(&mount_point.to_string_lossy()));
    assert!(!control.exists(), "the control socket is removed");
}

#[test]
fn sigterm_unmounts_and_writes_pending_pages_back() {
    let mut fs = LazyMount::start();
    write_at(&fs.path("f"), 0, b"pending at SIGTERM");
    let on_disk = fs.on_disk("f");
    let mount_point = fs.mount_point().to_string_lossy().into_owned();

    assert!(fs.terminate(), "exit status 0 after SIGTERM");

    assert_eq!(read(&on_disk), b"pending at SIGTERM");
    assert!(!mounted(&mount_point));
}

#[test]
fn writes_over_the_memory_cap_are_written_back_oldest_first_and_survive_a_crash() {
    let fs = LazyMount::start_with(&["--max-pending-bytes", "64K"]);
    write_at(&fs.path("old"), 0, &[1; 8 * 4096]);
    write_at(&fs.path("new"), 0, &[2; 10 * 4096]); // 18 pages > 16: down to 12

    assert_eq!(fs.stat("written_back_pages"), 6);
    fs.crash();

    assert_eq!(read(&fs.path("old")), vec![1; 6 * 4096]);
    assert_eq!(read(&fs.path("new")), b"");
}

#[test]
fn checkpoint_writes_pending_pages_to_the_backing_files() {
    let fs = LazyMount::start();
    write_at(&fs.path("f"), 0, b"checkpointed");

    assert_eq!(fs.ok("checkpoint"), "ok written_pages=1");
    fs.crash();

    assert_eq!(read(&fs.path("f")), b"checkpointed");
}

#[test]
fn the_control_socket_appears_only_once_the_mount_is_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (backing, mnt, control) = (
        dir.path().join("b"),
        dir.path().join("m"),
        dir.path().join("c.sock"),
    );
    std::fs::create_dir(&backing).expect("mkdir");
    std::fs::create_dir(&mnt).expect("mkdir");
    let child = Command::new(env!("CARGO_BIN_EXE_sonraft-lazyfs"))
        .arg("--backing")
        .arg(&backing)
        .arg("--mount")
        .arg(&mnt)
        .arg("--control")
        .arg(&control)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _stop = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::symlink_metadata(&control).is_ok_and(|m| m.file_type().is_socket()) {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        mounted(&mnt.to_string_lossy()),
        "socket bound before the mount was live"
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_sonraft-lazyfs"))
        .arg("ctl")
        .arg(&control)
        .arg("unmount")
        .status()
        .expect("ctl");
    assert!(ok.success());
}

/// Reaps the child at the end of the test whatever happens.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .expect("read /proc/mounts")
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(target))
}
