//! The client commands: arguments to one request, sent over MQTT 5, and the
//! reply printed for people (or as it arrived, with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use wasmpay_domain::{Currency, MerchantId, Money, PaymentId, RequestId, SubAccount, UserId};
use wasmpay_protocol::{Principal, UPLOAD_CONFIG_PROPERTY_PREFIX, UPLOAD_ID_PROPERTY, WASM_MAGIC};

use super::client::{Client, ClientError, Endpoint};
use super::render::{self, Kind};
use super::tools::parse_pair;
use super::{EXIT_OK, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_USAGE};
use crate::tls::TlsFiles;

/// How to reach the broker; every client command takes these.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// The MQTT broker the daemon listens on.
    #[arg(
        long,
        env = "WASMPAY_BROKER",
        default_value = "127.0.0.1:1883",
        value_name = "HOST:PORT",
        help_heading = "Connection"
    )]
    pub broker: String,
    /// Broker login, for a broker that requires one (config/mosquitto/):
    /// the name of the principal you act as.
    #[arg(long, env = "WASMPAY_USERNAME", help_heading = "Connection")]
    pub username: Option<String>,
    /// Broker password.
    #[arg(
        long,
        env = "WASMPAY_PASSWORD",
        hide_env_values = true,
        help_heading = "Connection"
    )]
    pub password: Option<String>,
    /// Talk TLS to the broker, trusting the platform's CA certificates (or
    /// --ca-file's).
    #[arg(
        long,
        env = "WASMPAY_TLS",
        value_parser = clap::builder::FalseyValueParser::new(),
        help_heading = "Connection"
    )]
    pub tls: bool,
    /// PEM bundle of the CA certificates that may sign the broker's.
    #[arg(
        long,
        env = "WASMPAY_CA_FILE",
        requires = "tls",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for a broker that requires one (with
    /// --key-file).
    #[arg(
        long,
        env = "WASMPAY_CERT_FILE",
        requires = "tls",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(
        long,
        env = "WASMPAY_KEY_FILE",
        requires = "tls",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub key_file: Option<PathBuf>,
    /// How long to wait for the broker, then for the reply.
    #[arg(
        long,
        default_value_t = 10_000,
        value_name = "MS",
        help_heading = "Connection"
    )]
    pub timeout_ms: u64,
}

impl Conn {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.broker.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The TLS files with `--tls`; `None` is plain TCP.
    pub fn tls(&self) -> Option<TlsFiles> {
        self.tls.then(|| TlsFiles {
            ca: self.ca_file.clone(),
            client_cert: self.cert_file.clone(),
            client_key: self.key_file.clone(),
        })
    }
}

/// The request id and output format, and the connection.
#[derive(Debug, Args)]
pub struct Common {
    /// The request id, the idempotency key: the same id is answered again,
    /// never applied twice. Generated (and printed) when absent; pass it
    /// again to retry safely.
    #[arg(long)]
    id: Option<RequestId>,
    /// Print the reply exactly as it arrived (one JSON object) instead of
    /// text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// An amount and its currency, as two words: `4.20 EUR`.
#[derive(Debug, Args)]
pub struct AmountArgs {
    /// A plain decimal: 4.20, 100, 0.5. Never more decimals than the
    /// currency has (EUR 2, JPY 0).
    amount: String,
    /// An ISO 4217 code: EUR, USD, JPY.
    currency: Currency,
}

impl AmountArgs {
    fn check(&self) -> Result<(), String> {
        check_amount(&self.amount, self.currency)
    }
}

fn parse_sub_account(text: &str) -> Result<String, String> {
    SubAccount::new(text)
        .map(|a| a.as_str().to_owned())
        .map_err(|e| e.to_string())
}

fn check_amount(amount: &str, currency: Currency) -> Result<(), String> {
    let money = Money::parse(amount, currency).map_err(|e| format!("amount `{amount}`: {e}"))?;
    money
        .positive()
        .map_err(|_| format!("amount `{amount}`: must be more than zero"))?;
    Ok(())
}

/// A user's or a merchant's own accounts.
#[derive(Debug, Args)]
pub struct Whose {
    /// Act as this user.
    #[arg(
        long,
        conflicts_with = "merchant",
        required_unless_present = "merchant"
    )]
    user: Option<UserId>,
    /// Act as this merchant.
    #[arg(long)]
    merchant: Option<MerchantId>,
}

impl Whose {
    fn principal(&self) -> Principal {
        match (&self.user, &self.merchant) {
            (Some(user), _) => Principal::User(user.clone()),
            (None, Some(merchant)) => Principal::Merchant(merchant.clone()),
            (None, None) => unreachable!("clap requires one of --user, --merchant"),
        }
    }
}

#[derive(Debug, Args)]
pub struct PayArgs {
    /// The paying user (you).
    #[arg(long)]
    user: UserId,
    /// The merchant paid.
    #[arg(long)]
    merchant: MerchantId,
    #[command(flatten)]
    amount: AmountArgs,
    /// A note for the merchant.
    #[arg(long)]
    memo: Option<String>,
    /// Metadata for the merchant's rules, `key=value` (repeatable):
    /// `--meta coupon=WELCOME10`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_pair)]
    metadata: Vec<(String, String)>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    #[command(flatten)]
    pay: PayArgs,
    /// Seconds until the hold lapses if not captured (the daemon's default,
    /// one day, when absent).
    #[arg(long, value_name = "SECONDS")]
    expires_in_s: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    whose: Whose,
    /// Only this currency.
    #[arg(long)]
    currency: Option<Currency>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    whose: Whose,
    /// Only this currency.
    #[arg(long)]
    currency: Option<Currency>,
    /// Older entries: the `next` cursor printed under the previous page.
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Entries per page (the daemon's default, 50, when absent).
    #[arg(long)]
    limit: Option<u32>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The merchant holding the payment (you).
    #[arg(long)]
    merchant: MerchantId,
    /// The hold, from the authorize reply or notification.
    payment_id: PaymentId,
    /// How much to take; the whole hold when absent.
    #[arg(requires = "currency")]
    amount: Option<String>,
    /// The hold's currency, with AMOUNT.
    currency: Option<Currency>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct VoidArgs {
    /// The merchant holding the payment (you).
    #[arg(long)]
    merchant: MerchantId,
    /// The hold to release.
    payment_id: PaymentId,
    /// Why, for the payer's history.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct RefundArgs {
    /// The merchant that was paid (you).
    #[arg(long)]
    merchant: MerchantId,
    /// The payment to refund.
    payment_id: PaymentId,
    #[command(flatten)]
    amount: AmountArgs,
    /// Why, for the payer's history.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct PayoutArgs {
    /// The merchant paying out (you).
    #[arg(long)]
    merchant: MerchantId,
    #[command(flatten)]
    amount: AmountArgs,
    /// The merchant's own account to pay out from (`tips`); `main` when
    /// absent.
    #[arg(long, value_parser = parse_sub_account)]
    account: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct OpenAccountArgs {
    #[command(flatten)]
    whose: Whose,
    /// The account's currency.
    currency: Currency,
    /// How far below zero the account may go (none when absent).
    #[arg(long, value_name = "AMOUNT")]
    overdraft_limit: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct DepositArgs {
    /// The user credited.
    #[arg(long)]
    user: UserId,
    #[command(flatten)]
    amount: AmountArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Pay a merchant now, as a user: `wasmpay pay --user alice --merchant
    /// m-shop 4.20 EUR`.
    Pay(PayArgs),
    /// Hold money for a merchant to capture or void later, as a user.
    Authorize(AuthorizeArgs),
    /// Balances of a user's or merchant's accounts (`--user alice` or
    /// `--merchant m-shop`).
    Balance(BalanceArgs),
    /// Entries of a user's or merchant's accounts, newest first.
    History(HistoryArgs),
    /// Take all or part of a hold, as its merchant.
    Capture(CaptureArgs),
    /// Release a hold without taking anything, as its merchant.
    Void(VoidArgs),
    /// Return all or part of a payment, as its merchant.
    Refund(RefundArgs),
    /// Move money out of wasmpay from a merchant's account.
    Payout(PayoutArgs),
    /// Open an account for a user or merchant (operator).
    OpenAccount(OpenAccountArgs),
    /// Credit money arriving from outside to a user's account (operator).
    Deposit(DepositArgs),
    /// The daemon's version and uptime (operator).
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The merchant whose rules these are (you).
    #[arg(long)]
    merchant: MerchantId,
    /// The component (.wasm), e.g. built from plugins/examples/fee.
    file: PathBuf,
    /// A configuration entry the rules read, `key=value` (repeatable):
    /// `--config fee_bps=290 --config fee_fixed.EUR=0.30`.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    config: Vec<(String, String)>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The merchant (you).
    #[arg(long)]
    merchant: MerchantId,
    /// The version to make active, from `plugin upload` or `plugin list`.
    version: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct MerchantOnlyArgs {
    /// The merchant (you).
    #[arg(long)]
    merchant: MerchantId,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
pub enum PluginClientCmd {
    /// Upload a new version of a merchant's rules (a wasm component), with
    /// its configuration; the daemon compiles and checks it.
    Upload(UploadArgs),
    /// Make a stored version the one that decides, without a restart.
    Activate(ActivateArgs),
    /// Go back to the version active before the current one.
    Rollback(MerchantOnlyArgs),
    /// The merchant's stored versions and which one is active.
    List(MerchantOnlyArgs),
}

/// Either kind of client command.
#[derive(Debug)]
pub enum Command {
    Client(ClientCmd),
    Plugin(PluginClientCmd),
}

impl From<ClientCmd> for Command {
    fn from(cmd: ClientCmd) -> Self {
        Self::Client(cmd)
    }
}

impl From<PluginClientCmd> for Command {
    fn from(cmd: PluginClientCmd) -> Self {
        Self::Plugin(cmd)
    }
}

/// One request, ready to send.
struct Prepared {
    principal: Principal,
    /// The topic's last segments: `pay`, `plugin/upload`, `accounts/open`.
    action: &'static str,
    payload: Vec<u8>,
    user_properties: Vec<(String, String)>,
    kind: Kind,
}

/// Adds `key` to `object` when `value` is present.
fn put(object: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        object.insert(key.to_owned(), value.into());
    }
}

fn payment_body(id: &str, pay: &PayArgs) -> Result<Map<String, Value>, String> {
    pay.amount.check()?;
    let mut body = Map::new();
    body.insert("id".into(), id.into());
    body.insert("merchant".into(), pay.merchant.to_string().into());
    body.insert("amount".into(), pay.amount.amount.clone().into());
    body.insert("currency".into(), pay.amount.currency.code().into());
    put(&mut body, "memo", pay.memo.clone());
    if !pay.metadata.is_empty() {
        let metadata: Map<String, Value> = pay
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        body.insert("metadata".into(), Value::Object(metadata));
    }
    Ok(body)
}

fn json_bytes(body: Map<String, Value>) -> Vec<u8> {
    Value::Object(body).to_string().into_bytes()
}

/// The request's id, and whether it was generated here.
fn request_id(common: &Common) -> (String, bool) {
    match &common.id {
        Some(id) => (id.to_string(), false),
        None => (super::new_request_id(), true),
    }
}

/// Builds the request for `cmd` with request id `id`.
fn prepare(cmd: &Command, id: &str) -> Result<Prepared, String> {
    let user = |u: &UserId| Principal::User(u.clone());
    let merchant = |m: &MerchantId| Principal::Merchant(m.clone());
    let mut body = Map::new();
    body.insert("id".into(), id.into());
    let prepared = match cmd {
        Command::Client(ClientCmd::Pay(pay)) => Prepared {
            principal: user(&pay.user),
            action: "pay",
            payload: json_bytes(payment_body(id, pay)?),
            user_properties: Vec::new(),
            kind: Kind::Payment,
        },
        Command::Client(ClientCmd::Authorize(auth)) => {
            let mut body = payment_body(id, &auth.pay)?;
            put(&mut body, "expires_in_s", auth.expires_in_s);
            Prepared {
                principal: user(&auth.pay.user),
                action: "authorize",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::Payment,
            }
        }
        Command::Client(ClientCmd::Balance(args)) => {
            put(&mut body, "currency", args.currency.map(|c| c.code()));
            Prepared {
                principal: args.whose.principal(),
                action: "balance",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::Balance,
            }
        }
        Command::Client(ClientCmd::History(args)) => {
            put(&mut body, "currency", args.currency.map(|c| c.code()));
            put(&mut body, "after", args.after.clone());
            put(&mut body, "limit", args.limit);
            Prepared {
                principal: args.whose.principal(),
                action: "history",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::History,
            }
        }
        Command::Client(ClientCmd::Capture(args)) => {
            body.insert("payment_id".into(), args.payment_id.to_string().into());
            if let (Some(amount), Some(currency)) = (&args.amount, args.currency) {
                check_amount(amount, currency)?;
                body.insert("amount".into(), amount.clone().into());
                body.insert("currency".into(), currency.code().into());
            }
            Prepared {
                principal: merchant(&args.merchant),
                action: "capture",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::Capture,
            }
        }
        Command::Client(ClientCmd::Void(args)) => {
            body.insert("payment_id".into(), args.payment_id.to_string().into());
            put(&mut body, "reason", args.reason.clone());
            Prepared {
                principal: merchant(&args.merchant),
                action: "void",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::Void,
            }
        }
        Command::Client(ClientCmd::Refund(args)) => {
            args.amount.check()?;
            body.insert("payment_id".into(), args.payment_id.to_string().into());
            body.insert("amount".into(), args.amount.amount.clone().into());
            body.insert("currency".into(), args.amount.currency.code().into());
            put(&mut body, "reason", args.reason.clone());
            Prepared {
                principal: merchant(&args.merchant),
                action: "refund",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::Refund,
            }
        }
        Command::Client(ClientCmd::Payout(args)) => {
            args.amount.check()?;
            body.insert("amount".into(), args.amount.amount.clone().into());
            body.insert("currency".into(), args.amount.currency.code().into());
            put(&mut body, "account", args.account.clone());
            Prepared {
                principal: merchant(&args.merchant),
                action: "payout",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::Payout,
            }
        }
        Command::Client(ClientCmd::OpenAccount(args)) => {
            let owner = match args.whose.principal() {
                Principal::User(u) => json!({"user": u.to_string()}),
                Principal::Merchant(m) => json!({"merchant": m.to_string()}),
                Principal::Admin => unreachable!("whose is a user or a merchant"),
            };
            body.insert("owner".into(), owner);
            body.insert("currency".into(), args.currency.code().into());
            if let Some(limit) = &args.overdraft_limit {
                Money::parse(limit, args.currency)
                    .map_err(|e| format!("--overdraft-limit `{limit}`: {e}"))?;
                body.insert("overdraft_limit".into(), limit.clone().into());
            }
            Prepared {
                principal: Principal::Admin,
                action: "accounts/open",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::OpenAccount,
            }
        }
        Command::Client(ClientCmd::Deposit(args)) => {
            args.amount.check()?;
            body.insert("user".into(), args.user.to_string().into());
            body.insert("amount".into(), args.amount.amount.clone().into());
            body.insert("currency".into(), args.amount.currency.code().into());
            Prepared {
                principal: Principal::Admin,
                action: "deposit",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::Deposit,
            }
        }
        Command::Client(ClientCmd::Status(_)) => Prepared {
            principal: Principal::Admin,
            action: "status",
            payload: json_bytes(body),
            user_properties: Vec::new(),
            kind: Kind::Status,
        },
        Command::Plugin(PluginClientCmd::Upload(args)) => {
            let wasm = std::fs::read(&args.file)
                .map_err(|e| format!("reading {}: {e}", args.file.display()))?;
            if !wasm.starts_with(WASM_MAGIC) {
                return Err(format!(
                    "{} is not WebAssembly (it does not start with \\0asm): build the plugin with `cargo build --release --target wasm32-wasip2` (see plugins/README.md)",
                    args.file.display()
                ));
            }
            // The binary form: the component as the payload, the id and the
            // configuration as MQTT 5 user properties (no base64).
            let mut user_properties = vec![(UPLOAD_ID_PROPERTY.to_owned(), id.to_owned())];
            user_properties.extend(
                args.config
                    .iter()
                    .map(|(k, v)| (format!("{UPLOAD_CONFIG_PROPERTY_PREFIX}{k}"), v.clone())),
            );
            Prepared {
                principal: merchant(&args.merchant),
                action: "plugin/upload",
                payload: wasm,
                user_properties,
                kind: Kind::PluginUpload,
            }
        }
        Command::Plugin(PluginClientCmd::Activate(args)) => {
            body.insert("version".into(), args.version.into());
            Prepared {
                principal: merchant(&args.merchant),
                action: "plugin/activate",
                payload: json_bytes(body),
                user_properties: Vec::new(),
                kind: Kind::PluginActive,
            }
        }
        Command::Plugin(PluginClientCmd::Rollback(args)) => Prepared {
            principal: merchant(&args.merchant),
            action: "plugin/rollback",
            payload: json_bytes(body),
            user_properties: Vec::new(),
            kind: Kind::PluginActive,
        },
        Command::Plugin(PluginClientCmd::List(args)) => Prepared {
            principal: merchant(&args.merchant),
            action: "plugin/list",
            payload: json_bytes(body),
            user_properties: Vec::new(),
            kind: Kind::PluginList,
        },
    };
    Ok(prepared)
}

fn common(cmd: &Command) -> &Common {
    match cmd {
        Command::Client(ClientCmd::Pay(a)) => &a.common,
        Command::Client(ClientCmd::Authorize(a)) => &a.pay.common,
        Command::Client(ClientCmd::Balance(a)) => &a.common,
        Command::Client(ClientCmd::History(a)) => &a.common,
        Command::Client(ClientCmd::Capture(a)) => &a.common,
        Command::Client(ClientCmd::Void(a)) => &a.common,
        Command::Client(ClientCmd::Refund(a)) => &a.common,
        Command::Client(ClientCmd::Payout(a)) => &a.common,
        Command::Client(ClientCmd::OpenAccount(a)) => &a.common,
        Command::Client(ClientCmd::Deposit(a)) => &a.common,
        Command::Client(ClientCmd::Status(a)) => &a.common,
        Command::Plugin(PluginClientCmd::Upload(a)) => &a.common,
        Command::Plugin(PluginClientCmd::Activate(a)) => &a.common,
        Command::Plugin(PluginClientCmd::Rollback(a)) => &a.common,
        Command::Plugin(PluginClientCmd::List(a)) => &a.common,
    }
}

/// Sends the command's request, waits for the reply and prints it.
pub fn run(cmd: Command) -> ExitCode {
    let common = common(&cmd);
    let (id, generated) = request_id(common);
    let prepared = match prepare(&cmd, &id) {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let conn = &common.conn;
    let result = runtime.block_on(async {
        let client = Client::connect_with_tls(
            &conn.endpoint(),
            conn.tls().as_ref(),
            prepared.principal.clone(),
            conn.timeout(),
        )
        .await?;
        let reply = client
            .request(
                prepared.action,
                prepared.payload,
                prepared.user_properties,
                conn.timeout(),
            )
            .await;
        client.close().await;
        reply
    });
    match result {
        Ok(reply) => {
            if common.json {
                println!("{}", String::from_utf8_lossy(&reply.raw));
            } else if reply.ok() {
                print!("{}", render::success(prepared.kind, &reply.json));
                if generated {
                    println!("request id {id}");
                }
            } else {
                eprint!("{}", render::refusal(&reply.json, &id));
            }
            ExitCode::from(if reply.ok() { EXIT_OK } else { EXIT_REFUSED })
        }
        Err(error) => {
            eprintln!("error: {error}");
            if error.maybe_applied() {
                eprintln!(
                    "The request (id {id}) may have been applied. Retry with the same id; it is never applied twice:\n  {}",
                    retry_command(&id)
                );
            }
            let code = match error {
                ClientError::Timeout { .. } => EXIT_TIMEOUT,
                _ => EXIT_USAGE,
            };
            if matches!(error, ClientError::Timeout { .. }) {
                eprintln!(
                    "Is the daemon running? Start it with `wasmpay run`, on the broker at {}.",
                    conn.broker
                );
            }
            ExitCode::from(code)
        }
    }
}

/// This command line again, with `--id <id>` (replacing any `--id`).
fn retry_command(id: &str) -> String {
    let mut words = Vec::new();
    let mut args = std::env::args();
    let program = args.next().unwrap_or_else(|| "wasmpay".to_owned());
    let program = std::path::Path::new(&program).file_name().map_or_else(
        || "wasmpay".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    words.push(program);
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
            continue;
        }
        if arg == "--id" {
            skip = true;
            continue;
        }
        if arg.starts_with("--id=") {
            continue;
        }
        words.push(arg);
    }
    words.push("--id".to_owned());
    words.push(id.to_owned());
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/=@%+".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
