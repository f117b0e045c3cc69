//! The protocol crate's boundary tests, one binary: `decode` against a table
//! and the fixture files, the reply encoders, a property test that nothing
//! panics, and a check that docs/PROTOCOL.md lists every error code.

mod decode;
mod docs;
mod never_panics;
mod reply;
