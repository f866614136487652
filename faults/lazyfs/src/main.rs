#![forbid(unsafe_code)]
mod dirty_file;
mod page_cache;
mod rng;
fn main() {}
