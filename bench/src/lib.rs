//! Lapwing's comparative load generator.
//!
//! One scenario engine drives every system through the [`systems::System`]
//! adapter trait, so Lapwing, NATS and Redis are measured by the same code:
//! the same payload (publisher id, per-publisher sequence, send timestamp),
//! the same loss/reorder/duplicate accounting ([`track`]), the same latency
//! histogram and the same CPU bookkeeping ([`cpu`]). `bench/run` starts the
//! servers; this crate only connects to them.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod cpu;
pub mod payload;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod systems;
pub mod track;
