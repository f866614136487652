//! `ctl`'s standard output. `println!` panics when the reader has gone away
//! (`sonraft ctl cells | head -1`): Rust ignores SIGPIPE, so the write fails with `EPIPE`
//! instead of killing the process. Resetting SIGPIPE to its default would need `unsafe`
//! (`libc::signal`), which this crate forbids, and would end the process with status 141, which
//! `set -o pipefail` scripts read as a failure. So every line goes through [`line`]: a closed
//! pipe ends the command at once with status 0 (what ripgrep does), as the reader asked for no
//! more; any other write error ends it with status 1 and says so.

use std::fmt;
use std::io::{ErrorKind, Write};

/// Writes one line of `ctl`'s output (see the module doc for what a failed write does).
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(
            std::io::stderr(),
            "sonraft ctl: cannot write the output: {e}"
        );
        std::process::exit(1);
    }
}

/// `println!` for `ctl`: see [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::ctl::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
