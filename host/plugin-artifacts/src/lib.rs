//! wasmpay-plugin-artifacts.
