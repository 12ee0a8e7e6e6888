//! Sizing: how a byte budget becomes a header ring and an arena.

use crate::slot::{CHUNK_BYTES, INLINE_MAX, PREFIX_BYTES, SLOT_BYTES};

/// Smallest ring accepted. Below this the header ring would hold so few
/// messages that almost every reader would be lapped on every read.
pub const MIN_CAPACITY_BYTES: usize = 1024;

/// Largest ring accepted. Nothing legitimate needs more than a TiB per topic;
/// a larger number is a typo or an attack, and we refuse it before allocating.
pub const MAX_CAPACITY_BYTES: usize = 1 << 40;

/// What a ring costs and holds: the memory budget and the largest message.
///
/// `capacity_bytes` maps to the two slot arrays like this (slots are 64 bytes):
///
/// * if `max_message_bytes <= 56` every message fits inline in its header, so
///   there is no arena and the header ring gets the whole budget:
///   `H = prev_power_of_two(capacity_bytes / 64)`, `C = 0`;
/// * otherwise the arena gets the largest power of two of slots that fits in
///   three quarters of the budget, `C = prev_power_of_two(capacity_bytes * 3/4 / 64)`,
///   and the header ring the largest power of two that fits in what is left,
///   `H = prev_power_of_two((capacity_bytes - 64 C) / 64)`.
///
/// So `memory_bytes() <= capacity_bytes` always, and for a power-of-two budget
/// the split is half headers, half arena (a 4 KiB ring: `H = 32`, `C = 32`,
/// messages up to 1832 bytes). A message of `len > 56` bytes keeps its first
/// 40 bytes in its header and needs `ceil((len - 40) / 56)` arena slots;
/// `max_message_bytes` must fit (`<= 40 + 56 C`) or the configuration is
/// rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Memory budget for the slots, in bytes.
    pub capacity_bytes: usize,
    /// Largest payload `publish` accepts; larger ones get `PublishError::TooLarge`.
    pub max_message_bytes: usize,
}

impl RingConfig {
    /// A configuration; nothing is checked until a ring is built from it.
    pub fn new(capacity_bytes: usize, max_message_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            max_message_bytes,
        }
    }

    /// The slot counts this configuration yields, or why it is rejected.
    pub fn geometry(&self) -> Result<Geometry, ConfigError> {
        let cap = self.capacity_bytes;
        if cap < MIN_CAPACITY_BYTES {
            return Err(ConfigError::CapacityTooSmall {
                capacity_bytes: cap,
                min: MIN_CAPACITY_BYTES,
            });
        }
        if cap > MAX_CAPACITY_BYTES {
            return Err(ConfigError::CapacityTooLarge {
                capacity_bytes: cap,
                max: MAX_CAPACITY_BYTES,
            });
        }
        // cap <= 2^40, so none of the arithmetic below can overflow.
        let slots = cap / SLOT_BYTES;
        let geometry = if self.max_message_bytes <= INLINE_MAX {
            Geometry {
                header_slots: prev_power_of_two(slots),
                arena_slots: 0,
            }
        } else {
            let arena_slots = prev_power_of_two(slots * 3 / 4);
            Geometry {
                header_slots: prev_power_of_two(slots - arena_slots),
                arena_slots,
            }
        };
        geometry.check(self.max_message_bytes)?;
        Ok(geometry)
    }
}

/// Slot counts of a ring: `H` header slots and `C` arena slots (64 bytes each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `H`: how many messages the ring can hold at most (a power of two).
    pub header_slots: usize,
    /// `C`: 56-byte chunks for payloads over 56 bytes (a power of two, or 0).
    pub arena_slots: usize,
}

impl Geometry {
    /// Bytes of slot memory this geometry allocates.
    pub fn memory_bytes(&self) -> usize {
        self.header_slots
            .saturating_add(self.arena_slots)
            .saturating_mul(SLOT_BYTES)
    }

    /// The largest payload this geometry can hold in one piece.
    pub fn max_storable_message(&self) -> usize {
        if self.arena_slots == 0 {
            INLINE_MAX
        } else {
            self.arena_slots
                .saturating_mul(CHUNK_BYTES)
                .saturating_add(PREFIX_BYTES)
        }
    }

    pub(crate) fn check(&self, max_message_bytes: usize) -> Result<(), ConfigError> {
        let max_slots = MAX_CAPACITY_BYTES / SLOT_BYTES;
        let h_ok = self.header_slots.is_power_of_two() && self.header_slots <= max_slots;
        let c_ok = (self.arena_slots == 0 || self.arena_slots.is_power_of_two())
            && self.arena_slots <= max_slots;
        if !h_ok || !c_ok {
            return Err(ConfigError::BadGeometry {
                header_slots: self.header_slots,
                arena_slots: self.arena_slots,
            });
        }
        let limit = self.max_storable_message();
        if max_message_bytes > limit {
            return Err(ConfigError::MessageDoesNotFit {
                max_message_bytes,
                limit,
            });
        }
        Ok(())
    }
}

/// Why a ring could not be built. Each variant names the number to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The budget is zero or too small to hold a useful ring.
    #[error("ring capacity of {capacity_bytes} bytes is below the minimum of {min} bytes")]
    CapacityTooSmall {
        /// What was asked for.
        capacity_bytes: usize,
        /// The smallest accepted value.
        min: usize,
    },
    /// The budget is absurdly large (see [`MAX_CAPACITY_BYTES`]).
    #[error("ring capacity of {capacity_bytes} bytes is above the maximum of {max} bytes")]
    CapacityTooLarge {
        /// What was asked for.
        capacity_bytes: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// A maximum-size message would not fit in the arena of this ring.
    #[error(
        "max message size of {max_message_bytes} bytes does not fit in this ring \
         (at most {limit} bytes; raise capacity_bytes or lower max_message_bytes)"
    )]
    MessageDoesNotFit {
        /// What was asked for.
        max_message_bytes: usize,
        /// The largest message this ring's arena can hold.
        limit: usize,
    },
    /// Explicit slot counts that are not powers of two (test constructors only).
    #[error(
        "bad ring geometry: {header_slots} header slots and {arena_slots} arena slots \
         (header slots must be a power of two, arena slots a power of two or 0)"
    )]
    BadGeometry {
        /// `H` as given.
        header_slots: usize,
        /// `C` as given.
        arena_slots: usize,
    },
    /// The allocator refused the slot memory.
    #[error("could not allocate {bytes} bytes for the ring")]
    OutOfMemory {
        /// Bytes requested.
        bytes: usize,
    },
}

fn prev_power_of_two(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_kib_ring_is_valid_and_uses_the_whole_budget() {
        let g = RingConfig::new(4096, 1024).geometry().unwrap();
        assert_eq!(
            g,
            Geometry {
                header_slots: 32,
                arena_slots: 32
            }
        );
        assert_eq!(g.memory_bytes(), 4096);
        assert_eq!(g.max_storable_message(), 40 + 32 * 56);
    }

    #[test]
    fn small_messages_need_no_arena() {
        let g = RingConfig::new(4096, 56).geometry().unwrap();
        assert_eq!(
            g,
            Geometry {
                header_slots: 64,
                arena_slots: 0
            }
        );
    }

    #[test]
    fn never_allocates_more_than_the_budget() {
        for cap in [1024, 1500, 3000, 4096, 5000, 65_536, 100_000, 1 << 20] {
            for max in [0, 48, 56, 57, 200, 400] {
                if let Ok(g) = RingConfig::new(cap, max).geometry() {
                    assert!(g.memory_bytes() <= cap, "{cap} {max} {g:?}");
                    assert!(g.header_slots >= 4);
                }
            }
        }
    }

    #[test]
    fn rejects_bad_budgets_with_the_number_to_change() {
        assert!(matches!(
            RingConfig::new(0, 8).geometry(),
            Err(ConfigError::CapacityTooSmall {
                capacity_bytes: 0,
                ..
            })
        ));
        assert!(matches!(
            RingConfig::new(MAX_CAPACITY_BYTES + 1, 8).geometry(),
            Err(ConfigError::CapacityTooLarge { .. })
        ));
        assert!(matches!(
            RingConfig::new(usize::MAX, usize::MAX).geometry(),
            Err(ConfigError::CapacityTooLarge { .. })
        ));
        let err = RingConfig::new(4096, 1833).geometry().unwrap_err();
        assert_eq!(
            err,
            ConfigError::MessageDoesNotFit {
                max_message_bytes: 1833,
                limit: 1832
            }
        );
        assert!(err.to_string().contains("1832"));
    }
}
