//! wasmpay-plugin.
