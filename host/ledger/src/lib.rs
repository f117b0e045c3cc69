//! wasmpay-ledger.
