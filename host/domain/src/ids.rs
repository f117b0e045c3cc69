//! Identifiers that come from the outside world.
//!
//! Users, merchants and request ids appear in MQTT topics, so they must never
//! contain topic separators or wildcards (`/`, `+`, `#`), control characters
//! or anything a shell or log would mangle. One rule serves them all:
//! 1 to 64 ASCII letters, digits, `_`, `-` or `.` (not starting with `.`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest identifier accepted, in bytes.
pub const ID_BYTES_MAX: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} `{shown}`: expected 1 to {ID_BYTES_MAX} ASCII letters, digits, `_`, `-` or `.`, not starting with `.`"
)]
pub struct IdError {
    pub kind: &'static str,
    /// The offending value, cut short and escaped so it is safe to log.
    pub shown: String,
}

fn check(kind: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= ID_BYTES_MAX
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        let shown: String = value.chars().take(ID_BYTES_MAX).collect();
        Err(IdError {
            kind,
            shown: shown.escape_debug().to_string(),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` (see the module docs for the rule).
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

id_type!(
    /// A paying user, as named in its topic namespace.
    UserId,
    "user id"
);
id_type!(
    /// A merchant, as named in its topic namespace.
    MerchantId,
    "merchant id"
);
id_type!(
    /// A client-chosen request id: the idempotency key, scoped to its principal.
    RequestId,
    "request id"
);

id_type!(
    /// The host's id for a payment (or hold): derived from the payer and the
    /// request id, so every redelivery of a request names the same payment
    /// before anything is stored.
    PaymentId,
    "payment id"
);

impl PaymentId {
    /// `pay_` and the first 24 hex digits of SHA-256 over the payer, a NUL
    /// and the request id: stable, collision-resistant, and safe in topics.
    ///
    /// Derived, not assigned: every delivery of a request names the same
    /// payment, so a duplicate that arrives after its idempotency record
    /// was purged is still refused (`payment_exists`). The price is a random
    /// insertion point in the ledger's payments table, which is most of its
    /// slowdown as history grows; ids ordered by time would flatten that
    /// and lose the refusal (BENCHMARKS.md, Ledger, "Where the decline
    /// happens, and what causes it").
    pub fn derive(payer: &UserId, request: &RequestId) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(payer.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(request.as_str().as_bytes());
        let digest = hasher.finalize();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("pay_{hex}"))
    }
}

/// The longest sub-account name, in bytes.
pub const SUB_ACCOUNT_BYTES_MAX: usize = 32;

/// The name of one of a merchant's own sub-accounts (`tax`, `tips`).
///
/// Plugins propose these, so the rule is tight: 1 to 32 of `a-z`, `0-9`, `_`,
/// `-`. `main` is the merchant's main account and cannot be named in a split.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubAccount(String);

/// The merchant's main account.
pub const MAIN_ACCOUNT: &str = "main";

impl SubAccount {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= SUB_ACCOUNT_BYTES_MAX
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        if ok {
            Ok(Self(value))
        } else {
            let shown: String = value.chars().take(SUB_ACCOUNT_BYTES_MAX).collect();
            Err(IdError {
                kind: "sub-account",
                shown: shown.escape_debug().to_string(),
            })
        }
    }

    /// The merchant's main account.
    pub fn main() -> Self {
        Self(MAIN_ACCOUNT.to_owned())
    }

    pub fn is_main(&self) -> bool {
        self.0 == MAIN_ACCOUNT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SubAccount {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<SubAccount> for String {
    fn from(value: SubAccount) -> Self {
        value.0
    }
}

impl fmt::Display for SubAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubAccount({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet() {
        for ok in ["alice", "m-42", "req_1.2", "A", &"x".repeat(ID_BYTES_MAX)] {
            assert!(UserId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn ids_refuse_topic_syntax_unicode_and_length() {
        for bad in [
            "",
            "a/b",
            "+",
            "#",
            "a b",
            ".hidden",
            "é",
            "a\0",
            "a\n",
            &"x".repeat(ID_BYTES_MAX + 1),
        ] {
            let err = RequestId::new(bad).unwrap_err();
            assert_eq!(err.kind, "request id");
        }
    }

    #[test]
    fn ids_deserialize_through_validation() {
        assert!(serde_json::from_str::<MerchantId>("\"shop/1\"").is_err());
        assert_eq!(
            serde_json::from_str::<MerchantId>("\"shop-1\"")
                .unwrap()
                .as_str(),
            "shop-1"
        );
    }

    #[test]
    fn payment_ids_are_stable_per_payer_and_request() {
        let alice = UserId::new("alice").unwrap();
        let bob = UserId::new("bob").unwrap();
        let r1 = RequestId::new("r1").unwrap();
        let id = PaymentId::derive(&alice, &r1);
        assert_eq!(id, PaymentId::derive(&alice, &r1));
        assert_ne!(id, PaymentId::derive(&bob, &r1));
        assert_eq!(id.as_str().len(), 4 + 24);
        assert!(PaymentId::new(id.as_str()).is_ok());
    }

    #[test]
    fn sub_accounts_are_lowercase_and_short() {
        assert!(SubAccount::new("tax").is_ok());
        for bad in [
            "",
            "Tax",
            "../other",
            "a.b",
            &"x".repeat(SUB_ACCOUNT_BYTES_MAX + 1),
        ] {
            assert!(SubAccount::new(bad).is_err(), "{bad}");
        }
    }
}
