//! Waking subscriber tasks when a topic gets a new message, at no cost to
//! the publisher when nobody waits.
//!
//! A subscriber that drained its ring parks on the topic's [`Wakeup`]; the
//! publisher calls [`Wakeup::wake`] after every publish. Most publishes
//! happen while every subscriber is busy writing (or there are none), so
//! `wake` must be nearly free then: it reads an atomic waiter count and
//! calls `Notify::notify_waiters` (which takes a mutex) only if it is not
//! zero.
//!
//! The classic lost wakeup: a subscriber checks the ring (empty), the
//! publisher publishes and sees no waiter, the subscriber then parks and
//! sleeps with a message in the ring. [`Wakeup::wait_until`] prevents it
//! with this order:
//!
//! 1. create the `Notified` future and `enable()` it (from here on a
//!    `notify_waiters` call wakes it even before it is polled),
//! 2. increment the waiter count, then a SeqCst fence,
//! 3. re-check the condition (`Reader::has_new()`); only if still false, await.
//!
//! The publisher writes the ring, then a SeqCst fence, then loads the
//! count. The two fences order the store-then-load pairs on both sides
//! (Dekker): either the subscriber's re-check sees the message, or the
//! publisher sees the waiter and notifies it (and the future registered in
//! step 1 catches that notification). The fence is the whole cost of a
//! publish nobody waits for.

use std::sync::atomic::{fence, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Wakeup {
    waiters: AtomicUsize,
    notify: Notify,
}

impl Wakeup {
    /// A wakeup with nobody waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every task parked in [`Wakeup::wait_until`]. Call after the
    /// state they check has changed.
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Returns once `ready()` is true, sleeping in between. `ready` must
    /// become true only through changes followed by [`Wakeup::wake`].
    /// Cancel-safe.
    pub async fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        loop {
            if ready() {
                return;
            }
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let _guard = WaiterGuard::register(&self.waiters);
            if ready() {
                return;
            }
            notified.await;
        }
    }

    /// Number of tasks currently parked (for stats and tests).
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }
}

/// Keeps the waiter count right even when the waiting future is dropped
/// (a subscriber task cancelled by unsubscribe or shutdown).
#[derive(Debug)]
struct WaiterGuard<'a>(&'a AtomicUsize);

impl<'a> WaiterGuard<'a> {
    fn register(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        WaiterGuard(count)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wake_without_waiters_does_nothing() {
        let w = Wakeup::new();
        w.wake();
        assert_eq!(w.waiters(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_lost_wakeups_under_racing_publisher() {
        // Ping-pong: a publisher thread sets the value to k and wakes, then
        // waits until the waiter acknowledges k. Every wakeup matters, so
        // one lost wakeup stalls the round and fails the test by timeout.
        const ROUNDS: u64 = 10_000;
        let w = Arc::new(Wakeup::new());
        let value = Arc::new(AtomicU64::new(0));
        let ack = Arc::new(AtomicU64::new(0));
        let (w2, v2, a2) = (w.clone(), value.clone(), ack.clone());
        let waiter = tokio::spawn(async move {
            for want in 1..=ROUNDS {
                w2.wait_until(|| v2.load(Ordering::Relaxed) >= want).await;
                a2.store(want, Ordering::Release);
            }
        });
        let publisher = std::thread::spawn(move || {
            for k in 1..=ROUNDS {
                value.store(k, Ordering::Relaxed);
                w.wake();
                let started = std::time::Instant::now();
                while ack.load(Ordering::Acquire) < k {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "round {k}: waiter never woke (lost wakeup)"
                    );
                    std::thread::yield_now();
                }
            }
            w
        });
        tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("waiter stuck: lost wakeup")
            .unwrap();
        let w = publisher.join().unwrap();
        assert_eq!(w.waiters(), 0);
    }

    #[tokio::test]
    async fn cancelled_wait_unregisters() {
        let w = Wakeup::new();
        let fut = w.wait_until(|| false);
        let r = tokio::time::timeout(Duration::from_millis(1), fut).await;
        assert!(r.is_err());
        assert_eq!(w.waiters(), 0);
    }
}
