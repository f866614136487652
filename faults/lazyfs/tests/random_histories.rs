//! Random histories of writes, syncs, truncations and power cuts, checked against a model
//! of what a disk must hold: synced bytes survive, unsynced bytes vanish.
//!
//! Each history is generated from a seed printed on failure, so a failing history can be
//! replayed by putting its seed in `SEEDS`.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{LazyMount, read};

const SEEDS: [u64; 6] = [1, 2, 3, 4, 5, 6];
const STEPS: usize = 400;
const FILES: usize = 3;
const PAGE: usize = 4096;

/// What one file must look like.
#[derive(Default, Clone)]
struct Model {
    /// What the disk holds: the bytes as of the last fsync (and any truncation since).
    durable: Vec<u8>,
    /// What reads through the mount return.
    current: Vec<u8>,
}

impl Model {
    fn write(&mut self, offset: usize, data: &[u8]) {
        if self.current.len() < offset + data.len() {
            self.current.resize(offset + data.len(), 0);
        }
        self.current[offset..offset + data.len()].copy_from_slice(data);
    }

    fn truncate(&mut self, size: usize) {
        self.current.resize(size, 0);
        self.durable.resize(size, 0);
    }
}

struct History {
    // Before `fs`: fields drop in order, and the mount cannot go away while files on it
    // are open.
    files: Vec<File>,
    fs: LazyMount,
    models: Vec<Model>,
    rng: StdRng,
    seed: u64,
    log: Vec<String>,
}

impl History {
    fn new(seed: u64) -> Self {
        let fs = LazyMount::start_with(&["--seed", &seed.to_string()]);
        let files = (0..FILES)
            .map(|i| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(fs.path(&format!("f{i}")))
                    .expect("open")
            })
            .collect();
        Self {
            files,
            fs,
            models: vec![Model::default(); FILES],
            rng: StdRng::seed_from_u64(seed),
            seed,
            log: Vec::new(),
        }
    }

    fn step(&mut self) {
        let f = self.rng.random_range(0..FILES);
        match self.rng.random_range(0..100) {
            0..55 => {
                let offset = self.rng.random_range(0..6 * PAGE);
                let len = self.rng.random_range(1..3 * PAGE);
                let byte = self.rng.random_range(1..=255u8);
                self.log.push(format!("write f{f} at {offset} len {len}"));
                self.files[f]
                    .write_all_at(&vec![byte; len], offset as u64)
                    .expect("write");
                self.models[f].write(offset, &vec![byte; len]);
            }
            55..70 => {
                self.log.push(format!("fsync f{f}"));
                if self.rng.random_bool(0.5) {
                    self.files[f].sync_all().expect("fsync");
                } else {
                    self.files[f].sync_data().expect("fdatasync");
                }
                self.models[f].durable = self.models[f].current.clone();
            }
            70..78 => {
                let size = self.rng.random_range(0..7 * PAGE);
                self.log.push(format!("truncate f{f} to {size}"));
                self.files[f].set_len(size as u64).expect("truncate");
                self.models[f].truncate(size);
            }
            78..90 => {
                self.log.push("crash".into());
                self.fs.crash();
                for model in &mut self.models {
                    model.current = model.durable.clone();
                }
            }
            _ => {
                self.log.push("crash-torn".into());
                self.fs.ok("crash-torn");
                for i in 0..FILES {
                    let after = read(&self.fs.path(&format!("f{i}")));
                    self.check_torn(i, &after);
                    self.models[i] = Model {
                        durable: after.clone(),
                        current: after,
                    };
                }
            }
        }
        self.check_reads();
    }

    /// Every file reads as the model's current bytes, and the disk holds the durable ones.
    fn check_reads(&self) {
        for (i, model) in self.models.iter().enumerate() {
            let name = format!("f{i}");
            assert!(
                read(&self.fs.path(&name)) == model.current,
                "seed {}: f{i} through the mount differs from the model after {:?}",
                self.seed,
                self.log
            );
            assert!(
                read(&self.fs.on_disk(&name)) == model.durable,
                "seed {}: f{i} on disk differs from the synced bytes after {:?}",
                self.seed,
                self.log
            );
        }
    }

    /// After a torn cut each page holds its durable or its latest bytes, whole, and the
    /// size is between the durable and the latest size.
    fn check_torn(&self, i: usize, after: &[u8]) {
        let model = &self.models[i];
        assert!(
            model.durable.len() <= after.len() && after.len() <= model.current.len(),
            "seed {}: f{i} has size {} after a torn cut, outside [{}, {}] after {:?}",
            self.seed,
            after.len(),
            model.durable.len(),
            model.current.len(),
            self.log
        );
        for (index, page) in after.chunks(PAGE).enumerate() {
            let range = index * PAGE..index * PAGE + page.len();
            let mut old = model.durable.clone();
            old.resize(after.len(), 0);
            let latest = &model.current[range.clone()];
            assert!(
                page == &old[range.clone()] || page == latest,
                "seed {}: page {index} of f{i} is neither its durable nor its latest bytes after {:?}",
                self.seed,
                self.log
            );
        }
    }
}

#[test]
fn random_histories_keep_exactly_the_synced_bytes() {
    for seed in SEEDS {
        let mut history = History::new(seed);
        for _ in 0..STEPS {
            history.step();
        }
    }
}
