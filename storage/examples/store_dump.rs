//! Dumps a stopped node's data directory as text, for the golden fixtures of released data
//! formats (`scripts/make-format-fixtures.sh`): the format marker, every key and value of
//! every sled tree, and the snapshot files, hex-encoded. `tests/golden_formats.rs` rebuilds a
//! data directory from such a dump and opens it with the current code.
//!
//!     cargo run -p sonraft-storage --example store_dump -- DATA_DIR > store.dump

use std::fmt::Write as _;
use std::path::Path;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: store_dump DATA_DIR (of a stopped node)")?;
    let dir = Path::new(&dir);
    let marker = std::fs::read(dir.join("FORMAT"))?;
    println!("# sonraft data directory dump: marker, sled trees, snapshot files (hex)");
    println!("marker\t{}", hex(&marker));
    let db = sled::Config::new().path(dir.join("sled")).open()?;
    let mut names = db.tree_names();
    names.sort();
    for name in names {
        let tree = db.open_tree(&name)?;
        for item in tree.iter() {
            let (k, v) = item?;
            println!("kv\t{}\t{}\t{}", hex(&name), hex(&k), hex(&v));
        }
    }
    let snapshots = dir.join("snapshots");
    if snapshots.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(&snapshots)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            // Hidden: a snapshot being written, or an old one being cut down. Not the state.
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        files.sort_by_key(|e| e.file_name());
        for f in files {
            println!(
                "file\tsnapshots/{}\t{}",
                f.file_name().to_string_lossy(),
                hex(&std::fs::read(f.path())?)
            );
        }
    }
    Ok(())
}
