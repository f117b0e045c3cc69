//! The four things the bench puts behind the broker, started the same way
//! and stopped the same way.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{oneshot, watch};
use wasmpay::Config;
use wasmpay_domain::MerchantId;

use crate::mirror::{self, Batching, FeeRules, NaiveRules, Rule};
use crate::world;

/// What answers the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Echo to the Response Topic: no rules, no ledger.
    Ceiling,
    /// The daemon, `wasmpay::pipeline::run`, with the `fee` plugin.
    Wasmpay,
    /// The daemon's stages with the fee rule in native Rust.
    Native,
    /// The bench's copy of the daemon's pipeline with the daemon's own
    /// prepare stage: should match `Wasmpay` (checks the copy).
    Copy,
    /// The copy with the daemon's loop before `cbf28a1` (eager batches):
    /// what batching while the writer is busy bought.
    WasmpayEager,
    /// One message at a time, compile per call, one commit per payment.
    Naive,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ceiling => "ceiling",
            Self::Wasmpay => "wasmpay",
            Self::Native => "native rule",
            Self::Copy => "wasmpay (bench copy)",
            Self::WasmpayEager => "wasmpay (bench copy), loop before cbf28a1",
            Self::Naive => "naive baseline",
        }
    }

    /// Whether requests need accounts (everything but the echo).
    pub fn has_ledger(self) -> bool {
        self != Self::Ceiling
    }

    /// Whether merchants upload the `fee` plugin at setup (the variants
    /// whose payments run through the daemon's own prepare stage).
    pub fn uploads_plugins(self) -> bool {
        matches!(self, Self::Wasmpay | Self::Copy | Self::WasmpayEager)
    }
}

/// The daemon's configuration for a bench run: the defaults of
/// `config/wasmpay.toml` (so `synchronous = "full"`, 256 messages in flight,
/// batches of up to 512, two plugin workers), the bench's broker, a fresh
/// client id and a ledger file under `dir`.
pub fn daemon_config(address: &str, client_id: &str, db: &Path) -> Config {
    let mut config = Config::default();
    config.broker.address = address.to_owned();
    config.broker.client_id = client_id.to_owned();
    config.ledger.path = db.to_owned();
    config
}

/// The `fee` configuration of merchants `0..merchants`, keyed as the rules
/// look them up.
pub fn fee_configs(merchants: u64) -> HashMap<MerchantId, BTreeMap<String, String>> {
    (0..merchants)
        .map(|j| {
            (
                MerchantId::new(world::merchant(j)).expect("valid merchant id"),
                world::fee_config(j),
            )
        })
        .collect()
}

/// A running server; [`Server::stop`] shuts it down gracefully.
#[derive(Debug)]
pub struct Server {
    pub variant: Variant,
    pub db: PathBuf,
    pub config: Option<Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Starts `variant` on `runtime` (the server's own threads). `config`
    /// is used by everything but the ceiling; `merchants` have the fee rule
    /// (the daemon's come from the ledger's plugin registry instead).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        variant: Variant,
        config: Config,
        merchants: u64,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let db = config.ledger.path.clone();
        let task = match variant {
            Variant::Ceiling => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let address = config.broker.address.clone();
                let client_id = config.broker.client_id.clone();
                let inflight = config.broker.inflight_messages_max;
                let per_write = config.broker.packets_per_write_max;
                runtime.spawn(async move {
                    let serve = tokio::spawn(crate::ceiling::run(
                        address, client_id, inflight, per_write, stop_rx,
                    ));
                    shutdown.await;
                    let _ = stop_tx.send(true);
                    serve.await?
                })
            }
            Variant::Wasmpay => runtime.spawn(wasmpay::pipeline::run(config.clone(), shutdown)),
            Variant::Native | Variant::Copy | Variant::WasmpayEager => {
                let rules = FeeRules {
                    configs: fee_configs(merchants),
                };
                let rule = match variant {
                    Variant::Native => Rule::Native,
                    _ => Rule::Plugin,
                };
                let batching = match variant {
                    Variant::WasmpayEager => Batching::Eager,
                    _ => Batching::Daemon,
                };
                runtime.spawn(mirror::run_pipeline(
                    config.clone(),
                    rule,
                    rules,
                    batching,
                    shutdown,
                ))
            }
            Variant::Naive => {
                let rules = NaiveRules {
                    wasm: wasmpay_plugin_artifacts::FEE,
                    configs: fee_configs(merchants),
                };
                runtime.spawn(mirror::run_naive(config.clone(), rules, shutdown))
            }
        };
        Self {
            variant,
            db,
            config: Some(config),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Asks for a graceful shutdown, waits for it (at most a minute), and
    /// ends the daemon's broker session so that nothing is queued for it
    /// any more.
    pub async fn stop(self) -> anyhow::Result<()> {
        let broker = self
            .config
            .as_ref()
            .map(|c| (c.broker.address.clone(), c.broker.client_id.clone()));
        self.stop_keeping_session().await?;
        if let Some((address, client_id)) = broker {
            crate::load::forget_session(&address, &client_id).await?;
        }
        Ok(())
    }

    /// Asks for a graceful shutdown and waits for it (at most a minute); the
    /// broker keeps the daemon's session (its subscriptions, and requests
    /// sent until it restarts).
    pub async fn stop_keeping_session(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .with_context(|| format!("{} stops within a minute", self.variant.name()))?
                .context("server task")??;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
