//! Integration tests live in tests/. The library holds the Rust types that `cargo xtask codegen` generates from
//! the repository's `schemas/` (`tests/codegen.rs` fails when they are out of date), for those tests.

/// `com::acme::Widget`, `com::acme::orders::Order`, …: the types of every schema under `schemas/`.
#[rustfmt::skip]
pub mod generated;

/// The repository README's Rust examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
