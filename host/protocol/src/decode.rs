//! `decode`: topic + payload (+ MQTT 5 user properties) to a typed request.
//!
//! The checks run cheapest and most fundamental first: the topic (who and
//! what), the payload's size, its encoding, its JSON shape, and then each
//! field into its domain type. The first failure is the answer; its code and
//! message come from here, so the pipeline only forwards them.

use std::collections::BTreeMap;

use base64::Engine as _;
use wasmpay_domain::{
    Currency, IdError, MerchantId, Money, MoneyError, PaymentId, RequestId, SubAccount, UserId,
};

use crate::command::{self, Command, Cursor, Owner, Request};
use crate::error::{ErrorCode, Rejection, SHOWN_BYTES_MAX, shown};
use crate::limits::DecodeLimits;
use crate::topic::{self, Action, Principal, Route};
use crate::wire::{self, StrictMap, WireAmount};

/// What the MQTT layer passes along besides topic and payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestProps {
    /// MQTT 5 user properties, in order. Only a binary plugin upload reads
    /// them (`id`, `config.<key>`); other requests ignore them, so tracing
    /// properties added by clients or brokers do no harm.
    pub user_properties: Vec<(String, String)>,
}

/// What a message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Request(Request),
    /// One of the host's own output topics (replies, notifications, dead
    /// letters), seen because a subscription matches it: neither answered
    /// nor dead-lettered.
    Ignore,
    Invalid(Rejection),
}

/// Every WebAssembly binary starts with these four bytes.
pub const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// The user property that carries a binary upload's request id.
pub const UPLOAD_ID_PROPERTY: &str = "id";
/// The prefix of user properties that carry a binary upload's configuration.
pub const UPLOAD_CONFIG_PROPERTY_PREFIX: &str = "config.";

/// Decodes one message. Pure and total: any bytes give an answer, never a
/// panic, so it can be fuzzed directly.
pub fn decode(topic: &str, payload: &[u8], props: &RequestProps, limits: &DecodeLimits) -> Decoded {
    let (principal, action) = match topic::route(topic) {
        Ok(Route::Request(principal, action)) => (principal, action),
        Ok(Route::Own) => return Decoded::Ignore,
        Err(rejection) => return Decoded::Invalid(rejection),
    };
    let context = Context {
        principal: &principal,
        limits,
    };
    match context.payload(action, payload, props) {
        Ok((id, command)) => Decoded::Request(Request {
            principal,
            id,
            command,
        }),
        Err(mut rejection) => {
            rejection.reply_to = Some(principal);
            Decoded::Invalid(rejection)
        }
    }
}

struct Context<'a> {
    principal: &'a Principal,
    limits: &'a DecodeLimits,
}

type Decoding = Result<(RequestId, Command), Rejection>;

impl Context<'_> {
    fn payload(&self, action: Action, payload: &[u8], props: &RequestProps) -> Decoding {
        let is_upload = action == Action::PluginUpload;
        if is_upload && payload.starts_with(WASM_MAGIC) {
            return self.binary_upload(payload, props);
        }
        let bytes_max = if is_upload {
            self.limits.upload_payload_bytes_max()
        } else {
            self.limits.payload_bytes_max
        };
        if payload.len() > bytes_max {
            // Parsing an oversized payload for its id is the work the limit
            // exists to avoid; MQTT 5 clients have correlation data instead.
            return Err(Rejection::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "payload is {} bytes; at most {bytes_max} are accepted on this topic",
                    payload.len()
                ),
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|error| {
            let expected = if is_upload {
                "a JSON object, or a binary component starting with \\0asm"
            } else {
                "a JSON object"
            };
            Rejection::new(
                ErrorCode::InvalidUtf8,
                format!(
                    "payload is not UTF-8 (invalid byte at offset {}); expected {expected}",
                    error.valid_up_to()
                ),
            )
        })?;
        self.json(action, text).map_err(|mut rejection| {
            rejection.id = wire::probe_id(text).filter(|id| RequestId::new(id.as_str()).is_ok());
            rejection
        })
    }

    fn json(&self, action: Action, text: &str) -> Decoding {
        let is_user = matches!(self.principal, Principal::User(_));
        match action {
            Action::Balance if is_user => {
                let w: wire::UserBalance = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.user.as_deref())?;
                let currency = optional_currency(w.currency.as_deref())?;
                Ok((id, Command::Balance(command::Balance { currency })))
            }
            Action::Balance => {
                let w: wire::MerchantBalance = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let currency = optional_currency(w.currency.as_deref())?;
                Ok((id, Command::Balance(command::Balance { currency })))
            }
            Action::Pay => {
                let w: wire::Pay = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.user.as_deref())?;
                let payment =
                    self.payment(&w.merchant, &w.amount, &w.currency, w.memo, w.metadata)?;
                Ok((id, Command::Pay(payment)))
            }
            Action::Authorize => {
                let w: wire::Authorize = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.user.as_deref())?;
                let payment =
                    self.payment(&w.merchant, &w.amount, &w.currency, w.memo, w.metadata)?;
                let expires_in_s = bounded(
                    "expires_in_s",
                    w.expires_in_s,
                    self.limits.hold_expires_in_s_default,
                    self.limits.hold_expires_in_s_max,
                    "seconds",
                )?;
                Ok((
                    id,
                    Command::Authorize(command::Authorize {
                        payment,
                        expires_in_s,
                    }),
                ))
            }
            Action::History if is_user => {
                let w: wire::UserHistory = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.user.as_deref())?;
                let history = self.history(w.currency.as_deref(), w.after, w.limit)?;
                Ok((id, Command::History(history)))
            }
            Action::History => {
                let w: wire::MerchantHistory = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let history = self.history(w.currency.as_deref(), w.after, w.limit)?;
                Ok((id, Command::History(history)))
            }
            Action::Capture => {
                let w: wire::Capture = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let payment_id = payment_id(&w.payment_id)?;
                let amount = match (w.amount, w.currency) {
                    (None, None) => None,
                    (Some(amount), Some(code)) => Some(positive(
                        "amount",
                        money("amount", &amount, currency(&code)?)?,
                    )?),
                    (Some(_), None) => return Err(missing("currency", "with `amount`")),
                    (None, Some(_)) => return Err(missing("amount", "with `currency`")),
                };
                Ok((
                    id,
                    Command::Capture(command::Capture { payment_id, amount }),
                ))
            }
            Action::Void => {
                let w: wire::Void = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let payment_id = payment_id(&w.payment_id)?;
                let reason = self.reason(w.reason)?;
                Ok((id, Command::Void(command::Void { payment_id, reason })))
            }
            Action::Refund => {
                let w: wire::Refund = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let payment_id = payment_id(&w.payment_id)?;
                let amount = positive(
                    "amount",
                    money("amount", &w.amount, currency(&w.currency)?)?,
                )?;
                let reason = self.reason(w.reason)?;
                Ok((
                    id,
                    Command::Refund(command::Refund {
                        payment_id,
                        amount,
                        reason,
                    }),
                ))
            }
            Action::Payout => {
                let w: wire::Payout = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let amount = positive(
                    "amount",
                    money("amount", &w.amount, currency(&w.currency)?)?,
                )?;
                let account = match w.account {
                    None => SubAccount::main(),
                    Some(account) => {
                        SubAccount::new(account).map_err(|error| invalid_id("account", &error))?
                    }
                };
                Ok((id, Command::Payout(command::Payout { amount, account })))
            }
            Action::PluginUpload => {
                let w: wire::PluginUpload = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let wasm = base64::engine::general_purpose::STANDARD
                    .decode(w.wasm_base64.as_bytes())
                    .map_err(|error| {
                        Rejection::new(
                            ErrorCode::InvalidUpload,
                            format!(
                                "field `wasm_base64`: not standard base64 with padding ({error})"
                            ),
                        )
                    })?;
                let config = self.config(w.config.map(|m| m.0).unwrap_or_default())?;
                self.component(wasm, config).map(|upload| (id, upload))
            }
            Action::PluginActivate => {
                let w: wire::PluginActivate = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let version = bounded("version", Some(w.version), 1, u32::MAX, "")?;
                Ok((
                    id,
                    Command::PluginActivate(command::PluginActivate { version }),
                ))
            }
            Action::PluginRollback | Action::PluginList => {
                let w: wire::MerchantBare = wire::parse(text)?;
                let id = request_id(&w.id)?;
                self.claim(w.merchant.as_deref())?;
                let command = if action == Action::PluginList {
                    Command::PluginList
                } else {
                    Command::PluginRollback
                };
                Ok((id, command))
            }
            Action::OpenAccount => {
                let w: wire::OpenAccount = wire::parse(text)?;
                let id = request_id(&w.id)?;
                let owner = match (w.owner.user, w.owner.merchant) {
                    (Some(user), None) => {
                        Owner::User(UserId::new(user).map_err(|e| invalid_id("owner.user", &e))?)
                    }
                    (None, Some(merchant)) => Owner::Merchant(
                        MerchantId::new(merchant).map_err(|e| invalid_id("owner.merchant", &e))?,
                    ),
                    _ => {
                        return Err(Rejection::new(
                            ErrorCode::InvalidValue,
                            "field `owner`: name exactly one of `user` or `merchant`, like {\"user\": \"alice\"}",
                        ));
                    }
                };
                let currency = currency(&w.currency)?;
                let overdraft_limit = match w.overdraft_limit {
                    None => Money::zero(currency),
                    Some(limit) => {
                        let limit = money("overdraft_limit", &limit, currency)?;
                        if limit.is_negative() {
                            return Err(Rejection::new(
                                ErrorCode::InvalidValue,
                                format!(
                                    "field `overdraft_limit`: {} is negative; it is how far below zero the account may go, \"0\" for none",
                                    limit.amount_string()
                                ),
                            ));
                        }
                        limit
                    }
                };
                Ok((
                    id,
                    Command::OpenAccount(command::OpenAccount {
                        owner,
                        currency,
                        overdraft_limit,
                    }),
                ))
            }
            Action::Deposit => {
                let w: wire::Deposit = wire::parse(text)?;
                let id = request_id(&w.id)?;
                let user = UserId::new(w.user).map_err(|e| invalid_id("user", &e))?;
                let amount = positive(
                    "amount",
                    money("amount", &w.amount, currency(&w.currency)?)?,
                )?;
                Ok((id, Command::Deposit(command::Deposit { user, amount })))
            }
            Action::Status => {
                let w: wire::Bare = wire::parse(text)?;
                Ok((request_id(&w.id)?, Command::Status))
            }
        }
    }

    /// Refuses a payload that names a principal other than the topic's.
    /// Naming the same one is allowed: clients ported from topic-less
    /// designs (like the PHP seed) send their own name.
    fn claim(&self, claimed: Option<&str>) -> Result<(), Rejection> {
        let Some(claimed) = claimed else {
            return Ok(());
        };
        let (field, actual) = match self.principal {
            Principal::User(user) => ("user", user.as_str()),
            Principal::Merchant(merchant) => ("merchant", merchant.as_str()),
            Principal::Admin => return Ok(()),
        };
        if claimed == actual {
            return Ok(());
        }
        Err(Rejection::new(
            ErrorCode::IdentityMismatch,
            format!(
                "field `{field}`: \"{}\" disagrees with the topic, which is {field} \"{actual}\"'s; omit the field, the topic says who you are",
                shown(claimed, SHOWN_BYTES_MAX)
            ),
        ))
    }

    fn payment(
        &self,
        merchant: &str,
        amount: &WireAmount,
        currency_code: &str,
        memo: Option<String>,
        metadata: Option<StrictMap>,
    ) -> Result<command::Payment, Rejection> {
        let merchant = MerchantId::new(merchant).map_err(|e| invalid_id("merchant", &e))?;
        let amount = positive("amount", money("amount", amount, currency(currency_code)?)?)?;
        let memo = memo
            .map(|memo| text("memo", memo, self.limits.memo_bytes_max))
            .transpose()?;
        let metadata = string_map(
            "metadata",
            metadata.map(|m| m.0).unwrap_or_default(),
            self.limits.metadata_entries_max,
            self.limits.metadata_key_bytes_max,
            self.limits.metadata_value_bytes_max,
        )?;
        Ok(command::Payment {
            merchant,
            amount,
            memo,
            metadata,
        })
    }

    fn history(
        &self,
        currency_code: Option<&str>,
        after: Option<String>,
        limit: Option<u64>,
    ) -> Result<command::History, Rejection> {
        let currency = optional_currency(currency_code)?;
        let after = after
            .map(|after| {
                Cursor::new(after.as_str()).map_err(|rule| {
                    Rejection::new(
                        ErrorCode::InvalidValue,
                        format!(
                            "field `after`: \"{}\" is not a cursor; {rule}",
                            shown(&after, SHOWN_BYTES_MAX)
                        ),
                    )
                })
            })
            .transpose()?;
        let limit = bounded(
            "limit",
            limit,
            self.limits.history_limit_default,
            self.limits.history_limit_max,
            "entries",
        )?;
        Ok(command::History {
            currency,
            after,
            limit,
        })
    }

    fn reason(&self, reason: Option<String>) -> Result<Option<String>, Rejection> {
        reason
            .map(|reason| text("reason", reason, self.limits.reason_bytes_max))
            .transpose()
    }

    fn config(
        &self,
        config: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Rejection> {
        string_map(
            "config",
            config,
            self.limits.config_entries_max,
            self.limits.config_key_bytes_max,
            self.limits.config_value_bytes_max,
        )
    }

    /// A component sent as the raw payload, its id and configuration in
    /// MQTT 5 user properties: no base64 inflation for large uploads.
    fn binary_upload(&self, payload: &[u8], props: &RequestProps) -> Decoding {
        let mut ids = props
            .user_properties
            .iter()
            .filter(|(key, _)| key == UPLOAD_ID_PROPERTY)
            .map(|(_, value)| value);
        let id = ids.next();
        let valid_id = id.and_then(|id| RequestId::new(id.as_str()).ok());
        let with_id = |mut rejection: Rejection| {
            rejection.id = valid_id.as_ref().map(|id| id.to_string());
            rejection
        };
        if payload.len() > self.limits.upload_bytes_max {
            return Err(with_id(Rejection::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "component is {} bytes; at most {} are accepted",
                    payload.len(),
                    self.limits.upload_bytes_max
                ),
            )));
        }
        let Some(id) = id else {
            return Err(Rejection::new(
                ErrorCode::MissingField,
                format!(
                    "missing user property `{UPLOAD_ID_PROPERTY}`: a binary upload carries its request id as an MQTT 5 user property (without MQTT 5, send the JSON form with `wasm_base64`)"
                ),
            ));
        };
        if ids.next().is_some() {
            return Err(with_id(Rejection::new(
                ErrorCode::DuplicateField,
                format!("user property `{UPLOAD_ID_PROPERTY}` appears more than once"),
            )));
        }
        let id = request_id(id)?;
        let mut config = BTreeMap::new();
        for (key, value) in &props.user_properties {
            let Some(key) = key.strip_prefix(UPLOAD_CONFIG_PROPERTY_PREFIX) else {
                continue;
            };
            if config.insert(key.to_owned(), value.clone()).is_some() {
                return Err(with_id(Rejection::new(
                    ErrorCode::DuplicateField,
                    format!(
                        "user property `{UPLOAD_CONFIG_PROPERTY_PREFIX}{}` appears more than once",
                        shown(key, SHOWN_BYTES_MAX)
                    ),
                )));
            }
        }
        let config = self.config(config).map_err(with_id)?;
        self.component(payload.to_vec(), config)
            .map(|upload| (id, upload))
            .map_err(with_id)
    }

    /// Checks the bytes look like a component (not a core module), within
    /// the size limit. Whether it implements the plugin world is for the
    /// plugin module, which compiles it.
    fn component(
        &self,
        wasm: Vec<u8>,
        config: BTreeMap<String, String>,
    ) -> Result<Command, Rejection> {
        if wasm.len() > self.limits.upload_bytes_max {
            return Err(Rejection::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "component is {} bytes; at most {} are accepted",
                    wasm.len(),
                    self.limits.upload_bytes_max
                ),
            ));
        }
        component_header(&wasm)?;
        Ok(Command::PluginUpload(command::PluginUpload {
            wasm,
            config,
        }))
    }
}

/// A component's preamble is the magic, a 16-bit version and a 16-bit layer
/// (little-endian); layer 1 is a component, layer 0 a core module.
fn component_header(wasm: &[u8]) -> Result<(), Rejection> {
    let invalid = |message: &str| Rejection::new(ErrorCode::InvalidUpload, message.to_owned());
    if !wasm.starts_with(WASM_MAGIC) || wasm.len() < 8 {
        return Err(invalid(
            "not WebAssembly: a component starts with the bytes \\0asm and a version",
        ));
    }
    match u16::from_le_bytes([wasm[6], wasm[7]]) {
        1 => Ok(()),
        0 => Err(invalid(
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)",
        )),
        _ => Err(invalid("unknown WebAssembly layer: expected a component")),
    }
}

fn request_id(id: &str) -> Result<RequestId, Rejection> {
    RequestId::new(id).map_err(|e| invalid_id("id", &e))
}

fn payment_id(id: &str) -> Result<PaymentId, Rejection> {
    PaymentId::new(id).map_err(|e| invalid_id("payment_id", &e))
}

fn invalid_id(field: &str, error: &IdError) -> Rejection {
    Rejection::new(ErrorCode::InvalidId, format!("field `{field}`: {error}"))
}

fn missing(field: &str, why: &str) -> Rejection {
    Rejection::new(
        ErrorCode::MissingField,
        format!("missing field `{field}`: it is required {why}"),
    )
}

fn currency(code: &str) -> Result<Currency, Rejection> {
    Currency::parse(code).map_err(|_| {
        Rejection::new(
            ErrorCode::UnknownCurrency,
            format!(
                "field `currency`: unknown currency \"{}\"; expected an ISO 4217 code with a minor unit, like EUR or JPY",
                shown(code, SHOWN_BYTES_MAX)
            ),
        )
    })
}

fn optional_currency(code: Option<&str>) -> Result<Option<Currency>, Rejection> {
    code.map(currency).transpose()
}

/// An exact amount of `currency`, or the precise reason it is not one.
fn money(field: &str, amount: &WireAmount, currency: Currency) -> Result<Money, Rejection> {
    let text = match amount {
        WireAmount::Text(text) => text,
        WireAmount::Number(number) => {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                format!(
                    "field `{field}`: got the JSON number {}; send amounts as decimal strings like \"{}\", because JSON numbers are binary floats that lose money",
                    shown(number, SHOWN_BYTES_MAX),
                    shown(number, SHOWN_BYTES_MAX)
                ),
            ));
        }
    };
    let shown_text = shown(text, SHOWN_BYTES_MAX);
    let excess_precision = |exponent: u32| {
        Rejection::new(
            ErrorCode::ExcessPrecision,
            format!(
                "field `{field}`: {shown_text} has more decimals than {currency} allows ({exponent})"
            ),
        )
    };
    Money::parse(text, currency).map_err(|error| match error {
        MoneyError::ExcessPrecision { exponent, .. } => excess_precision(exponent),
        MoneyError::Overflow { .. } => Rejection::new(
            ErrorCode::AmountOverflow,
            format!(
                "field `{field}`: {shown_text} is too large for {currency} (at most {})",
                Money::from_minor(i64::MAX, currency).amount_string()
            ),
        ),
        _ => Rejection::new(
            ErrorCode::InvalidAmount,
            format!(
                "field `{field}`: \"{shown_text}\" is not a plain decimal like \"12.50\" (digits, optionally `.` and decimals; no `+`, exponent, spaces or separators)"
            ),
        ),
    })
}

fn positive(field: &str, amount: Money) -> Result<Money, Rejection> {
    amount.positive().map_err(|_| {
        Rejection::new(
            ErrorCode::AmountNotPositive,
            format!(
                "field `{field}`: must be greater than zero, got {}",
                amount.amount_string()
            ),
        )
    })
}

/// A whole number in `1..=max`, `default` when absent.
fn bounded(
    field: &str,
    value: Option<u64>,
    default: u32,
    max: u32,
    unit: &str,
) -> Result<u32, Rejection> {
    let Some(value) = value else {
        return Ok(default);
    };
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    if value == 0 {
        return Err(Rejection::new(
            ErrorCode::InvalidValue,
            format!("field `{field}`: must be at least 1{unit}"),
        ));
    }
    u32::try_from(value)
        .ok()
        .filter(|value| *value <= max)
        .ok_or_else(|| {
            Rejection::new(
                ErrorCode::LimitExceeded,
                format!("field `{field}`: {value} is more than the limit of {max}{unit}"),
            )
        })
}

fn text(field: &str, text: String, bytes_max: usize) -> Result<String, Rejection> {
    if text.len() > bytes_max {
        return Err(Rejection::new(
            ErrorCode::LimitExceeded,
            format!(
                "field `{field}`: {} bytes, at most {bytes_max} allowed",
                text.len()
            ),
        ));
    }
    Ok(text)
}

/// A string map within its bounds, keys following the id alphabet so that
/// they are safe in logs and in MQTT user property names.
fn string_map(
    field: &str,
    map: BTreeMap<String, String>,
    entries_max: usize,
    key_bytes_max: usize,
    value_bytes_max: usize,
) -> Result<BTreeMap<String, String>, Rejection> {
    if map.len() > entries_max {
        return Err(Rejection::new(
            ErrorCode::LimitExceeded,
            format!(
                "field `{field}`: {} entries, at most {entries_max} allowed",
                map.len()
            ),
        ));
    }
    for (key, value) in &map {
        if key.len() > key_bytes_max {
            return Err(Rejection::new(
                ErrorCode::LimitExceeded,
                format!(
                    "field `{field}`: key \"{}\" is {} bytes, at most {key_bytes_max} allowed",
                    shown(key, SHOWN_BYTES_MAX),
                    key.len()
                ),
            ));
        }
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !key_ok {
            return Err(Rejection::new(
                ErrorCode::InvalidValue,
                format!(
                    "field `{field}`: key \"{}\" must be 1 or more of A-Za-z0-9_.-",
                    shown(key, SHOWN_BYTES_MAX)
                ),
            ));
        }
        if value.len() > value_bytes_max {
            return Err(Rejection::new(
                ErrorCode::LimitExceeded,
                format!(
                    "field `{field}.{key}`: {} bytes, at most {value_bytes_max} allowed",
                    value.len()
                ),
            ));
        }
    }
    Ok(map)
}
