//! segsync keeps customer segments in sync with the systems around them.
//!
//! # Layout, in data-flow order
//!
//! Data comes in, is stored, planned, executed and delivered:
//!
//! - [`ingest`]: bulk files (id lists, CSV, NDJSON, gzip) → users, attributes
//!   and segment snapshots; the fingerprint interner; atomic imports.
//! - [`inbound`]: what other systems send in real time — Cohort Sync
//!   requests from another workspace, Personas identify/track/batch — and
//!   the credentials they carry.
//! - [`store`]: the embedded RocksDB: column families, every key
//!   (`store/keys.rs`), the one codec module (bincode records, roaring
//!   bitmaps, attribute values), import transactions with rollback, the
//!   fingerprint table, and the sync and execution records.
//! - [`plan`]: the differ — `current = snapshot ∧ has(attribute)`,
//!   added/removed by XOR against what was delivered — and the persisted plan
//!   of an execution.
//! - [`destination`]: destination config, validated into types that cannot be
//!   invalid; one module per request format (`segment_sync`, Cohort Sync);
//!   masking and the request preview.
//! - [`pipeline`]: one execution — pager → renderer threads → sender (tokio,
//!   rate limit, retries, idempotency keys) → checkpoint; crash-safe resume;
//!   the connection test. It executes; it applies no rules.
//! - [`cluster`]: past one machine — the NATS JetStream streams, subjects
//!   and messages shared by `serve --nats` (the coordinator: the pipeline
//!   publishes rendered pages instead of sending them) and the workers.
//! - [`lifecycle`]: the status × action rules, every action on a sync (runs
//!   included: check, plan or resume, execute, settle), limits and cool-off,
//!   schedules, notifications.
//! - [`worker`]: `segsync worker` — a stateless sender pulling pages from
//!   JetStream, with permits from the coordinator's limiter.
//! - [`auth`]: who may call the admin API — named tokens with a role.
//! - [`server`]: `segsync serve` — scheduler, mailer, resumption, admin REST
//!   API, the web console (an embedded client of that API), the inbound
//!   endpoints, health and metrics, graceful shutdown.
//! - [`cli`]: the command line (the only place that uses `anyhow`).
//!
//! Beside the flow: [`config`] (`segsync.toml`, validated once), [`error`]
//! (one classification of faults, from which exit codes and HTTP statuses
//! derive), [`secret`] (salted hashes of keys and tokens), [`metrics`] (process-wide counters for `/metrics`),
//! [`allocator`] (freed memory given back once bulk work ends, by the binary's means),
//! [`progress`] (progress bars on a terminal), [`checking_receiver`] (a
//! receiver that checks requests and rebuilds membership, for the demo,
//! bench and tests) and [`fixtures`] (deterministic generated data).
//!
//! Arrows run one way: cli/server → lifecycle → pipeline → plan/destination
//! → store (inbound sits beside lifecycle, under server). No module imports
//! from one above it.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod allocator;
pub mod auth;
pub mod checking_receiver;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod destination;
pub mod error;
pub mod fixtures;
pub mod inbound;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod secret;
pub mod server;
pub mod store;
pub mod worker;
