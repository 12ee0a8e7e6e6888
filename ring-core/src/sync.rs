//! The one place that decides whether atomics are real or loom's.
//!
//! Every atomic the ring protocol touches goes through this module, so
//! `RUSTFLAGS="--cfg loom"` model-checks exactly the code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

/// Backs off while an older writer of the same slot finishes.
///
/// Spins briefly (the other writer is usually mid-copy on another core), then
/// yields so that on an oversubscribed machine the writer we wait for gets the
/// CPU. Under loom every call is a yield, which loom needs to explore spin
/// loops without diverging.
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    #[cfg(loom)]
    {
        *spins = spins.wrapping_add(1);
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if *spins < 64 {
            *spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
