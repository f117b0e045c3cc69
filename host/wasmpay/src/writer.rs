//! The writer thread: the one place that changes the ledger.
//!
//! It takes prepared work in arrival order, commits every ledger operation of
//! a batch in one transaction (group commit), then answers reads and
//! registry changes, and hands each message's replies to the replier. Reads
//! run after the batch commits, so a balance asked for just after a payment
//! always shows it.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use wasmpay_domain::{MerchantId, RequestId};
use wasmpay_ledger::{Checkpoint, Ledger, LedgerOptions, Op, OpResult, Reader, Synchronous};
use wasmpay_plugin::{Compiled, LoadedPlugin, PluginMeta};
use wasmpay_protocol::{Command, Principal, Request, encode_error, encode_ok};

use crate::config::Config;
use crate::handlers::{Prepared, Ready, ReplyTo, Shared, Work, now_ms};
use crate::mqtt::{Inbound, Outbound};
use crate::replies;

/// A message (none for the daemon's own timers) and its prepared work.
pub type Item = (Option<Inbound>, Prepared);
/// A message and everything to publish before acking it.
pub type Done = (Option<Inbound>, Replies);

/// What to publish for one message, in order. An operation's reply and
/// notification are encoded where they are published, by whoever iterates
/// over this (the replier), rather than on the writer thread: every message
/// waits for the writer, and encoding was a tenth of its time
/// (BENCHMARKS.md, "Replies encoded off the writer thread"). Only the ledger
/// read that some replies need is done on the writer.
#[derive(Debug)]
pub enum Replies {
    /// Built already: a read's or a registry change's reply, an answer from
    /// the prepare stage, or nothing.
    Built(Vec<Outbound>),
    /// A decided operation, encoded when iterated.
    Decided(Box<Decided>),
}

/// A ledger operation's outcome, with what its reply needs.
#[derive(Debug)]
pub struct Decided {
    id: RequestId,
    reply: ReplyTo,
    op: Box<Op>,
    result: OpResult,
    payment: Option<wasmpay_ledger::PaymentInfo>,
}

impl IntoIterator for Replies {
    type Item = Outbound;
    type IntoIter = std::vec::IntoIter<Outbound>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::Built(out) => out,
            Self::Decided(d) => {
                replies::for_op(&d.id, &d.reply, &d.op, &d.result, d.payment.as_ref())
            }
        }
        .into_iter()
    }
}

/// Owns the ledger's write connection.
#[derive(Debug)]
pub struct Writer {
    ledger: Ledger,
    reader: Reader,
    shared: Arc<Shared>,
    /// When idempotency records past their retention were last purged.
    purged_at_ms: i64,
}

/// How often idempotency records past their retention are purged.
const PURGE_INTERVAL_MS: i64 = 60_000;

impl Writer {
    /// Opens the ledger and loads every merchant's active plugin version, so
    /// the daemon serves with the same rules it stopped with.
    pub fn open(config: &Config, shared: Arc<Shared>) -> anyhow::Result<Self> {
        let options = LedgerOptions {
            synchronous: if config.ledger.synchronous == "normal" {
                Synchronous::Normal
            } else {
                Synchronous::Full
            },
            idempotency_retention_ms: i64::try_from(config.ledger.idempotency_retention_hours)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000),
            merchant_subaccounts_max: config.ledger.merchant_subaccounts_max,
            checkpoint: if config.ledger.checkpoint == "commit" {
                Checkpoint::InCommit
            } else {
                Checkpoint::Background
            },
        };
        let mut ledger = Ledger::open(&config.ledger.path, options)?;
        let reader = ledger.reader()?;
        let mut writer_loaded = 0usize;
        for (merchant, info) in ledger.plugin_active_all()? {
            match load_version(
                &mut ledger,
                &shared,
                &merchant,
                info.version,
                &info.sha256,
                info.config.clone(),
            ) {
                Ok(plugin) => {
                    shared.plugins.activate(merchant, plugin);
                    writer_loaded += 1;
                }
                Err(e) => {
                    tracing::error!(%merchant, version = info.version, error = %e, "active plugin could not be loaded; payments to this merchant use the default rules")
                }
            }
        }
        let components = shared.runtime.components_loaded();
        shared.metrics.plugins(shared.plugins.len(), components);
        tracing::info!(plugins = writer_loaded, components, "plugins loaded");
        warn_if_mappings_short(shared.runtime.mappings_estimate(components));
        Ok(Self {
            ledger,
            reader,
            shared,
            purged_at_ms: 0,
        })
    }

    /// Applies batches until the channel closes, and adds a permit to `free`
    /// after each, when it is ready for the next. A storage failure stops
    /// the daemon: nothing of the failed batch was written or acked, so the
    /// broker redelivers it after a restart.
    pub fn run(
        mut self,
        mut batches: mpsc::Receiver<Vec<Item>>,
        done: mpsc::UnboundedSender<Vec<Done>>,
        free: &Semaphore,
    ) -> anyhow::Result<()> {
        /// However the writer ends (a panic included), no permit will come:
        /// closing the semaphore stops the pipeline from waiting for one.
        struct CloseOnDrop<'a>(&'a Semaphore);
        impl Drop for CloseOnDrop<'_> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _close = CloseOnDrop(free);
        self.apply_all(&mut batches, &done, free)
    }

    fn apply_all(
        &mut self,
        batches: &mut mpsc::Receiver<Vec<Item>>,
        done: &mpsc::UnboundedSender<Vec<Done>>,
        free: &Semaphore,
    ) -> anyhow::Result<()> {
        while let Some(batch) = batches.blocking_recv() {
            let answered = self.apply(batch)?;
            for (message, _) in &answered {
                if let Some(message) = message {
                    crate::pipeline::stage_reached(message, crate::pipeline::Stage::Committed);
                }
            }
            if done.send(answered).is_err() {
                break;
            }
            // After the replies are handed over, so none waits for it.
            self.ledger.checkpoint_tail();
            free.add_permits(1);
        }
        Ok(())
    }

    fn apply(&mut self, batch: Vec<Item>) -> anyhow::Result<Vec<Done>> {
        let ops: Vec<&Op> = batch
            .iter()
            .filter_map(|(_, prepared)| match prepared {
                Prepared::Ready(ready) => match &ready.work {
                    Work::Apply(op) => Some(&**op),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let op_count = ops.len();
        let reruns_before = self.ledger.batches_rerun();
        let mut results = if ops.is_empty() {
            Vec::new()
        } else {
            self.ledger.apply_batch(ops)?
        }
        .into_iter();
        if op_count > 0 {
            let rerun = self.ledger.batches_rerun() != reruns_before;
            self.shared
                .metrics
                .batch(op_count, started.elapsed(), rerun);
            tracing::debug!(
                ops = op_count,
                commit_us = started.elapsed().as_micros() as u64,
                "batch committed"
            );
        }
        let mut answered = Vec::with_capacity(batch.len());
        for (message, prepared) in batch {
            let out = match prepared {
                Prepared::Answer(out) => Replies::Built(out),
                Prepared::SweepHolds { now_ms } => {
                    match self.ledger.release_expired_holds(now_ms) {
                        Ok(released) if !released.is_empty() => {
                            tracing::info!(holds = released.len(), "expired holds released");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "releasing expired holds failed"),
                    }
                    if now_ms - self.purged_at_ms >= PURGE_INTERVAL_MS {
                        self.purged_at_ms = now_ms;
                        match self.ledger.purge_idempotency(now_ms) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                records = n,
                                "idempotency records past retention purged"
                            ),
                            Err(e) => {
                                tracing::error!(error = %e, "purging idempotency records failed")
                            }
                        }
                    }
                    Replies::Built(Vec::new())
                }
                Prepared::Ready(ready) => {
                    let Ready {
                        request,
                        reply,
                        work,
                        span,
                    } = *ready;
                    let _in = span.enter();
                    match work {
                        Work::Apply(op) => {
                            let result = results.next().ok_or_else(|| {
                                anyhow::anyhow!("ledger returned fewer results than operations")
                            })?;
                            log_result(&result);
                            self.shared
                                .metrics
                                .message(request.command.name(), outcome_label(&result));
                            let payment = replies::payment_for_reply(&self.ledger, &op, &result);
                            Replies::Decided(Box::new(Decided {
                                id: request.id,
                                reply,
                                op,
                                result,
                                payment,
                            }))
                        }
                        Work::Read => Replies::Built(vec![self.read(&request, &reply)]),
                        Work::Upload(compiled) => {
                            Replies::Built(vec![self.upload(&request, &reply, &compiled)])
                        }
                    }
                }
            };
            answered.push((message, out));
        }
        Ok(answered)
    }

    /// Answers a read or a registry request, after the batch committed.
    fn read(&mut self, request: &Request, reply: &ReplyTo) -> Outbound {
        let id = &request.id;
        let result = match (&request.principal, &request.command) {
            (principal, Command::Balance(query)) => {
                replies::balance(&self.reader, principal, query.currency).map(|r| encode_ok(id, &r))
            }
            (principal, Command::History(query)) => {
                replies::history(&self.reader, principal, query).map(|r| encode_ok(id, &r))
            }
            (Principal::Admin, Command::Status) => Ok(encode_ok(
                id,
                &wasmpay_protocol::reply::StatusResult {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    protocol: "v1".to_owned(),
                    uptime_s: self.shared.started.elapsed().as_secs(),
                },
            )),
            (Principal::Merchant(merchant), Command::PluginList) => self
                .ledger
                .plugin_list(merchant)
                .map(|versions| encode_ok(id, &replies::plugin_list(&versions)))
                .map_err(|e| ("internal_error", e.to_string())),
            (Principal::Merchant(merchant), Command::PluginActivate(activate)) => self
                .activate(merchant, Some(activate.version))
                .map(|r| encode_ok(id, &r)),
            (Principal::Merchant(merchant), Command::PluginRollback) => {
                self.activate(merchant, None).map(|r| encode_ok(id, &r))
            }
            (principal, command) => Err((
                "forbidden",
                format!("{principal:?} may not {}", command.name()),
            )),
        };
        reply.send(result.unwrap_or_else(|(code, message)| {
            tracing::info!(code, %message, "request refused");
            encode_error(Some(id.as_str()), code, &message, None)
        }))
    }

    /// Stores an upload as the merchant's next version and activates it. A
    /// redelivered upload (same code and configuration as the active version)
    /// is answered with the active version instead of storing a copy.
    fn upload(&mut self, request: &Request, reply: &ReplyTo, compiled: &Compiled) -> Outbound {
        let id = &request.id;
        let (Principal::Merchant(merchant), Command::PluginUpload(upload)) =
            (&request.principal, &request.command)
        else {
            return reply.send(encode_error(
                Some(id.as_str()),
                "forbidden",
                "only merchants upload plugins",
                None,
            ));
        };
        let result = (|| -> anyhow::Result<wasmpay_protocol::reply::PluginUploadResult> {
            if let Some(active) = self.shared.plugins.get(merchant)
                && active.plugin_ref().sha256 == compiled.sha256
                && let Some(current) = self
                    .ledger
                    .plugin_list(merchant)?
                    .into_iter()
                    .find(|v| v.active && v.config == upload.config)
            {
                return Ok(replies::upload_result(&current, true));
            }
            let at_ms = now_ms();
            let info = self.ledger.plugin_store(
                merchant,
                &upload.wasm,
                &compiled.sha256,
                &upload.config,
                at_ms,
            )?;
            self.ledger.plugin_store_artifact(
                &compiled.sha256,
                &self.shared.runtime.engine_hash(),
                &compiled.artifact,
            )?;
            let plugin = self.shared.runtime.load(
                &compiled.artifact,
                PluginMeta {
                    merchant: merchant.clone(),
                    version: info.version,
                    sha256: compiled.sha256.clone(),
                    config: upload.config.clone(),
                },
            )?;
            let info = self.ledger.plugin_activate(merchant, info.version, at_ms)?;
            self.shared.plugins.activate(merchant.clone(), plugin);
            self.plugins_changed();
            tracing::info!(%merchant, version = info.version, sha256 = %info.sha256, "plugin uploaded and activated");
            Ok(replies::upload_result(&info, true))
        })();
        reply.send(match result {
            Ok(r) => encode_ok(id, &r),
            Err(e) => {
                tracing::error!(%merchant, error = %e, "plugin upload failed");
                encode_error(Some(id.as_str()), "internal_error", &e.to_string(), None)
            }
        })
    }

    /// Updates the gauges of plugins and components loaded, after the
    /// active set changed. A version replaced while a call still runs it
    /// counts until that call ends, and is not counted again after.
    fn plugins_changed(&self) {
        self.shared.metrics.plugins(
            self.shared.plugins.len(),
            self.shared.runtime.components_loaded(),
        );
    }

    /// Activates `version` (or, with `None`, rolls back to the version
    /// active before the current one): the registry first, then the
    /// in-memory set, so a crash in between leaves the registry's choice.
    fn activate(
        &mut self,
        merchant: &MerchantId,
        version: Option<u32>,
    ) -> Result<wasmpay_protocol::reply::PluginActiveResult, (&'static str, String)> {
        let previous = self
            .shared
            .plugins
            .get(merchant)
            .map(|p| p.plugin_ref().clone());
        let at_ms = now_ms();
        let target = match version {
            Some(version) => self
                .ledger
                .plugin_list(merchant)
                .map_err(|e| ("internal_error", e.to_string()))?
                .into_iter()
                .find(|v| v.version == version)
                .ok_or_else(|| {
                    (
                        "plugin_not_found",
                        format!("merchant {merchant} has no plugin version {version}"),
                    )
                })?,
            None => self
                .ledger
                .plugin_rollback(merchant, at_ms)
                .map_err(|e| ("plugin_not_found", e.to_string()))?,
        };
        let plugin = load_version(
            &mut self.ledger,
            &self.shared,
            merchant,
            target.version,
            &target.sha256,
            target.config.clone(),
        )
        .map_err(|e| ("internal_error", e.to_string()))?;
        if version.is_some() {
            self.ledger
                .plugin_activate(merchant, target.version, at_ms)
                .map_err(|e| ("internal_error", e.to_string()))?;
        }
        self.shared
            .plugins
            .activate(merchant.clone(), plugin.clone());
        self.plugins_changed();
        tracing::info!(%merchant, version = target.version, "plugin version activated");
        Ok(wasmpay_protocol::reply::PluginActiveResult {
            active: plugin.plugin_ref().clone(),
            previous,
        })
    }
}

/// Loads a stored version: its precompiled artifact for this engine if the
/// registry has one, else compiles the stored component and caches the
/// artifact (a new wasmtime release changes the engine hash).
fn load_version(
    ledger: &mut Ledger,
    shared: &Shared,
    merchant: &MerchantId,
    version: u32,
    sha256: &str,
    config: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Arc<LoadedPlugin>> {
    let engine = shared.runtime.engine_hash();
    let artifact = match ledger.plugin_artifact(sha256, &engine)? {
        Some(artifact) => artifact,
        None => {
            let wasm = ledger.plugin_wasm(sha256)?.ok_or_else(|| {
                anyhow::anyhow!("component {sha256} is missing from the registry")
            })?;
            let compiled = shared.runtime.compile(&wasm)?;
            ledger.plugin_store_artifact(sha256, &engine, &compiled.artifact)?;
            compiled.artifact
        }
    };
    Ok(shared.runtime.load(
        &artifact,
        PluginMeta {
            merchant: merchant.clone(),
            version,
            sha256: sha256.to_owned(),
            config,
        },
    )?)
}

/// Warns when the plugins loaded and the pooled slots may need more memory
/// mappings than the kernel allows a process (`vm.max_map_count`): past it,
/// mapping a plugin's memory fails, and so may a thread's stack, which
/// aborts the process.
fn warn_if_mappings_short(estimate: usize) {
    let Some(allowed) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
    else {
        return;
    };
    // The daemon's own mappings (libraries, threads, the ledger) besides.
    const OWN_MAPPINGS: usize = 1_000;
    if estimate.saturating_add(OWN_MAPPINGS) > allowed {
        tracing::warn!(
            estimate,
            max_map_count = allowed,
            "the plugin pool and the loaded plugins may need more memory mappings than vm.max_map_count allows; raise it (sysctl vm.max_map_count) or lower plugins.pooling_slots"
        );
    }
}

fn outcome_label(result: &OpResult) -> &'static str {
    match result {
        OpResult::Done {
            outcome: wasmpay_ledger::Outcome::Applied(_),
            ..
        } => "ok",
        OpResult::Done {
            outcome: wasmpay_ledger::Outcome::Refused(refusal),
            ..
        } => refusal.code(),
        OpResult::Conflict { .. } => "conflict",
    }
}

/// Logs inside the request's span, which names it.
fn log_result(result: &OpResult) {
    match result {
        OpResult::Done { outcome, replayed } => match outcome {
            wasmpay_ledger::Outcome::Applied(receipt) => {
                tracing::debug!(seq = receipt.seq, replayed, "applied");
            }
            wasmpay_ledger::Outcome::Refused(refusal) => {
                tracing::info!(code = refusal.code(), replayed, "refused: {refusal}");
            }
        },
        OpResult::Conflict { differing } => {
            tracing::info!(?differing, "conflicting retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer gives a permit back after each batch, once it is done with
    /// it, and closes the semaphore when it stops, so the pipeline never
    /// waits for a writer that is gone.
    #[test]
    fn the_writer_frees_a_permit_per_batch_and_closes_when_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.ledger.path = dir.path().join("ledger.db");
        config.pipeline.plugin_workers = 1;
        let shared = Arc::new(Shared::open(&config).unwrap());
        let writer = Writer::open(&config, shared).unwrap();
        let free = Arc::new(Semaphore::new(0));
        let (batch_tx, batch_rx) = mpsc::channel::<Vec<Item>>(1);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let thread = {
            let free = free.clone();
            std::thread::spawn(move || writer.run(batch_rx, done_tx, &free))
        };
        for round in 1..=2 {
            batch_tx
                .blocking_send(vec![(None, Prepared::Answer(Vec::new()))])
                .unwrap();
            let done = done_rx.blocking_recv().unwrap();
            assert_eq!(done.len(), 1);
            // The permit follows the batch's hand-over; wait for it.
            let permit = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(free.acquire())
                .unwrap_or_else(|_| panic!("round {round}: closed while running"));
            permit.forget();
        }
        drop(batch_tx);
        thread.join().unwrap().unwrap();
        assert!(free.is_closed());
    }
}
