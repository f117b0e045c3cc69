//! The wasmpay wire protocol over MQTT: pure, no I/O.
//!
//! The MQTT layer hands each message to [`decode`], which turns topic,
//! payload and MQTT 5 user properties into a typed [`Request`] (or says
//! precisely why not, as a [`Rejection`] with a stable [`ErrorCode`]). The
//! pipeline answers with [`encode_ok`] / [`encode_error`] and tells merchants
//! with a [`Notification`] on [`notification_topic`]. `docs/PROTOCOL.md` is
//! the reference for clients; this crate is its only implementation.
//!
//! The parts, in the order a message meets them:
//! - [`topic`]: who asks and for what; subscriptions and output topics.
//! - [`limits`]: every bound on client input, with its default.
//! - `wire`: payload schemas as they travel (strict JSON).
//! - [`decode()`]: the checks, from topic to domain types.
//! - [`command`]: the typed requests the pipeline receives.
//! - [`reply`]: reply envelopes, result structs, notifications, dead letters.
//! - [`error`]: the error-code catalogue.
#![deny(clippy::float_arithmetic)]

pub mod command;
mod decode;
pub mod error;
pub mod limits;
pub mod reply;
pub mod topic;
mod wire;

pub use command::{Command, Cursor, Owner, Request};
pub use decode::{
    Decoded, RequestProps, UPLOAD_CONFIG_PROPERTY_PREFIX, UPLOAD_ID_PROPERTY, WASM_MAGIC, decode,
};
pub use error::{ErrorCode, Rejection};
pub use limits::DecodeLimits;
pub use reply::{
    Amount, DeadLetter, Notification, NotificationEvent, PaymentResult, PaymentStatus, Reply,
    dead_letter_payload, encode_error, encode_ok,
};
pub use topic::{
    DEAD_LETTER_TOPIC, Principal, SUBSCRIPTIONS, TOPIC_PREFIX, notification_topic, reply_topic_for,
    response_topic_allowed,
};
