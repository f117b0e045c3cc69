//! Checkpoints off the commit path.
//!
//! In WAL mode every commit appends pages to the write-ahead log, and a
//! checkpoint copies them into the database file and syncs it. SQLite's own
//! automatic checkpoint runs inside the commit that crosses its threshold,
//! so that one commit (and every reply queued behind it) waits for the copy:
//! 40-60 ms for 10 000 pages on the bench machine, the whole of the
//! daemon's p99 at low load (BENCHMARKS.md, End to end).
//!
//! [`Checkpoint::Background`] splits the work:
//!
//! 1. The writer's WAL hook (run after each commit, with the log's size)
//!    wakes a checkpointer thread once the log reaches
//!    [`CHECKPOINT_START_PAGES`].
//! 2. That thread, on a connection of its own, copies the log in PASSIVE
//!    checkpoints, which never block the writer, until what the writer
//!    appended meanwhile is at most [`TAIL_PAGES_MAX`] (or it has made
//!    [`COPY_PASSES_MAX`] passes, if the writer outruns it), then syncs the
//!    database file, which SQLite does only in a checkpoint that reaches the
//!    log's end. What the writer appended during that sync is copied and
//!    synced the same way, up to [`SYNC_ROUNDS_MAX`] rounds, each shorter
//!    than the last.
//! 3. The writer copies that short tail itself, between two batches
//!    ([`Ledger::checkpoint_tail`](crate::Ledger::checkpoint_tail)), after
//!    the batch's replies are on their way. Only the writer can, because
//!    only between two of its own transactions is the log copied to its
//!    end; and a log copied to its end is what lets SQLite start it over
//!    from the beginning at the next write, rather than growing it for ever.
//!    A writer that never calls it (the tools, the tests) has the tail
//!    copied inside a commit once the log is [`TAIL_BACKSTOP_PAGES`] past
//!    the threshold.
//!
//! A checkpoint never changes what the ledger holds: it moves committed
//! pages from one file to the other. A failed one is logged and retried at
//! the next threshold; nothing waits for it. The hook never reports an error
//! to SQLite: the commit that ran it has happened, and an error there would
//! make the writer believe otherwise.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use crate::LedgerError;
use crate::schema::{self, Synchronous};

/// Who checkpoints the write-ahead log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Checkpoint {
    /// A thread of the ledger's own copies the log; the writer copies only
    /// the short tail (see the module docs). No commit waits for a full copy.
    #[default]
    Background,
    /// SQLite's automatic checkpoint, inside the commit that crosses
    /// 10 000 log pages: one thread fewer, one long commit
    /// now and then.
    InCommit,
}

/// Log pages at which the checkpointer starts copying: about 64 MiB of
/// log (so the log file grows to about that, and a recovery after a crash
/// reads that much). A longer interval copies a hot page once for more
/// commits, and so copies and syncs fewer pages in all; the copy is off the
/// writer's path, so its length costs no commit. Against 4 000 pages
/// (BENCHMARKS.md, "A longer interval between checkpoints"): the closed
/// loop 1.05x, the p99 at half the peak 0.62x and its longest commit 0.4x
/// (medians), a ledger with 300 000 payments 1.05x (FULL) and filled 1.3x
/// faster.
pub const CHECKPOINT_START_PAGES: i32 = 16_000;

/// Log pages the checkpointer may leave for the writer to copy.
pub const TAIL_PAGES_MAX: i32 = 64;

/// Log pages past [`CHECKPOINT_START_PAGES`] at which the WAL hook copies a
/// tail the writer's owner has not (see the module docs).
pub const TAIL_BACKSTOP_PAGES: i32 = 1_000;

/// Copy passes before the checkpointer hands over whatever is left: a writer
/// faster than the copy would otherwise keep it looping while the log grows.
pub const COPY_PASSES_MAX: u32 = 8;

/// Syncs of the database file per copy of the log, at most. The first one
/// flushes the whole copy (some 64 MiB), and the writer goes on appending
/// meanwhile: 200-700 pages at half the bench's peak, which the writer's
/// tail copy then had to copy and sync, 3-4 ms at its median with messages
/// queued behind it (BENCHMARKS.md, "The checkpointer's sync, repeated").
/// A second round copies those and syncs only them, and so on while each
/// round leaves more than [`TAIL_PAGES_MAX`].
pub const SYNC_ROUNDS_MAX: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the log to reach the threshold.
    Idle,
    /// The checkpointer thread is copying.
    Copying,
    /// The writer copies the tail between two batches.
    TailDue,
    /// The ledger is closing.
    Stop,
}

#[derive(Debug)]
struct State {
    phase: Mutex<Phase>,
    wake: Condvar,
}

impl State {
    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The checkpointer thread; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path` and installs the
    /// WAL hook on the writer's connection, which replaces SQLite's
    /// automatic checkpoint.
    pub(crate) fn start(
        writer: &mut Connection,
        path: &Path,
        synchronous: Synchronous,
    ) -> Result<Self, LedgerError> {
        let conn = schema::open_checkpointer(path, synchronous)?;
        // The database file, to sync what the passes copied (see
        // `copy_loop`); without it, the writer's tail copy syncs them.
        let file = std::fs::File::open(path)
            .inspect_err(|e| tracing::warn!(error = %e, path = %path.display(), "checkpointer: the database file cannot be opened to sync it"))
            .ok();
        let state = Arc::new(State {
            phase: Mutex::new(Phase::Idle),
            wake: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn({
                let state = Arc::clone(&state);
                move || copy_loop(&conn, file.as_ref(), &state)
            })
            .map_err(|e| LedgerError::InvalidOptions(format!("checkpointer thread: {e}")))?;
        let hook_state = Arc::clone(&state);
        writer.wal_hook(Some(move |wal: &mut Wal, pages: i32| {
            after_commit(&hook_state, wal, pages);
            Ok(())
        }))?;
        Ok(Self {
            state,
            thread: Some(thread),
        })
    }

    /// Whether the thread has handed the log's tail over; if so, the caller
    /// copies it now (and the thread may start again).
    pub(crate) fn take_tail(&self) -> bool {
        let mut phase = self.state.phase();
        let due = *phase == Phase::TailDue;
        if due {
            *phase = Phase::Idle;
        }
        due
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.state.phase() = Phase::Stop;
        self.state.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer's side, after each commit: wake the thread, or copy a tail
/// left too long.
fn after_commit(state: &State, wal: &mut Wal, pages: i32) {
    let mut phase = state.phase();
    match *phase {
        Phase::Idle if pages >= CHECKPOINT_START_PAGES => {
            *phase = Phase::Copying;
            state.wake.notify_one();
        }
        Phase::TailDue if pages >= CHECKPOINT_START_PAGES + TAIL_BACKSTOP_PAGES => {
            *phase = Phase::Idle;
            drop(phase);
            copy_tail(|mode| wal.checkpoint_v2(mode));
        }
        _ => {}
    }
}

/// The writer's copy of the tail (from the WAL hook, or between batches):
/// a failure is logged and retried at the next threshold.
pub(crate) fn copy_tail(mut copy: impl FnMut(CheckpointMode) -> rusqlite::Result<(i32, i32)>) {
    // What is left to copy, for the debug event: NOOP reads the log's
    // header from shared memory and copies nothing, a few microseconds once
    // per copy of the log (not per commit).
    let left = copy(CheckpointMode::NOOP).map_or(-1, |(log, copied)| log - copied);
    let started = std::time::Instant::now();
    match copy(CheckpointMode::PASSIVE) {
        Ok((log, copied)) => tracing::debug!(
            log,
            copied,
            tail_pages = left,
            tail_us = started.elapsed().as_micros() as u64,
            "checkpoint tail copied"
        ),
        Err(e) => tracing::warn!(error = %e, "checkpoint of the log's tail failed"),
    }
}

/// The thread's side: copy until the writer can finish, sync the file,
/// then hand over.
fn copy_loop(conn: &Connection, file: Option<&std::fs::File>, state: &State) {
    loop {
        {
            let mut phase = state.phase();
            while *phase != Phase::Copying {
                if *phase == Phase::Stop {
                    return;
                }
                phase = state
                    .wake
                    .wait(phase)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        let started = std::time::Instant::now();
        let mut passes = 0;
        let mut syncs = 0;
        let mut left = copy_passes(conn, &mut passes);
        // SQLite syncs the database file only in a checkpoint that reaches
        // the log's end, which the passes never do while the writer
        // commits: without this, the writer's tail copy flushed every page
        // the passes wrote (16 MiB then), 5-12 ms at its median with every
        // message queued behind it. Syncing any descriptor of the file
        // flushes them all, here, off the writer's path; the tail's own sync
        // then finds only the tail. A failure costs only that time.
        while let (Some(file), Some(_)) = (file, left) {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, "syncing the copied pages failed; the writer's tail copy syncs them");
                break;
            }
            syncs += 1;
            // The writer went on appending while the file synced.
            left = log_left(conn);
            if syncs >= SYNC_ROUNDS_MAX
                || passes >= COPY_PASSES_MAX
                || left.is_none_or(|left| left <= TAIL_PAGES_MAX)
            {
                break;
            }
            left = copy_passes(conn, &mut passes);
        }
        tracing::debug!(
            passes,
            syncs,
            left = left.unwrap_or(-1),
            copy_us = started.elapsed().as_micros() as u64,
            "checkpoint copied"
        );
        let mut phase = state.phase();
        if *phase == Phase::Stop {
            return;
        }
        *phase = Phase::TailDue;
    }
}

/// PASSIVE copies of the log until what the writer appended meanwhile is at
/// most [`TAIL_PAGES_MAX`] or `passes` reaches [`COPY_PASSES_MAX`]; the
/// pages left, or `None` after a failure (logged; the writer copies the
/// log).
fn copy_passes(conn: &Connection, passes: &mut u32) -> Option<i32> {
    let mut left = None;
    while *passes < COPY_PASSES_MAX {
        *passes += 1;
        if let Err(e) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            tracing::warn!(error = %e, "background checkpoint failed; the writer copies the log");
            return None;
        }
        left = log_left(conn);
        if left.is_none_or(|left| left <= TAIL_PAGES_MAX) {
            break;
        }
    }
    left
}

/// Log pages not yet copied. NOOP takes no lock and copies nothing: it
/// reads the log's header.
fn log_left(conn: &Connection) -> Option<i32> {
    match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::NOOP) {
        Ok((log, copied)) => Some(log - copied),
        Err(e) => {
            tracing::warn!(error = %e, "reading the log's size failed");
            None
        }
    }
}
