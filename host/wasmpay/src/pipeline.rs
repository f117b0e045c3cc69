//! The job, end to end: one message in, one reply out, and the ledger changes
//! at most once per request id.
//!
//! ```text
//! broker ─▶ intake ─▶ prepare (many at once) ─▶ in order ─▶ writer ─▶ replier ─▶ ack
//!           mqtt      decode, dedupe, plugin     batching     group     publish    PUBACK
//!                     on worker threads                       commit    QoS 1      in order
//! ```
//!
//! - **Intake** takes messages in arrival order, at most
//!   `broker.inflight_messages_max` in flight (the broker's Receive Maximum:
//!   backpressure reaches the broker instead of growing a queue).
//! - **Prepare** decodes ([`wasmpay_protocol`]), answers a known request id
//!   from its stored outcome, and asks the merchant's plugin
//!   ([`wasmpay_plugin`]) on a worker thread. Many messages prepare at once.
//! - **In order**: prepared work leaves in arrival order and is batched.
//! - **Writer**: one thread owns the ledger connection and commits each batch
//!   in one transaction ([`wasmpay_ledger`]), recording every outcome beside
//!   its postings.
//! - **Replier** encodes operations' replies and notifications (off the
//!   writer thread), publishes them, then acks each message,
//!   in arrival order and only after its commit. A crash anywhere before the
//!   ack means the broker redelivers, and the stored outcome answers it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::Config;
use crate::handlers::{self, Shared};
use crate::mqtt;
use crate::writer::{Done, Item, Writer};

/// The stages a message passes, in order, for [`stage_reached`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    /// Decoded, deduplicated and decided (the plugin call included), and
    /// its turn in arrival order come.
    Prepared,
    /// Handed to the writer in a batch (after waiting for the writer).
    Handed,
    /// Its batch committed; a read's reply built (an operation's is
    /// encoded by the replier).
    Committed,
    /// Replies published and the message acked.
    Acked,
}

/// A debug event with the time since `message` was taken from the broker,
/// in a field named after the stage (`prepared_us`, ...): where a reply's
/// latency accumulates. Off (one relaxed load) unless a subscriber listens.
pub(crate) fn stage_reached(message: &mqtt::Inbound, stage: Stage) {
    // A field's value is computed only when the event is enabled.
    let us = || u64::try_from(message.received.elapsed().as_micros()).unwrap_or(u64::MAX);
    match stage {
        Stage::Prepared => tracing::debug!(prepared_us = us(), "message stage"),
        Stage::Handed => tracing::debug!(handed_us = us(), "message stage"),
        Stage::Committed => tracing::debug!(committed_us = us(), "message stage"),
        Stage::Acked => tracing::debug!(acked_us = us(), "message stage"),
    }
}

/// Runs the daemon until `shutdown` resolves, then stops taking messages,
/// commits and acks what is in flight, and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::open(&config)?);
    let writer = Writer::open(&config, shared.clone())?;

    let (stop_mqtt, stop_mqtt_rx) = watch::channel(false);
    let (broker, mut inbound, mqtt_task) =
        mqtt::start(&config.broker, handlers::SUBSCRIPTIONS, stop_mqtt_rx)
            .map_err(anyhow::Error::msg)?;

    let depth = usize::from(config.broker.inflight_messages_max);
    // One batch at a time: the next batch leaves only when the writer is
    // done with the last one (`writer_free`), so everything that was
    // prepared while it committed goes in one batch (group commit). With a
    // batch queued ahead instead, the first message prepared during each
    // commit left alone in a batch of its own, and the rest waited for the
    // commit after it: commits alternated between one operation and many,
    // and a message often waited two commits instead of one.
    let writer_free = Arc::new(Semaphore::new(1));
    let (batch_tx, batch_rx) = mpsc::channel::<Vec<Item>>(1);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Done>>();
    let writer_thread = {
        let free = writer_free.clone();
        std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || writer.run(batch_rx, done_tx, &free))?
    };

    let metrics_task = if config.metrics.listen.is_empty() {
        None
    } else {
        let health = broker.clone();
        Some(
            crate::metrics::serve(
                config.metrics.listen.clone(),
                shared.metrics.clone(),
                move || health.health(),
            )
            .await?,
        )
    };
    let replier_broker = broker.clone();
    let replier_metrics = shared.metrics.clone();
    let replier = tokio::spawn(async move {
        while let Some(batch) = done_rx.recv().await {
            for (message, replies) in batch {
                for reply in replies {
                    if let Err(e) = replier_broker.publish(reply).await {
                        tracing::error!(error = %e, "reply not published");
                    }
                }
                if let Some(message) = &message {
                    replier_metrics.replied(message.received.elapsed());
                }
                if let Some(message) = message {
                    if let Err(e) = replier_broker.ack(&message).await {
                        tracing::error!(error = %e, "ack not sent; the broker will redeliver");
                    }
                    stage_reached(&message, Stage::Acked);
                }
            }
        }
    });

    let batch_ops_max = config.pipeline.batch_ops_max;
    let mut sweep = tokio::time::interval(Duration::from_millis(
        config.pipeline.hold_sweep_interval_ms.max(10),
    ));
    let mut ordered = FuturesOrdered::new();
    // Prepared work, in arrival order, waiting for the writer to be free.
    let mut pending: Vec<Item> = Vec::new();
    let mut stopping = false;
    let grace = Duration::from_millis(config.pipeline.shutdown_grace_ms);
    let give_up = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(give_up);
    tokio::pin!(shutdown);
    tracing::info!(broker = %config.broker.address, ledger = %config.ledger.path.display(), "wasmpay running");
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown, if !stopping => {
                tracing::info!(in_flight = ordered.len(), "shutting down: finishing in-flight messages");
                stopping = true;
                give_up.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            () = &mut give_up, if stopping => {
                tracing::warn!(unfinished = ordered.len(), "shutdown grace over; unfinished messages stay unacked and will be redelivered");
                break;
            }
            free = writer_free.acquire(), if !pending.is_empty() => {
                // The writer gives the permit back when it is done with the
                // batch; the channel is empty whenever the permit is held.
                free.map_err(|_| anyhow::anyhow!("the ledger writer stopped"))?.forget();
                let count = pending.len().min(batch_ops_max);
                let batch: Vec<Item> = pending.drain(..count).collect();
                for (message, _) in &batch {
                    if let Some(message) = message {
                        stage_reached(message, Stage::Handed);
                    }
                }
                if batch_tx.try_send(batch).is_err() {
                    anyhow::bail!("the ledger writer stopped");
                }
            }
            Some(first) = ordered.next(), if !ordered.is_empty() => {
                let from = pending.len();
                pending.push(first);
                while let Some(Some(item)) = ordered.next().now_or_never() {
                    pending.push(item);
                }
                for (message, _) in &pending[from..] {
                    if let Some(message) = message {
                        stage_reached(message, Stage::Prepared);
                    }
                }
            }
            message = inbound.recv(), if !stopping && ordered.len() + pending.len() < depth => {
                let Some(message) = message else { break };
                let shared = shared.clone();
                ordered.push_back(async move {
                    let prepared = handlers::prepare(&shared, &message).await;
                    (Some(message), prepared)
                }.boxed());
            }
            _ = sweep.tick(), if !stopping => {
                ordered.push_back(async { handlers::sweep_holds() }.boxed());
            }
        }
        shared.metrics.inflight(ordered.len() + pending.len());
        if stopping && ordered.is_empty() && pending.is_empty() {
            break;
        }
    }

    // Messages that arrive from now on stay unacked: the broker keeps them in
    // the session and redelivers them to the next run.
    let drain = tokio::spawn(async move { while inbound.recv().await.is_some() {} });
    drop(batch_tx);
    let writer_result = tokio::task::spawn_blocking(move || writer_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the ledger writer panicked"))?;
    replier.await?;
    let _ = stop_mqtt.send(true);
    let _ = mqtt_task.await;
    drain.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    writer_result?;
    tracing::info!("wasmpay stopped cleanly");
    Ok(())
}
