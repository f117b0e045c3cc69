//! End-to-end tests: real broker, real SQLite files, real wasm components.
