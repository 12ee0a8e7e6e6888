//! Fuzz targets of Lapwing, for afl.rs on the stable toolchain.
//!
//! Each module is one target: a `run(&[u8])` function that feeds the bytes to
//! Lapwing code and panics when a property a user relies on does not hold
//! (a panic in Lapwing itself is a finding too). The binaries in `src/bin/`
//! only wrap these functions:
//!
//! - built by `cargo afl build` (which sets `--cfg fuzzing`), a binary is an
//!   AFL++ persistent-mode harness;
//! - built normally (clippy, `cargo test`, `cargo run`), it replays the files
//!   or directories named on its command line ([`replay::main`]), so a crash
//!   input can be debugged without AFL++.
//!
//! [`seeds`] generates the committed seed corpus from real messages, and
//! `tests/corpus.rs` replays the corpus and the regression inputs in the
//! ordinary test run. See `fuzz/README.md` for how to run a campaign.

pub mod config;
pub mod control;
pub mod frame;
pub mod replay;
pub mod seeds;
pub mod topic;

/// A target's entry point: panics when a checked property does not hold.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame::run),
    ("config", config::run),
    ("topic", topic::run),
    ("control", control::run),
];
