//! Integration tests live in tests/. The library holds the Rust types that `cargo xtask codegen` generates from
//! the repository's `schemas/` (`tests/codegen.rs` fails when they are out of date), for those tests.

/// `com::acme::Widget`, `com::acme::orders::Order`, …: the types of every schema under `schemas/`.
#[rustfmt::skip]
pub mod generated;

/// The repository README's Rust examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// docs/AVRO.md's Rust examples, compiled (and run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/AVRO.md")]
pub struct AvroDoc;

/// docs/CODEGEN.md's Rust examples, compiled (and run where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/CODEGEN.md")]
pub struct CodegenDoc;

/// docs/CONFIGURATION.md's Rust example, run as a doctest on a mock cluster and the embedded registry.
#[cfg(doctest)]
#[doc = include_str!("../../docs/CONFIGURATION.md")]
pub struct ConfigurationDoc;

/// docs/CONSUMERS.md's Rust example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/CONSUMERS.md")]
pub struct ConsumersDoc;

/// docs/FROM_RUBY.md's Rust examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/FROM_RUBY.md")]
pub struct FromRubyDoc;

/// docs/KEYS.md's Rust examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/KEYS.md")]
pub struct KeysDoc;

/// docs/METRICS.md's Rust example, run as a doctest on a mock cluster.
#[cfg(doctest)]
#[doc = include_str!("../../docs/METRICS.md")]
pub struct MetricsDoc;

/// docs/OUTBOX.md's Rust example, run as a doctest on SQLite.
#[cfg(doctest)]
#[doc = include_str!("../../docs/OUTBOX.md")]
pub struct OutboxDoc;

/// docs/PRODUCERS.md's Rust example, run as a doctest on a mock cluster.
#[cfg(doctest)]
#[doc = include_str!("../../docs/PRODUCERS.md")]
pub struct ProducersDoc;

/// docs/RECORDS.md's Rust examples, run as doctests on SQLite.
#[cfg(doctest)]
#[doc = include_str!("../../docs/RECORDS.md")]
pub struct RecordsDoc;

/// docs/REGISTRY.md's Rust examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/REGISTRY.md")]
pub struct RegistryDoc;

/// docs/TESTING.md's Rust example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/TESTING.md")]
pub struct TestingDoc;
