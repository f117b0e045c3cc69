//! wasmpay-protocol.
