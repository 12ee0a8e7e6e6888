//! Server-wide byte budgets: what all clients together may make the server
//! hold, whatever each one does.
//!
//! Two budgets use this one type: ring memory (`limits.ring_memory_bytes`,
//! reserved when a topic's ring is allocated and released when the topic is
//! gone) and bytes held for partial frames (`limits.partial_frame_bytes`,
//! charged by both edges while a frame or gRPC message is arriving). A
//! reservation is an RAII [`Reservation`], so nothing can forget to give
//! bytes back, on any path.
//!
//! The counter is one atomic updated with a CAS loop: taken when a ring is
//! created or a read of a partial frame completes, never per message
//! delivered.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// See the module docs.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    refused: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A budget that never refuses (tests, and topics made outside a server).
    pub fn unlimited() -> Arc<Budget> {
        Budget::new(usize::MAX)
    }

    /// Reserves `bytes`, or `None` (and one more refusal counted) if they
    /// would take the total over the limit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut reservation = self.empty();
        if reservation.grow(bytes) {
            Some(reservation)
        } else {
            None
        }
    }

    /// A reservation of 0 bytes, to [`Reservation::grow`] later.
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reservations refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok();
        if !taken {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// Bytes held from a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The limit of the budget this reservation is from.
    pub fn budget_limit(&self) -> usize {
        self.budget.limit
    }

    /// Holds `more` bytes too; false (and nothing changed) if the budget
    /// cannot give them.
    pub fn grow(&mut self, more: usize) -> bool {
        if more == 0 {
            return true;
        }
        let ok = self.budget.take(more);
        if ok {
            self.bytes += more;
        }
        ok
    }

    /// Holds exactly `bytes` from now on: gives back what is over, or takes
    /// what is missing (false, and nothing changed, if it cannot).
    pub fn set(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            self.budget.give_back(self.bytes - bytes);
            self.bytes = bytes;
            true
        } else {
            self.grow(bytes - self.bytes)
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let b = Budget::new(100);
        let a = b.reserve(60).expect("fits");
        assert!(b.reserve(41).is_none(), "would exceed the limit");
        assert_eq!(b.refused(), 1);
        let mut c = b.reserve(40).expect("fits exactly");
        assert_eq!(b.used(), 100);
        drop(a);
        assert_eq!(b.used(), 40);
        assert!(c.set(90));
        assert!(!c.set(101), "over the limit: unchanged");
        assert_eq!(c.bytes(), 90);
        assert!(c.set(5));
        assert_eq!(b.used(), 5);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(Budget::unlimited().reserve(usize::MAX).is_some());
    }
}
