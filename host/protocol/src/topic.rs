//! Topics: who is asking (the principal) and for what (the action).
//!
//! Identity comes from the topic namespace alone; the broker's ACL makes
//! sure that only `alice` can publish under `wasmpay/v1/users/alice/`. So a
//! topic is parsed before anything in the payload is trusted, and the
//! principal it names is whom an error can be answered to.

use std::fmt;

use wasmpay_domain::{IdError, MerchantId, UserId};

use crate::error::{ErrorCode, Rejection, shown};

/// Every topic this protocol version uses starts with this.
pub const TOPIC_PREFIX: &str = "wasmpay/v1";

/// What the host subscribes to: every request topic. They also match the
/// host's own `replies` and `notifications` topics, which `decode` ignores.
pub const SUBSCRIPTIONS: [&str; 4] = [
    "wasmpay/v1/users/+/+",
    "wasmpay/v1/merchants/+/+",
    "wasmpay/v1/merchants/+/plugin/+",
    "wasmpay/v1/admin/#",
];

/// Where messages that cannot be answered (no valid principal in the topic)
/// are published, with the reason.
pub const DEAD_LETTER_TOPIC: &str = "wasmpay/v1/dead-letter";

/// The reply topic segment for clients without an MQTT 5 Response Topic.
const REPLIES: &str = "replies";
/// The merchant notification topic segment.
const NOTIFICATIONS: &str = "notifications";

/// Who sent a request, as the topic names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    User(UserId),
    Merchant(MerchantId),
    /// The operator: opens accounts, deposits money, asks for status.
    Admin,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(user) => write!(f, "user {user}"),
            Self::Merchant(merchant) => write!(f, "merchant {merchant}"),
            Self::Admin => f.write_str("admin"),
        }
    }
}

/// Where replies go for a client that gave no MQTT 5 Response Topic.
pub fn reply_topic_for(principal: &Principal) -> String {
    match principal {
        Principal::User(user) => format!("{TOPIC_PREFIX}/users/{user}/{REPLIES}"),
        Principal::Merchant(merchant) => format!("{TOPIC_PREFIX}/merchants/{merchant}/{REPLIES}"),
        Principal::Admin => format!("{TOPIC_PREFIX}/admin/{REPLIES}"),
    }
}

/// Whether the host may publish a reply to `response_topic`, the MQTT 5
/// Response Topic a client of `principal` gave. The host may publish
/// anywhere, so a client must not be able to steer a reply into someone
/// else's namespace (a forged "notification"); only the principal's own
/// reply topic and topics below it qualify. Otherwise the reply goes to
/// [`reply_topic_for`].
pub fn response_topic_allowed(principal: &Principal, response_topic: &str) -> bool {
    let own = reply_topic_for(principal);
    let below = response_topic
        .strip_prefix(own.as_str())
        .is_some_and(|rest| rest.is_empty() || (rest.starts_with('/') && rest.len() > 1));
    below && !response_topic.contains(['+', '#', '\0'])
}

/// Where a merchant hears of every payment decided for it, and of refunds,
/// captures and voids.
pub fn notification_topic(merchant: &MerchantId) -> String {
    format!("{TOPIC_PREFIX}/merchants/{merchant}/{NOTIFICATIONS}")
}

/// What a request topic asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Balance,
    Pay,
    Authorize,
    History,
    Capture,
    Void,
    Refund,
    Payout,
    PluginUpload,
    PluginActivate,
    PluginRollback,
    PluginList,
    OpenAccount,
    Deposit,
    Status,
}

const USER_ACTIONS: &[(&str, Action)] = &[
    ("balance", Action::Balance),
    ("pay", Action::Pay),
    ("authorize", Action::Authorize),
    ("history", Action::History),
];

const MERCHANT_ACTIONS: &[(&str, Action)] = &[
    ("capture", Action::Capture),
    ("void", Action::Void),
    ("refund", Action::Refund),
    ("payout", Action::Payout),
    ("balance", Action::Balance),
    ("history", Action::History),
    ("plugin/upload", Action::PluginUpload),
    ("plugin/activate", Action::PluginActivate),
    ("plugin/rollback", Action::PluginRollback),
    ("plugin/list", Action::PluginList),
];

const ADMIN_ACTIONS: &[(&str, Action)] = &[
    ("accounts/open", Action::OpenAccount),
    ("deposit", Action::Deposit),
    ("status", Action::Status),
];

/// What a topic turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Request(Principal, Action),
    /// One of the host's own output topics: not a request.
    Own,
}

/// The longest part of a topic quoted back in an error message, in bytes.
const TOPIC_SHOWN_BYTES_MAX: usize = 128;

/// Parses a topic into the principal and action it names.
pub(crate) fn route(topic: &str) -> Result<Route, Rejection> {
    let unknown = |hint: String| {
        Rejection::new(
            ErrorCode::UnknownTopic,
            format!(
                "unknown topic `{}`: {hint}",
                shown(topic, TOPIC_SHOWN_BYTES_MAX)
            ),
        )
    };
    if topic == DEAD_LETTER_TOPIC {
        return Ok(Route::Own);
    }
    let Some(rest) = topic
        .strip_prefix(TOPIC_PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        let hint = match topic
            .strip_prefix("wasmpay/")
            .and_then(|t| t.split('/').next())
        {
            Some(version) if version.starts_with('v') && version != "v1" => format!(
                "this host speaks protocol v1, not {}",
                shown(version, TOPIC_SHOWN_BYTES_MAX)
            ),
            _ => format!("requests are published under {TOPIC_PREFIX}/"),
        };
        return Err(unknown(hint));
    };
    let (namespace, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (principal, action, actions) = match namespace {
        "users" => {
            let (user, action) = rest.split_once('/').unwrap_or((rest, ""));
            if is_own_output(action) {
                return Ok(Route::Own);
            }
            let user = UserId::new(user).map_err(|e| invalid_principal(&e))?;
            (Principal::User(user), action, USER_ACTIONS)
        }
        "merchants" => {
            let (merchant, action) = rest.split_once('/').unwrap_or((rest, ""));
            if is_own_output(action) {
                return Ok(Route::Own);
            }
            let merchant = MerchantId::new(merchant).map_err(|e| invalid_principal(&e))?;
            (Principal::Merchant(merchant), action, MERCHANT_ACTIONS)
        }
        "admin" => {
            if is_own_output(rest) {
                return Ok(Route::Own);
            }
            (Principal::Admin, rest, ADMIN_ACTIONS)
        }
        _ => {
            return Err(unknown(format!(
                "expected {TOPIC_PREFIX}/users/{{user}}/..., {TOPIC_PREFIX}/merchants/{{merchant}}/... or {TOPIC_PREFIX}/admin/..."
            )));
        }
    };
    match actions.iter().find(|(name, _)| *name == action) {
        Some(&(_, action)) => Ok(Route::Request(principal, action)),
        None => {
            let names: Vec<&str> = actions.iter().map(|(name, _)| *name).collect();
            let mut rejection = unknown(format!(
                "the {} topics are {}",
                namespace.trim_end_matches('s'),
                names.join(", ")
            ));
            rejection.reply_to = Some(principal);
            Err(rejection)
        }
    }
}

/// Whether the part of a topic after the principal is one of the host's
/// own outputs, or below one (MQTT 5 clients may choose a Response Topic
/// under their `replies`).
fn is_own_output(action: &str) -> bool {
    let first = action.split('/').next().unwrap_or("");
    first == REPLIES || first == NOTIFICATIONS
}

fn invalid_principal(error: &IdError) -> Rejection {
    Rejection::new(ErrorCode::InvalidId, format!("topic names an {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::User(UserId::new(name).unwrap())
    }

    fn merchant(name: &str) -> Principal {
        Principal::Merchant(MerchantId::new(name).unwrap())
    }

    #[test]
    fn request_topics_name_their_principal_and_action() {
        let cases = [
            ("wasmpay/v1/users/alice/pay", user("alice"), Action::Pay),
            (
                "wasmpay/v1/users/alice/balance",
                user("alice"),
                Action::Balance,
            ),
            (
                "wasmpay/v1/merchants/shop/balance",
                merchant("shop"),
                Action::Balance,
            ),
            (
                "wasmpay/v1/merchants/shop/plugin/upload",
                merchant("shop"),
                Action::PluginUpload,
            ),
            (
                "wasmpay/v1/merchants/plugin/plugin/list",
                merchant("plugin"),
                Action::PluginList,
            ),
            (
                "wasmpay/v1/admin/accounts/open",
                Principal::Admin,
                Action::OpenAccount,
            ),
        ];
        for (topic, principal, action) in cases {
            assert_eq!(
                route(topic),
                Ok(Route::Request(principal, action)),
                "{topic}"
            );
        }
    }

    #[test]
    fn own_output_topics_are_not_requests() {
        for topic in [
            "wasmpay/v1/users/alice/replies",
            "wasmpay/v1/users/alice/replies/session-7",
            "wasmpay/v1/merchants/shop/notifications",
            "wasmpay/v1/merchants/shop/replies",
            "wasmpay/v1/admin/replies",
            "wasmpay/v1/admin/replies/x/y",
            "wasmpay/v1/dead-letter",
        ] {
            assert_eq!(route(topic), Ok(Route::Own), "{topic}");
        }
    }

    #[test]
    fn reply_topics_are_matched_by_no_request_route() {
        let alice = user("alice");
        assert_eq!(route(&reply_topic_for(&alice)), Ok(Route::Own));
        assert_eq!(route(&reply_topic_for(&Principal::Admin)), Ok(Route::Own));
        let shop = MerchantId::new("shop").unwrap();
        assert_eq!(route(&notification_topic(&shop)), Ok(Route::Own));
    }

    #[test]
    fn responses_stay_in_the_principals_own_reply_namespace() {
        let alice = user("alice");
        for allowed in [
            "wasmpay/v1/users/alice/replies",
            "wasmpay/v1/users/alice/replies/session-7",
            "wasmpay/v1/users/alice/replies/a/b",
        ] {
            assert!(response_topic_allowed(&alice, allowed), "{allowed}");
        }
        for refused in [
            "wasmpay/v1/users/bob/replies",
            "wasmpay/v1/users/alice/repliesX",
            "wasmpay/v1/users/alice/replies/",
            "wasmpay/v1/users/alice/pay",
            "wasmpay/v1/merchants/shop/notifications",
            "wasmpay/v1/users/alice/replies/+",
            "wasmpay/v1/users/alice/replies/#",
            "wasmpay/v1/users/alice/replies/\0",
            "",
        ] {
            assert!(!response_topic_allowed(&alice, refused), "{refused}");
        }
        assert!(response_topic_allowed(
            &Principal::Admin,
            "wasmpay/v1/admin/replies/cli"
        ));
    }

    #[test]
    fn unknown_actions_can_be_answered_to_their_principal() {
        let rejection = route("wasmpay/v1/users/alice/upload").unwrap_err();
        assert_eq!(rejection.code, ErrorCode::UnknownTopic);
        assert_eq!(rejection.reply_to, Some(user("alice")));
        assert!(
            rejection
                .message
                .contains("balance, pay, authorize, history"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn foreign_versions_and_namespaces_are_unknown_and_unanswerable() {
        for topic in [
            "wasmpay/v2/users/alice/pay",
            "other/topic",
            "",
            "wasmpay/v1/bank/x",
            "wasmpay/v1",
        ] {
            let rejection = route(topic).unwrap_err();
            assert_eq!(rejection.code, ErrorCode::UnknownTopic, "{topic}");
            assert_eq!(rejection.reply_to, None, "{topic}");
        }
        assert!(
            route("wasmpay/v2/users/alice/pay")
                .unwrap_err()
                .message
                .contains("v1, not v2")
        );
    }

    #[test]
    fn invalid_principals_cannot_be_answered() {
        for topic in [
            "wasmpay/v1/users//pay",
            "wasmpay/v1/users/al ice/pay",
            "wasmpay/v1/merchants/caf\u{e9}/refund",
            // No broker should carry these (MQTT forbids wildcards and NUL
            // in a topic name), but none is trusted to.
            "wasmpay/v1/users/+/pay",
            "wasmpay/v1/users/#/pay",
            "wasmpay/v1/merchants/m-shop\0/refund",
            "wasmpay/v1/users/alice\u{200f}/pay",
        ] {
            let rejection = route(topic).unwrap_err();
            assert_eq!(rejection.code, ErrorCode::InvalidId, "{topic}");
            assert_eq!(rejection.reply_to, None, "{topic}");
        }
    }
}
