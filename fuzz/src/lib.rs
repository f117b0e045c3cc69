//! Input layouts shared by the fuzz targets (`fuzz_targets/`) and the
//! corpus seeder (`examples/seed_corpora.rs`).
//!
//! A target reads its input through `arbitrary`. Where a corpus is seeded
//! from real files (protocol fixtures, example amounts), each seed must be
//! written in the layout the target reads, so the reader and its writer live
//! here side by side, with a test that one reads back what the other wrote.

use arbitrary::Unstructured;

/// The request topics `decode` serves, one per action, with principals the
/// fixtures use (`alice`, `coffee-shop`), then the host's own output topics,
/// which it must ignore. The order is part of the corpus format: append only.
pub const TOPICS: &[&str] = &[
    "wasmpay/v1/users/alice/balance",
    "wasmpay/v1/users/alice/pay",
    "wasmpay/v1/users/alice/authorize",
    "wasmpay/v1/users/alice/history",
    "wasmpay/v1/merchants/coffee-shop/capture",
    "wasmpay/v1/merchants/coffee-shop/void",
    "wasmpay/v1/merchants/coffee-shop/refund",
    "wasmpay/v1/merchants/coffee-shop/payout",
    "wasmpay/v1/merchants/coffee-shop/balance",
    "wasmpay/v1/merchants/coffee-shop/history",
    "wasmpay/v1/merchants/coffee-shop/plugin/upload",
    "wasmpay/v1/merchants/coffee-shop/plugin/activate",
    "wasmpay/v1/merchants/coffee-shop/plugin/rollback",
    "wasmpay/v1/merchants/coffee-shop/plugin/list",
    "wasmpay/v1/admin/accounts/open",
    "wasmpay/v1/admin/deposit",
    "wasmpay/v1/admin/status",
    "wasmpay/v1/users/alice/replies",
    "wasmpay/v1/merchants/coffee-shop/notifications",
    "wasmpay/v1/dead-letter",
];

/// The topic selector that means "a raw topic follows". Any selector at or
/// past `TOPICS.len()` does; the writer uses this one.
const RAW_TOPIC: u8 = u8::MAX;

/// Most MQTT 5 user properties one input carries: enough for an upload's
/// `id`, duplicates and a few `config.*` entries.
pub const USER_PROPERTIES_MAX: u8 = 8;

/// One message for `wasmpay_protocol::decode`.
///
/// Layout, in order: a topic selector byte (an index into [`TOPICS`], or a
/// raw topic: a length byte and that many bytes, read as lossy UTF-8 since
/// MQTT topics are strings); a user property count byte (modulo
/// `USER_PROPERTIES_MAX + 1`); per property a key (length byte, bytes) and a
/// value (little-endian `u16` length, bytes); the rest is the payload.
/// Lengths past the end of the data take what is left, so every byte string
/// is a valid input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeInput<'a> {
    pub topic: String,
    pub user_properties: Vec<(String, String)>,
    pub payload: &'a [u8],
}

impl<'a> DecodeInput<'a> {
    /// Reads the layout above. Total: never fails, whatever `data` is.
    pub fn read(data: &'a [u8]) -> Self {
        let mut u = Unstructured::new(data);
        let selector = byte(&mut u);
        let topic = match TOPICS.get(usize::from(selector)) {
            Some(topic) => (*topic).to_owned(),
            None => {
                let len = usize::from(byte(&mut u));
                lossy(take(&mut u, len))
            }
        };
        let count = byte(&mut u) % (USER_PROPERTIES_MAX + 1);
        let mut user_properties = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let key_len = usize::from(byte(&mut u));
            let key = lossy(take(&mut u, key_len));
            let value_len = usize::from(u16::from_le_bytes([byte(&mut u), byte(&mut u)]));
            let value = lossy(take(&mut u, value_len));
            user_properties.push((key, value));
        }
        let payload = u.take_rest();
        Self {
            topic,
            user_properties,
            payload,
        }
    }

    /// Writes the layout [`DecodeInput::read`] reads, for seeding a corpus.
    ///
    /// # Panics
    /// If a topic, key or value is too long for its length field, or there
    /// are more than [`USER_PROPERTIES_MAX`] properties: seeds are ours.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 64);
        match TOPICS.iter().position(|topic| *topic == self.topic) {
            Some(index) => out.push(u8::try_from(index).expect("TOPICS fits a byte")),
            None => {
                out.push(RAW_TOPIC);
                push_with_len_u8(&mut out, self.topic.as_bytes());
            }
        }
        let count = u8::try_from(self.user_properties.len())
            .ok()
            .filter(|count| *count <= USER_PROPERTIES_MAX)
            .expect("at most USER_PROPERTIES_MAX user properties");
        out.push(count);
        for (key, value) in &self.user_properties {
            push_with_len_u8(&mut out, key.as_bytes());
            let len = u16::try_from(value.len()).expect("a value of at most 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(self.payload);
        out
    }
}

/// The currencies the `amount` target parses in, chosen for their exponents
/// (EUR 2, JPY 0, KWD 3, CLF 4). The index is part of the corpus format.
pub const AMOUNT_CURRENCIES: &[&str] = &["EUR", "JPY", "KWD", "CLF"];

/// One input of the `amount` target: a currency (index into
/// [`AMOUNT_CURRENCIES`], modulo its length) and the text to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmountInput<'a> {
    pub currency: &'static str,
    pub text: &'a str,
}

impl<'a> AmountInput<'a> {
    /// Reads a currency byte, then the rest as text. Total: bytes that are
    /// not UTF-8 are cut at the first invalid one, as `arbitrary` does.
    pub fn read(data: &'a [u8]) -> Self {
        let mut u = Unstructured::new(data);
        let index = usize::from(byte(&mut u)) % AMOUNT_CURRENCIES.len();
        let text = <&str as arbitrary::Arbitrary>::arbitrary_take_rest(u).unwrap_or("");
        Self {
            currency: AMOUNT_CURRENCIES[index],
            text,
        }
    }

    /// Writes the layout [`AmountInput::read`] reads.
    ///
    /// # Panics
    /// If the currency is not one of [`AMOUNT_CURRENCIES`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let index = AMOUNT_CURRENCIES
            .iter()
            .position(|code| *code == self.currency)
            .expect("one of AMOUNT_CURRENCIES");
        let mut out = vec![u8::try_from(index).expect("a handful of currencies")];
        out.extend_from_slice(self.text.as_bytes());
        out
    }
}

/// The next byte, or 0 once the data is used up (as `arbitrary` pads).
fn byte(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary().unwrap_or(0)
}

/// Up to `len` bytes: a length past the end takes what is left.
fn take<'a>(u: &mut Unstructured<'a>, len: usize) -> &'a [u8] {
    u.bytes(len.min(u.len())).unwrap_or_default()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn push_with_len_u8(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).expect("at most 255 bytes"));
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_decode_input_reads_back_the_same() {
        let payload = br#"{"id":"r-1","merchant":"coffee-shop","amount":"4.20","currency":"EUR"}"#;
        for input in [
            DecodeInput {
                topic: TOPICS[1].to_owned(),
                user_properties: vec![],
                payload,
            },
            DecodeInput {
                topic: "wasmpay/v2/users/bob/pay".to_owned(),
                user_properties: vec![
                    ("id".to_owned(), "up-1".to_owned()),
                    ("config.fee_bps".to_owned(), "x".repeat(300)),
                ],
                payload: b"\0asm\x0d\x00\x01\x00",
            },
            DecodeInput {
                topic: String::new(),
                user_properties: vec![(String::new(), String::new())],
                payload: b"",
            },
        ] {
            assert_eq!(DecodeInput::read(&input.to_bytes()), input);
        }
    }

    #[test]
    fn any_bytes_are_a_decode_input() {
        for data in [
            &b""[..],
            b"\xff",
            b"\xff\xff\x07",
            b"\x01\x08\x05ab",
            b"\x13\xff",
        ] {
            let input = DecodeInput::read(data);
            assert!(input.user_properties.len() <= usize::from(USER_PROPERTIES_MAX));
        }
    }

    #[test]
    fn a_written_amount_input_reads_back_the_same() {
        for (currency, text) in [("EUR", "12.50"), ("CLF", "-0.0001"), ("JPY", "")] {
            let input = AmountInput { currency, text };
            assert_eq!(AmountInput::read(&input.to_bytes()), input);
        }
    }
}
