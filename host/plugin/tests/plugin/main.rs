//! The plugin runtime at its boundaries: uploads, calls under limits, the
//! active-version swap and the local runner. One test binary; fixtures are
//! small components written in WAT (`fixtures`) and, in `artifacts`, the
//! example and hostile plugins built from `plugins/`.

mod artifacts;
mod calls;
mod fixtures;
mod runner;
mod set;
mod upload;
