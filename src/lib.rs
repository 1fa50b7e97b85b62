//! segsync keeps customer segments in sync with the systems around them.
//!
//! # Layout, in data-flow order
//!
//! - [`ingest`]: bulk files (id lists, CSV, NDJSON, gzip) → users, attributes
//!   and segment snapshots; the fingerprint interner; atomic imports.
//! - [`inbound`]: what other systems send in real time — Cohort Sync
//!   requests from another workspace, Personas identify/track/batch — and
//!   the credentials they carry.
//! - [`store`]: the embedded RocksDB: column families, keys, the one codec
//!   module (bincode records, roaring bitmaps, attribute values), import
//!   transactions with rollback, the fingerprint table.
//! - [`plan`]: the differ — `current = snapshot ∧ has(attribute)`,
//!   added/removed by XOR against what was delivered.
//! - [`pipeline`]: one execution — pager → renderer threads → sender (tokio,
//!   rate limit, retries, idempotency keys) → checkpoint; crash-safe resume.
//! - [`destination`]: destination config validated into types that cannot be
//!   invalid, and one module per request format (custom, Cohort Sync).
//! - [`lifecycle`]: sync and execution records, the status × action rules,
//!   schedule computation.
//! - [`server`]: `segsync serve` — scheduler, resumption, admin REST API,
//!   the inbound endpoints, health and metrics, graceful shutdown.
//! - [`metrics`]: process-wide counters for `/metrics`.
//! - [`receiver`]: a built-in endpoint that checks requests and rebuilds
//!   membership (demo, bench, tests).
//! - [`fixtures`]: deterministic generated data for tests, benches and the demo.
//! - [`progress`]: progress bars on a terminal.
//! - [`cli`]: the command line (the only place that uses `anyhow`).

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod destination;
pub mod fixtures;
pub mod inbound;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod receiver;
pub mod server;
pub mod store;
