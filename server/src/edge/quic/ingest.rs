//! The ingest lane: where publishes enter the server, on threads of its
//! own.
//!
//! Why: a publish of one message costs one ring write, its fanout costs a
//! batch encode, an AEAD seal and a datagram for every subscriber. On one
//! runtime the publisher is one task among hundreds; each subscription
//! task drains everything published since its last turn, so a round of
//! the scheduler lasts as long as the fanout of what was published in it,
//! and the publisher gets one turn, one receive window, per round. With
//! 200 subscribers at 1 KiB that left it under 1 % of its publish-only
//! rate (BENCHMARKS.md, "QUIC EFFICIENCY"). The ring is lossy so that a
//! publisher never waits on subscribers; this lane makes that true of CPU
//! time too: the OS shares the cores between the lane's threads and the
//! server's, and subscribers that cannot keep up are lapped and resynced.
//!
//! What runs here:
//! - the endpoint's driver: every datagram the server receives is read
//!   and routed here, so a publisher's packets never queue behind fanout;
//! - the connection driver (decrypt, acknowledge) of every connection that
//!   has opened a publish stream;
//! - the publish streams' tasks (frames into rings).
//!
//! Everything else stays on the server's runtime: subscription tasks,
//! control streams, and the drivers of connections that only subscribe,
//! which seal and send the fanout.
//!
//! How a connection moves: quinn spawns a connection's driver when the
//! connection is accepted, before the server knows what it will do. The
//! endpoint's runtime, [`Lanes`], wraps each driver so that it can be
//! moved, and [`caught`] hands the accepting code a [`Mover`] for it.
//! When the connection opens its first publish stream, the control task
//! moves the driver here. A moved driver is polled at once on the ingest
//! runtime, which registers every waker anew; a wake that reaches the old
//! task in between finds it finished and is not needed, because that
//! first poll looks at everything anyway. Timers follow the driver on its
//! next reset ([`LaneTimer`]).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::task::AtomicWaker;
use tokio::runtime::{Handle, Runtime};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// Set on the ingest runtime's threads.
    static ON_INGEST: Cell<bool> = const { Cell::new(false) };
    /// Armed by [`caught`]: where [`Lanes::spawn`] leaves the mover of
    /// the task it spawns.
    static CAUGHT: RefCell<Option<Option<Mover>>> = const { RefCell::new(None) };
}

/// The ingest lane's runtime; stopped (its tasks dropped) when this is.
pub(crate) struct Ingest {
    runtime: Option<Runtime>,
}

impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingest").finish_non_exhaustive()
    }
}

impl Ingest {
    /// Starts the lane on `threads` threads of its own.
    pub(crate) fn start(threads: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("lapwing-ingest")
            .on_thread_start(|| ON_INGEST.with(|on| on.set(true)))
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Where to spawn ingest work.
    pub(crate) fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // Not a blocking drop: the server may be dropped inside a runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `f` (which makes quinn spawn at most one task, such as accepting a
/// connection) and returns the [`Mover`] of the task it spawned through
/// [`Lanes`], if any.
pub(crate) fn caught<T>(f: impl FnOnce() -> T) -> (T, Option<Mover>) {
    CAUGHT.with(|c| *c.borrow_mut() = Some(None));
    let out = f();
    let mover = CAUGHT.with(|c| c.borrow_mut().take().flatten());
    (out, mover)
}

/// The runtime the QUIC endpoint is built on: tokio's, except that every
/// task quinn spawns (the endpoint's driver, each connection's driver)
/// starts on the server's runtime and can be moved to the ingest lane.
#[derive(Debug)]
pub(crate) struct Lanes {
    main: Handle,
}

impl Lanes {
    /// Spawns on `main` until a task is moved.
    pub(crate) fn new(main: Handle) -> Self {
        Self { main }
    }
}

impl quinn::Runtime for Lanes {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        Box::pin(LaneTimer::new(at))
    }

    fn spawn(&self, task: Task) {
        let lane = Arc::new(Lane::default());
        CAUGHT.with(|c| {
            if let Some(slot) = c.borrow_mut().as_mut() {
                *slot = Some(Mover(lane.clone()));
            }
        });
        self.main.spawn(Movable {
            task: Some(task),
            lane,
        });
    }

    fn wrap_udp_socket(
        &self,
        t: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        quinn::TokioRuntime.wrap_udp_socket(t)
    }

    fn now(&self) -> Instant {
        quinn::TokioRuntime.now()
    }
}

/// Where a movable task is asked to go.
#[derive(Default)]
struct Lane {
    requested: AtomicBool,
    target: Mutex<Option<Handle>>,
    /// The task's waker, to make it see a request.
    waker: AtomicWaker,
}

/// Moves one task spawned through [`Lanes`] to another runtime.
pub(crate) struct Mover(Arc<Lane>);

impl fmt::Debug for Mover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mover").finish_non_exhaustive()
    }
}

impl Mover {
    /// The task's next poll hands it to `to`, where it goes on. Moving a
    /// task that has ended does nothing.
    pub(crate) fn move_to(self, to: &Handle) {
        *self.0.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(to.clone());
        self.0.requested.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

/// A task that polls `task` until it is asked to move, then spawns it
/// where it was asked to go and ends.
struct Movable {
    task: Option<Task>,
    lane: Arc<Lane>,
}

impl Future for Movable {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Registered before the request is read: a request made after the
        // read wakes this task again.
        this.lane.waker.register(cx.waker());
        if this.lane.requested.load(Ordering::Acquire) {
            let target = this
                .lane
                .target
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let (Some(to), Some(task)) = (target, this.task.take()) {
                to.spawn(task);
            }
            return Poll::Ready(());
        }
        match this.task.as_mut() {
            Some(task) => task.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

/// A quinn timer on the time driver of the lane its task runs on: a task
/// that moved makes a new sleep there on its next reset, so its timers do
/// not wait for the other runtime's time driver (which a busy lane turns
/// less often).
#[derive(Debug)]
struct LaneTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    on_ingest: bool,
}

impl LaneTimer {
    fn new(at: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
            on_ingest: ON_INGEST.with(Cell::get),
        }
    }
}

impl quinn::AsyncTimer for LaneTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        if ON_INGEST.with(Cell::get) == self.on_ingest {
            tokio::time::Sleep::reset(self.sleep.as_mut(), at.into());
        } else {
            *self = Self::new(at);
        }
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Future::poll(self.sleep.as_mut(), cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use quinn::Runtime as _;

    fn on_ingest() -> bool {
        ON_INGEST.with(Cell::get)
    }

    /// The task's next report; a bounded wait, so a lost wake fails the
    /// test instead of hanging it.
    async fn next(
        seen: &mut tokio::sync::mpsc::UnboundedReceiver<(u32, bool)>,
    ) -> Option<(u32, bool)> {
        tokio::time::timeout(std::time::Duration::from_secs(10), seen.recv())
            .await
            .expect("a message sent to the task was not handled: a lost wake")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_moved_task_goes_on_on_the_ingest_lane_without_losing_a_wake() {
        let ingest = Ingest::start(1).unwrap();
        let lanes = Lanes::new(Handle::current());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let ((), mover) = caught(|| {
            lanes.spawn(Box::pin(async move {
                while let Some(n) = rx.recv().await {
                    seen_tx.send((n, on_ingest())).unwrap();
                }
            }))
        });
        let mover = mover.expect("the spawn was caught");
        tx.send(1).unwrap();
        assert_eq!(next(&mut seen).await, Some((1, false)));
        // Every message sent after the move request still arrives, in
        // order. The move takes effect at the task's next poll, so the
        // poll in progress (the one that handled message 1) may handle a
        // few more on the server's runtime first; after that the task
        // stays on the lane.
        mover.move_to(ingest.handle());
        let mut moved_at = None;
        for n in 2..100 {
            tx.send(n).unwrap();
            let (got, on_lane) = next(&mut seen).await.expect("the task is alive");
            assert_eq!(got, n, "messages arrive once, in order");
            match (moved_at, on_lane) {
                (None, true) => moved_at = Some(n),
                (Some(at), false) => panic!("back on the server's runtime at {n} (moved at {at})"),
                _ => {}
            }
        }
        assert!(moved_at.is_some(), "the task never reached the lane");
        drop(tx);
        assert_eq!(next(&mut seen).await, None, "the task ends with its input");
    }

    #[test]
    fn only_a_caught_spawn_gives_a_mover() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let lanes = Lanes::new(rt.handle().clone());
        let ((), none) = caught(|| ());
        assert!(none.is_none());
        lanes.spawn(Box::pin(async {}));
        let ((), after) = caught(|| ());
        assert!(after.is_none(), "a spawn outside `caught` is not kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_timer_that_moves_fires_on_its_new_lane() {
        let ingest = Ingest::start(1).unwrap();
        let mut timer = Box::pin(LaneTimer::new(Instant::now()));
        assert!(!timer.on_ingest);
        let moved = ingest.handle().spawn(async move {
            let at = Instant::now() + std::time::Duration::from_millis(5);
            quinn::AsyncTimer::reset(timer.as_mut(), at);
            assert!(
                timer.on_ingest,
                "a reset on the other lane makes a new sleep there"
            );
            std::future::poll_fn(|cx| quinn::AsyncTimer::poll(timer.as_mut(), cx)).await;
            assert!(Instant::now() >= at);
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), moved)
            .await
            .expect("the timer fires on the lane's time driver")
            .unwrap();
    }
}
