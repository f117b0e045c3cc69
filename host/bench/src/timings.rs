//! Where the daemon's time goes, from its own debug events: the writer's
//! `batch committed` (`ops`, `commit_us`), the handler's `plugin decided`
//! (`elapsed_us`), the ledger's `checkpoint tail copied` (`tail_us`,
//! `tail_pages`), and each message's `message stage` (`prepared_us`,
//! `handed_us`, `committed_us`, `acked_us`: the time since the daemon took
//! it from the broker). A tracing layer that listens to those events only,
//! and only while switched on, so the measured runs pay nothing for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Histograms of the daemon's own timings.
#[derive(Debug)]
pub struct Timings {
    on: AtomicBool,
    recorded: Mutex<Recorded>,
}

/// What the events reported while recording was on.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Ledger operations per group commit.
    pub batch_ops: Histogram<u64>,
    /// `Ledger::apply_batch`, transaction and fsync included, in µs.
    pub commit_us: Histogram<u64>,
    /// One plugin call (fresh store, instantiate, call, convert), in µs.
    pub plugin_us: Histogram<u64>,
    /// Per message, µs from when the daemon took it from the broker until
    /// it reached each stage, in order: prepared (plugin decided, its turn
    /// come), handed to the writer, committed, acked.
    pub stages_us: [Histogram<u64>; STAGES.len()],
    /// The writer's copies of the log's tail between batches, in µs, and
    /// the pages each had to copy.
    pub tail_us: Histogram<u64>,
    pub tail_pages: Histogram<u64>,
}

/// The stages of [`Recorded::stages_us`], by their event field.
pub const STAGES: [&str; 4] = ["prepared_us", "handed_us", "committed_us", "acked_us"];

impl Recorded {
    fn new() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Self {
            batch_ops: histogram(),
            commit_us: histogram(),
            plugin_us: histogram(),
            stages_us: std::array::from_fn(|_| histogram()),
            tail_us: histogram(),
            tail_pages: histogram(),
        }
    }
}

impl Timings {
    /// Installs the listening layer as the process's subscriber. Call once,
    /// before anything logs.
    pub fn install() -> Arc<Self> {
        let timings = Arc::new(Self {
            on: AtomicBool::new(false),
            recorded: Mutex::new(Recorded::new()),
        });
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(TimingsLayer(timings.clone()));
        // Fails only if a subscriber is installed already (the tests run
        // several benches in one process): then nothing is recorded.
        let _ = tracing::subscriber::set_global_default(subscriber);
        timings
    }

    /// Starts recording, from empty histograms.
    pub fn start(&self) {
        *self.recorded.lock().expect("timings lock") = Recorded::new();
        self.on.store(true, Ordering::Relaxed);
    }

    /// Stops recording and returns what was recorded.
    pub fn stop(&self) -> Recorded {
        self.on.store(false, Ordering::Relaxed);
        self.recorded.lock().expect("timings lock").clone()
    }
}

struct TimingsLayer(Arc<Timings>);

/// The fields of interest in one event.
#[derive(Default)]
struct Fields {
    ops: Option<u64>,
    commit_us: Option<u64>,
    elapsed_us: Option<u64>,
    tail_us: Option<u64>,
    tail_pages: Option<u64>,
    /// A stage's index in [`STAGES`] and its time.
    stage: Option<(usize, u64)>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "ops" => self.ops = Some(value),
            "commit_us" => self.commit_us = Some(value),
            "elapsed_us" => self.elapsed_us = Some(value),
            "tail_us" => self.tail_us = Some(value),
            "tail_pages" => self.tail_pages = Some(value),
            name => {
                if let Some(i) = STAGES.iter().position(|s| *s == name) {
                    self.stage = Some((i, value));
                }
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(value) = u64::try_from(value) {
            self.record_u64(field, value);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber> Layer<S> for TimingsLayer {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        let fields = metadata.fields();
        let wanted = metadata.is_event()
            && metadata.target().starts_with("wasmpay")
            && ["commit_us", "elapsed_us", "tail_us"]
                .iter()
                .chain(&STAGES)
                .any(|name| fields.field(name).is_some());
        if wanted {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, _metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.0.on.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut recorded = self.0.recorded.lock().expect("timings lock");
        if let Some(commit_us) = fields.commit_us {
            recorded.commit_us.saturating_record(commit_us.max(1));
            recorded
                .batch_ops
                .saturating_record(fields.ops.unwrap_or(0).max(1));
        }
        if let Some(elapsed_us) = fields.elapsed_us {
            recorded.plugin_us.saturating_record(elapsed_us.max(1));
        }
        if let Some(us) = fields.tail_us {
            recorded.tail_us.saturating_record(us.max(1));
            recorded
                .tail_pages
                .saturating_record(fields.tail_pages.unwrap_or(0).max(1));
        }
        if let Some((i, us)) = fields.stage {
            recorded.stages_us[i].saturating_record(us.max(1));
        }
    }
}
