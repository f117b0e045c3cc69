//! End-to-end tests: real Mosquitto brokers on free ports, real SQLite files,
//! real wasm components built from `plugins/`. One binary, one module per
//! concern.

mod bad_input;
mod broker_acl;
mod chaos;
mod cli;
mod daemon;
mod mqtt_event_loop;
mod tls;
