//! The nouns of the ledger that callers name: who owns an account, who asked
//! for an operation, how far an account may go below zero, and what a balance
//! looks like to a reader.

use std::fmt;

use serde::{Deserialize, Serialize};
use wasmpay_domain::{Currency, MerchantId, Money, SubAccount, UserId};

/// Who an account belongs to. Each owner has at most one account per currency
/// (per sub-account, for merchants).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Owner {
    /// A paying user; opened explicitly by an admin.
    User { user: UserId },
    /// One of a merchant's accounts: `main` is opened explicitly, the others
    /// open on their first credit.
    Merchant {
        merchant: MerchantId,
        account: SubAccount,
    },
    /// The operator's fee income; opens on demand.
    Platform,
    /// Money outside wasmpay (deposits come from it, payouts go to it); opens
    /// on demand with an unbounded overdraft, so its balance is minus
    /// everything the world has put in.
    World,
}

impl Owner {
    pub fn user(user: &UserId) -> Self {
        Self::User { user: user.clone() }
    }

    pub fn merchant(merchant: &MerchantId, account: &SubAccount) -> Self {
        Self::Merchant {
            merchant: merchant.clone(),
            account: account.clone(),
        }
    }

    pub fn merchant_main(merchant: &MerchantId) -> Self {
        Self::merchant(merchant, &SubAccount::main())
    }

    /// The three columns that name an owner in the `accounts` table.
    pub(crate) fn columns(&self) -> (&'static str, &str, &str) {
        match self {
            Self::User { user } => ("user", user.as_str(), ""),
            Self::Merchant { merchant, account } => {
                ("merchant", merchant.as_str(), account.as_str())
            }
            Self::Platform => ("platform", "", ""),
            Self::World => ("world", "", ""),
        }
    }

    /// Rebuilds an owner from its columns; `None` if they are not ones this
    /// crate writes (a corrupt or tampered row).
    pub(crate) fn from_columns(kind: &str, id: &str, sub: &str) -> Option<Self> {
        match kind {
            "user" => Some(Self::User {
                user: UserId::new(id).ok()?,
            }),
            "merchant" => Some(Self::Merchant {
                merchant: MerchantId::new(id).ok()?,
                account: SubAccount::new(sub).ok()?,
            }),
            "platform" => Some(Self::Platform),
            "world" => Some(Self::World),
            _ => None,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { user } => write!(f, "user/{user}"),
            Self::Merchant { merchant, account } => write!(f, "merchant/{merchant}/{account}"),
            Self::Platform => f.write_str("platform"),
            Self::World => f.write_str("world"),
        }
    }
}

/// Who asked for an operation: the scope of its idempotency key. The same key
/// from two principals names two different requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Principal {
    User(UserId),
    Merchant(MerchantId),
    Admin,
}

impl Principal {
    /// The stored form: `user:alice`, `merchant:shop`, `admin`. Ids cannot
    /// contain `:`, so the form is unambiguous.
    pub fn key(&self) -> String {
        match self {
            Self::User(user) => format!("user:{user}"),
            Self::Merchant(merchant) => format!("merchant:{merchant}"),
            Self::Admin => "admin".to_owned(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// How far below zero an account's available balance may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "limit")]
pub enum Overdraft {
    /// Never below zero.
    #[default]
    None,
    /// Down to minus this (non-negative) amount.
    Limit(Money),
    /// No floor: only the `world` account, which stands for outside money.
    Unbounded,
}

impl Overdraft {
    /// The stored form: a kind and a limit in minor units.
    pub(crate) fn columns(self) -> (&'static str, i64) {
        match self {
            Self::None => ("none", 0),
            Self::Limit(limit) => ("limit", limit.minor()),
            Self::Unbounded => ("unbounded", 0),
        }
    }

    pub(crate) fn from_columns(kind: &str, limit: i64, currency: Currency) -> Option<Self> {
        match kind {
            "none" => Some(Self::None),
            "limit" => Some(Self::Limit(Money::from_minor(limit, currency))),
            "unbounded" => Some(Self::Unbounded),
            _ => None,
        }
    }

    /// Whether an available balance of `available` minor units keeps to this
    /// policy.
    pub(crate) fn allows(self, available: i64) -> bool {
        match self {
            Self::None => available >= 0,
            Self::Limit(limit) => available >= limit.minor().saturating_neg(),
            Self::Unbounded => true,
        }
    }
}

impl fmt::Display for Overdraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("no overdraft"),
            Self::Limit(limit) => write!(f, "overdraft up to {limit}"),
            Self::Unbounded => f.write_str("unbounded overdraft"),
        }
    }
}

/// One account's money in one currency.
///
/// `available` is what can be spent now; `held` is reserved by open
/// authorizations. Their sum is the posted balance (the sum of the account's
/// postings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: Money,
    pub held: Money,
}

impl Balance {
    /// Builds a balance from the stored posted balance and held amount.
    pub(crate) fn from_posted(posted: i64, held: i64, currency: Currency) -> Self {
        // The ledger keeps `held <= posted + overdraft`, both within i64; a
        // difference outside i64 can only come from a corrupt row.
        let available = posted.saturating_sub(held);
        Self {
            available: Money::from_minor(available, currency),
            held: Money::from_minor(held, currency),
        }
    }

    pub fn currency(&self) -> Currency {
        self.available.currency()
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} available, {} held",
            self.available,
            self.held.amount_string()
        )
    }
}

/// Every balance of one owner, for `wasmpay ledger balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balances {
    pub owner: Owner,
    /// One per currency, sorted by currency code.
    pub balances: Vec<Balance>,
}

impl fmt::Display for Balances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.balances.is_empty() {
            return writeln!(f, "{}: no accounts", self.owner);
        }
        writeln!(f, "{}:", self.owner)?;
        for balance in &self.balances {
            writeln!(f, "  {balance}")?;
        }
        Ok(())
    }
}
