//! sonraft: the node binary (grows in the next change).
#![forbid(unsafe_code)]

fn main() {
    println!("sonraft {}", env!("CARGO_PKG_VERSION"));
}
