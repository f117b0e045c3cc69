//! The audit chain: each journal entry's SHA-256 covers a canonical encoding
//! of the entry (its postings included) and the previous entry's hash, so
//! that editing, inserting or deleting any entry breaks every hash after it.
//!
//! The encoding is length-prefixed binary, not JSON, so that it cannot be
//! ambiguous; the JSON columns (request, outcome) enter it as stored bytes,
//! which is why their serialization need not be canonical.

use sha2::{Digest, Sha256};

/// Bumped if the encoding ever changes; part of every hash.
const DOMAIN: &[u8] = b"wasmpay-ledger-journal-v1\0";

/// The hash before the first entry.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// One leg as hashed: the account named by owner and currency (not by row
/// id, which means nothing outside this file), and the signed amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HashedLeg {
    pub owner: String,
    pub currency: String,
    pub amount: i64,
}

/// Everything an entry's hash covers.
#[derive(Debug)]
pub(crate) struct EntryFields<'a> {
    pub seq: i64,
    pub at_ms: i64,
    pub prev_hash: &'a [u8],
    pub op: &'a str,
    pub principal: &'a str,
    pub key: &'a str,
    pub payment_id: Option<&'a str>,
    pub request: &'a str,
    pub plugin: Option<&'a str>,
    pub applied: bool,
    pub outcome: &'a str,
    pub legs: &'a [HashedLeg],
}

fn put(hasher: &mut Sha256, bytes: &[u8]) {
    // u64 length prefix: no field can be confused with the next.
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

fn put_opt(hasher: &mut Sha256, value: Option<&str>) {
    match value {
        Some(value) => {
            hasher.update([1]);
            put(hasher, value.as_bytes());
        }
        None => hasher.update([0]),
    }
}

impl EntryFields<'_> {
    pub(crate) fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(self.seq.to_be_bytes());
        h.update(self.at_ms.to_be_bytes());
        put(&mut h, self.prev_hash);
        put(&mut h, self.op.as_bytes());
        put(&mut h, self.principal.as_bytes());
        put(&mut h, self.key.as_bytes());
        put_opt(&mut h, self.payment_id);
        put(&mut h, self.request.as_bytes());
        put_opt(&mut h, self.plugin);
        h.update([u8::from(self.applied)]);
        put(&mut h, self.outcome.as_bytes());
        h.update((self.legs.len() as u64).to_be_bytes());
        for leg in self.legs {
            put(&mut h, leg.owner.as_bytes());
            put(&mut h, leg.currency.as_bytes());
            h.update(leg.amount.to_be_bytes());
        }
        h.finalize().into()
    }
}

/// The stored form of a plugin reference: `version:sha256`.
pub(crate) fn plugin_column(plugin: Option<&wasmpay_domain::PluginRef>) -> Option<String> {
    plugin.map(|p| format!("{}:{}", p.version, p.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(legs: &'a [HashedLeg], outcome: &'a str) -> EntryFields<'a> {
        EntryFields {
            seq: 1,
            at_ms: 5,
            prev_hash: &GENESIS,
            op: "deposit",
            principal: "admin",
            key: "k",
            payment_id: None,
            request: "{}",
            plugin: None,
            applied: true,
            outcome,
            legs,
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let legs = vec![HashedLeg {
            owner: "world".into(),
            currency: "EUR".into(),
            amount: -5,
        }];
        let base = entry(&legs, "{}").hash();
        assert_ne!(base, entry(&legs, "{ }").hash());
        let mut moved = legs.clone();
        moved[0].amount = -6;
        assert_ne!(base, entry(&moved, "{}").hash());
        assert_ne!(
            base,
            EntryFields {
                seq: 2,
                ..entry(&legs, "{}")
            }
            .hash()
        );
        assert_ne!(
            base,
            EntryFields {
                payment_id: Some(""),
                ..entry(&legs, "{}")
            }
            .hash()
        );
        assert_eq!(base, entry(&legs, "{}").hash());
    }

    #[test]
    fn length_prefixes_keep_adjacent_fields_apart() {
        let a = EntryFields {
            principal: "ab",
            key: "c",
            ..entry(&[], "")
        }
        .hash();
        let b = EntryFields {
            principal: "a",
            key: "bc",
            ..entry(&[], "")
        }
        .hash();
        assert_ne!(a, b);
    }
}
