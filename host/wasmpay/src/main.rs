//! The `wasmpay` binary.
fn main() {}
