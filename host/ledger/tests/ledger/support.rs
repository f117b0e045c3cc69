//! One fixture for every test: a real ledger file in a temporary directory,
//! and short constructors for ids, money and operations.

use std::collections::BTreeMap;

use tempfile::TempDir;
use wasmpay_domain::{
    Currency, Decline, MerchantId, Money, PaymentId, PlatformFee, PluginRef, Quote, QuoteLimits,
    RequestId, Settlement, UserId,
};
use wasmpay_ledger::{
    Ledger, LedgerOptions, Op, OpKind, OpResult, Overdraft, Owner, PaymentDecided, Principal,
    Reader, RefundDecided,
};

pub fn cur(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

pub fn eur(minor: i64) -> Money {
    Money::from_minor(minor, cur("EUR"))
}

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

pub fn merchant(name: &str) -> MerchantId {
    MerchantId::new(name).unwrap()
}

pub fn key(name: &str) -> RequestId {
    RequestId::new(name).unwrap()
}

pub fn plugin() -> PluginRef {
    PluginRef {
        version: 1,
        sha256: "ab".repeat(32),
    }
}

/// A settlement as the pipeline computes it: an empty quote at `fee_bps`.
pub fn settle(amount: Money, fee_bps: u32) -> Settlement {
    Quote::default()
        .settle(amount, PlatformFee { bps: fee_bps }, QuoteLimits::default())
        .unwrap()
}

pub fn approved(amount: Money, fee_bps: u32) -> PaymentDecided {
    PaymentDecided::Approved {
        quote: Quote::default(),
        settlement: settle(amount, fee_bps),
        plugin: Some(plugin()),
    }
}

pub fn declined(code: &str) -> PaymentDecided {
    PaymentDecided::Declined {
        decline: Decline {
            code: wasmpay_domain::Code::new(code).unwrap(),
            message: "no".to_owned(),
        },
        plugin: Some(plugin()),
    }
}

pub fn payment(payer: &str, shop: &str, request: &str, amount: Money, fee_bps: u32) -> OpKind {
    OpKind::Payment {
        payer: user(payer),
        merchant: merchant(shop),
        payment_id: PaymentId::derive(&user(payer), &key(request)),
        amount,
        memo: None,
        metadata: BTreeMap::new(),
        decision: approved(amount, fee_bps),
    }
}

pub fn authorize(
    payer: &str,
    shop: &str,
    request: &str,
    amount: Money,
    fee_bps: u32,
    expires_at_ms: i64,
) -> OpKind {
    OpKind::Authorize {
        payer: user(payer),
        merchant: merchant(shop),
        payment_id: PaymentId::derive(&user(payer), &key(request)),
        amount,
        memo: None,
        metadata: BTreeMap::new(),
        decision: approved(amount, fee_bps),
        expires_at_ms,
        expires_in_s: 60,
    }
}

pub fn pid(payer: &str, request: &str) -> PaymentId {
    PaymentId::derive(&user(payer), &key(request))
}

pub fn refund(shop: &str, payment_id: &PaymentId, amount: Money, fee: Option<Money>) -> OpKind {
    OpKind::Refund {
        merchant: merchant(shop),
        payment_id: payment_id.clone(),
        amount,
        reason: "returned".to_owned(),
        decision: RefundDecided::Allowed {
            fee,
            plugin: Some(plugin()),
        },
    }
}

/// The refusal code of a result, `"applied"`, or `"conflict"`.
pub fn code(result: &OpResult) -> &'static str {
    match result {
        OpResult::Done { outcome, .. } => match outcome {
            wasmpay_ledger::Outcome::Applied(_) => "applied",
            wasmpay_ledger::Outcome::Refused(refusal) => refusal.code(),
        },
        OpResult::Conflict { .. } => "conflict",
    }
}

pub struct Fixture {
    pub dir: TempDir,
    pub ledger: Ledger,
    pub now_ms: i64,
    next_key: u64,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_options(LedgerOptions::default())
    }

    pub fn with_options(options: LedgerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.db"), options).unwrap();
        Self {
            dir,
            ledger,
            now_ms: 1_000_000,
            next_key: 0,
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ledger.db")
    }

    pub fn reader(&self) -> Reader {
        Reader::open(&self.path()).unwrap()
    }

    pub fn op(&mut self, principal: Principal, kind: OpKind) -> Op {
        self.next_key += 1;
        Op {
            principal,
            key: key(&format!("k{}", self.next_key)),
            at_ms: self.now_ms,
            kind,
        }
    }

    pub fn run(&mut self, principal: Principal, kind: OpKind) -> OpResult {
        let op = self.op(principal, kind);
        self.ledger.apply(op).unwrap()
    }

    pub fn admin(&mut self, kind: OpKind) -> OpResult {
        self.run(Principal::Admin, kind)
    }

    pub fn as_user(&mut self, name: &str, kind: OpKind) -> OpResult {
        self.run(Principal::User(user(name)), kind)
    }

    pub fn as_merchant(&mut self, name: &str, kind: OpKind) -> OpResult {
        self.run(Principal::Merchant(merchant(name)), kind)
    }

    pub fn open(&mut self, owner: Owner, currency: &str, overdraft: Overdraft) -> OpResult {
        self.admin(OpKind::OpenAccount {
            owner,
            currency: cur(currency),
            overdraft,
        })
    }

    pub fn open_user(&mut self, name: &str) {
        assert_eq!(
            code(&self.open(Owner::user(&user(name)), "EUR", Overdraft::None)),
            "applied"
        );
    }

    pub fn open_merchant(&mut self, name: &str) {
        let owner = Owner::merchant_main(&merchant(name));
        assert_eq!(code(&self.open(owner, "EUR", Overdraft::None)), "applied");
    }

    pub fn deposit(&mut self, name: &str, amount: Money) -> OpResult {
        self.admin(OpKind::Deposit {
            user: user(name),
            amount,
        })
    }

    /// Alice (with `funds`) and a shop, both in EUR.
    pub fn alice_and_shop(funds: i64) -> Self {
        let mut fx = Self::new();
        fx.open_user("alice");
        fx.open_merchant("shop");
        if funds > 0 {
            assert_eq!(code(&fx.deposit("alice", eur(funds))), "applied");
        }
        fx
    }

    pub fn available(&self, owner: &Owner) -> i64 {
        self.ledger
            .balance(owner, cur("EUR"))
            .unwrap()
            .available
            .minor()
    }

    pub fn held(&self, owner: &Owner) -> i64 {
        self.ledger.balance(owner, cur("EUR")).unwrap().held.minor()
    }

    /// Both the writer and a fresh reader find the file consistent.
    pub fn assert_clean(&self) {
        let report = self.reader().verify().unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!(self.ledger.verify().unwrap(), report);
    }
}

pub fn alice() -> Owner {
    Owner::user(&user("alice"))
}

pub fn shop() -> Owner {
    Owner::merchant_main(&merchant("shop"))
}
