//! The end-to-end benchmark of issue 7: how many payments a second wasmpay
//! takes through a real broker, at what latency, and against what.
//!
//! Everything runs on this machine: a Mosquitto of the bench's own (with
//! TCP_NODELAY and no inflight or queue limits in the way), the server under
//! test on a tokio runtime of its own, and the load clients on another. The
//! parts, in the order a run meets them:
//!
//! - [`server`]: the four things that answer: the echo [`ceiling`], the
//!   daemon itself (`wasmpay::pipeline::run`), and the two [`mirror`]
//!   pipelines (native rule, naive baseline).
//! - [`world`]: users, merchants and the requests that set them up and pay.
//! - [`load`]: MQTT 5 clients that pace requests (closed or open loop) and
//!   time every reply into an HDR histogram.
//! - [`timings`]: the daemon's own commit and plugin timings, from its debug
//!   events.
//! - [`neighbour`]: hostile merchants' plugins beside a well-behaved one
//!   (issue 6): what they cost the good merchant, with and without
//!   quarantine.
//! - [`chart`]: the latency-versus-offered-load SVG.
//!
//! `src/main.rs` strings them together; `BENCHMARKS.md` (`## End to end`)
//! has the figures and how they were made.

pub mod ceiling;
pub mod chart;
pub mod load;
pub mod mirror;
pub mod neighbour;
pub mod server;
pub mod timings;
pub mod world;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::load::{Generator, Outcome, Pacing, Plan};
use crate::server::{Server, Variant};

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `d` in milliseconds with the digits that matter: `0.42 ms`, `12.3 ms`,
/// `230 ms`.
pub fn fmt_ms(d: Duration) -> String {
    let v = ms(d);
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// The process's resident memory (`VmRSS` of `/proc/self/status`), in KiB.
pub fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Where servers are started and how load is applied.
#[derive(Debug)]
pub struct Bench {
    /// `host:port` of the broker.
    pub address: String,
    /// The server under test runs here, apart from the load clients.
    pub server_runtime: tokio::runtime::Handle,
    /// Ledger files go in subdirectories of this.
    pub data_dir: PathBuf,
    /// Broker connections of the load generator.
    pub clients: usize,
    /// Closed loop: requests in flight per connection.
    pub window: usize,
    pub progress: bool,
    /// Records the daemon's own timings during every closed-loop run.
    pub timings: Option<std::sync::Arc<timings::Timings>>,
    /// `plugins.memory_reset` of every daemon configuration.
    pub memory_reset: wasmpay_plugin::MemoryReset,
    /// `plugins.pooling_slots` of every daemon configuration, where set.
    pub pooling_slots: Option<u32>,
    /// `broker.packets_per_write_max` of every daemon configuration (and the
    /// ceiling's), where set.
    pub packets_per_write: Option<u16>,
    /// The load connections' packets per write.
    pub client_packets_per_write: u16,
    runs: AtomicU64,
}

impl Bench {
    pub fn new(
        address: String,
        server_runtime: tokio::runtime::Handle,
        data_dir: PathBuf,
        clients: usize,
        window: usize,
        progress: bool,
    ) -> Self {
        Self {
            address,
            server_runtime,
            data_dir,
            clients,
            window,
            progress,
            timings: None,
            memory_reset: wasmpay_plugin::MemoryReset::default(),
            pooling_slots: None,
            packets_per_write: None,
            client_packets_per_write: wasmpay::mqtt::GATHER_PACKETS,
            runs: AtomicU64::new(0),
        }
    }

    /// A name no earlier run of this bench used: client ids and request ids
    /// must not collide across runs on one broker and one ledger.
    pub fn fresh_tag(&self, base: &str) -> String {
        format!("{base}{}", self.runs.fetch_add(1, Ordering::Relaxed))
    }

    /// The daemon configuration for a new ledger named `tag`.
    pub fn config(&self, tag: &str) -> anyhow::Result<wasmpay::Config> {
        let dir = self.data_dir.join(tag);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut config = server::daemon_config(
            &self.address,
            &format!("bench-{tag}"),
            &dir.join("wasmpay.db"),
        );
        config.plugins.memory_reset = self.memory_reset;
        if let Some(slots) = self.pooling_slots {
            config.plugins.pooling_slots = slots;
        }
        if let Some(packets) = self.packets_per_write {
            config.broker.packets_per_write_max = packets;
        }
        Ok(config)
    }

    /// Starts `variant` with `config` and waits until it answers; returns
    /// the server and how long it took from start to first reply.
    pub async fn start(
        &self,
        variant: Variant,
        config: wasmpay::Config,
        merchants: u64,
    ) -> anyhow::Result<(Server, Duration)> {
        let started = Instant::now();
        let server = Server::start(&self.server_runtime, variant, config, merchants);
        let tag = self.fresh_tag("probe");
        let request: Generator = if variant.has_ledger() {
            world::status(&tag)
        } else {
            world::payments(&tag, 1, 1)
        };
        let answered = load::probe(
            &self.address,
            variant.name().split(' ').next().unwrap_or("server"),
            request,
            Duration::from_secs(120),
        )
        .await?;
        Ok((server, answered.saturating_duration_since(started)))
    }

    /// Opens the accounts of `users` users and `merchants` merchants and
    /// funds the users, over the admin topics; with `upload`, every
    /// merchant uploads the `fee` plugin and activates it.
    pub async fn setup(&self, users: u64, merchants: u64, upload: bool) -> anyhow::Result<()> {
        let tag = self.fresh_tag("setup");
        self.request_all(
            "open accounts",
            world::open_accounts(&tag, users),
            users + merchants,
        )
        .await?;
        self.request_all("deposits", world::deposits(&tag), users)
            .await?;
        if upload {
            self.upload_plugins(world::fee_uploads(merchants)).await?;
        }
        Ok(())
    }

    /// Every upload of `uploads` over MQTT, each version then active. A
    /// merchant that uploads again gets a new version, which also clears a
    /// quarantine of its previous one.
    pub async fn upload_plugins(&self, uploads: Vec<world::PluginUpload>) -> anyhow::Result<()> {
        let tag = self.fresh_tag("upload");
        let merchants: Vec<String> = uploads.iter().map(|u| u.merchant.clone()).collect();
        let total = uploads.len() as u64;
        let uploaded = self
            .request_all("plugin uploads", world::uploads(&tag, uploads), total)
            .await?;
        // Activate what the upload left inactive (the protocol says an
        // upload does not activate; the daemon may do it already).
        let mut inactive = Vec::new();
        for kept in &uploaded.kept {
            let reply: serde_json::Value = serde_json::from_slice(&kept.payload)?;
            let result = &reply["result"];
            let version = result["plugin"]["version"]
                .as_u64()
                .context("upload reply names a version")?;
            if result["active"] != true {
                inactive.push((merchants[kept.k as usize].clone(), version));
            }
        }
        if !inactive.is_empty() {
            let count = inactive.len() as u64;
            self.request_all(
                "plugin activations",
                world::activations(&tag, inactive),
                count,
            )
            .await?;
        }
        Ok(())
    }

    /// Opens the accounts of merchants named `names` (no plugin yet).
    pub async fn open_merchants(&self, names: Vec<String>) -> anyhow::Result<()> {
        let tag = self.fresh_tag("merchants");
        let total = names.len() as u64;
        self.request_all(
            "open merchant accounts",
            world::open_merchant_accounts(&tag, names),
            total,
        )
        .await?;
        Ok(())
    }

    /// Sends every request of `generator` on one connection, in order, and
    /// fails unless every reply is ok.
    async fn request_all(
        &self,
        what: &str,
        generator: Generator,
        total: u64,
    ) -> anyhow::Result<Outcome> {
        let plan = Plan {
            label: self.fresh_tag("setup"),
            total,
            clients: 1,
            pacing: Pacing::Closed { window: 64 },
            expect_ok: true,
            keep_replies: true,
            progress: false,
            packets_per_write: self.client_packets_per_write,
        };
        let outcome = load::run(&self.address, &plan, generator).await?;
        anyhow::ensure!(
            outcome.complete(),
            "{what}: {} of {total} answered, {} ok; failures {:?}, errors {:?}",
            outcome.replies,
            outcome.ok,
            outcome.failures,
            outcome.errors
        );
        Ok(outcome)
    }

    /// Drives `total` requests of `generator` paced by `pacing` on all the
    /// load connections.
    pub async fn drive(
        &self,
        label: &str,
        generator: Generator,
        total: u64,
        pacing: Pacing,
        expect_ok: bool,
    ) -> anyhow::Result<Outcome> {
        let plan = Plan {
            label: label.to_owned(),
            total,
            clients: self.clients,
            pacing,
            expect_ok,
            keep_replies: false,
            progress: self.progress,
            packets_per_write: self.client_packets_per_write,
        };
        load::run(&self.address, &plan, generator).await
    }

    /// Starts `variant` on a new ledger, sets up `users` and `merchants`
    /// (the daemon's merchants upload the plugin), and returns it serving.
    pub async fn ready(
        &self,
        variant: Variant,
        users: u64,
        merchants: u64,
    ) -> anyhow::Result<Server> {
        let tag = self.fresh_tag(variant.name().split(' ').next().unwrap_or("server"));
        self.ready_with(variant, self.config(&tag)?, users, merchants)
            .await
    }

    /// `ready` with a configuration of the caller's.
    pub async fn ready_with(
        &self,
        variant: Variant,
        config: wasmpay::Config,
        users: u64,
        merchants: u64,
    ) -> anyhow::Result<Server> {
        let (server, _) = self.start(variant, config, merchants).await?;
        if variant.has_ledger() {
            self.setup(users, merchants, variant.uploads_plugins())
                .await?;
        }
        Ok(server)
    }

    /// `ready`, then `payments` payments at the closed-loop window, then a
    /// graceful stop.
    pub async fn closed_loop(
        &self,
        variant: Variant,
        payments: u64,
        users: u64,
        merchants: u64,
    ) -> anyhow::Result<Outcome> {
        let server = self.ready(variant, users, merchants).await?;
        let tag = self.fresh_tag("pay");
        if let Some(timings) = &self.timings {
            timings.start();
        }
        let mut outcome = self
            .drive(
                variant.name(),
                world::payments(&tag, users, merchants),
                payments,
                Pacing::Closed {
                    window: self.window,
                },
                variant.has_ledger(),
            )
            .await?;
        if let Some(timings) = &self.timings {
            outcome.timings = Some(timings.stop());
        }
        server.stop().await?;
        Ok(outcome)
    }
}

/// Whose code the merchants' plugins run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Every merchant runs the `fee` component with its own configuration:
    /// one upload shared by all, which the daemon loads once.
    Shared,
    /// Every merchant's component has bytes of its own (the `fee`
    /// component with a custom section naming the merchant), so the daemon
    /// loads each apart: as if each had written its own rules.
    Distinct,
}

/// Writes `merchants` merchants' plugin versions straight into a new ledger
/// at `db`, as the daemon's upload path would (the component, its
/// precompiled artifact for this engine, the merchant's version with its own
/// configuration, activated), compiling the `fee` component once instead of
/// a thousand times. The daemon then loads them at start like any restart.
///
/// With [`Code::Distinct`], each merchant's component differs only in a
/// custom section, which compiles to the same native code: its artifact is
/// stored under its own hash from that one compile, and the daemon loads
/// each as it would a different component.
pub fn seed_plugins(
    db: &std::path::Path,
    limits: wasmpay_plugin::Limits,
    merchants: u64,
    code: Code,
) -> anyhow::Result<()> {
    use sha2::Digest as _;
    use wasmpay_domain::MerchantId;
    let runtime = wasmpay_plugin::Runtime::new(limits)?;
    let compiled = runtime.compile(wasmpay_plugin_artifacts::FEE)?;
    let options = wasmpay_ledger::LedgerOptions {
        // Seeding only: the daemon reopens the file with `full`.
        synchronous: wasmpay_ledger::Synchronous::Normal,
        ..wasmpay_ledger::LedgerOptions::default()
    };
    let mut ledger = wasmpay_ledger::Ledger::open(db, options)?;
    let engine = runtime.engine_hash();
    ledger.plugin_store_artifact(&compiled.sha256, &engine, &compiled.artifact)?;
    let at_ms = wasmpay::handlers::now_ms();
    for j in 0..merchants {
        let merchant = MerchantId::new(world::merchant(j))?;
        let (wasm, sha256) = match code {
            Code::Shared => (
                wasmpay_plugin_artifacts::FEE.to_vec(),
                compiled.sha256.clone(),
            ),
            Code::Distinct => {
                let wasm = with_custom_section(wasmpay_plugin_artifacts::FEE, merchant.as_str());
                let sha256 = hex::encode(sha2::Sha256::digest(&wasm));
                ledger.plugin_store_artifact(&sha256, &engine, &compiled.artifact)?;
                (wasm, sha256)
            }
        };
        let info = ledger.plugin_store(&merchant, &wasm, &sha256, &world::fee_config(j), at_ms)?;
        ledger.plugin_activate(&merchant, info.version, at_ms)?;
    }
    Ok(())
}

/// `wasm` with a custom section `wasmpay-bench` holding `text` appended: a
/// component (or module) may end with custom sections, which change its
/// bytes and not its meaning.
fn with_custom_section(wasm: &[u8], text: &str) -> Vec<u8> {
    use wasm_encoder::{Encode as _, Section as _};
    let section = wasm_encoder::CustomSection {
        name: "wasmpay-bench".into(),
        data: text.as_bytes().into(),
    };
    let mut out = wasm.to_vec();
    out.push(section.id());
    section.encode(&mut out);
    out
}
