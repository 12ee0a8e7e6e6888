//! `lapwing-ring`: the lossy, seqlock-stamped byte ring behind every Lapwing
//! topic.
//!
//! TODO crate docs
#![forbid(unsafe_code)]

mod batch;
mod config;
mod publisher;
mod reader;
mod ring;
mod slot;
mod sync;

pub use batch::{Batch, BatchEvent};
pub use config::{ConfigError, Geometry, RingConfig, MAX_CAPACITY_BYTES, MIN_CAPACITY_BYTES};
pub use publisher::{MpPublisher, PublishError, Publisher};
pub use reader::{Lagged, ReadOutcome, Reader, ReaderStats, Resume, Start, MAX_START_SEQ};
pub use ring::Ring;
