//! The ledger's integration tests: one binary, real SQLite files in
//! temporary directories, no mocks.

mod crash;
mod holds;
mod idempotency;
mod model;
mod operations;
mod plugins;
mod storage;
mod support;
mod tamper;
mod tamper_sweep;
