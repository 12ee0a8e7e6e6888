//! What the user's handles ask of the session driver ([`crate::driver`]).
//! A module of its own so that the handles and the driver both depend on
//! it, and not on each other.

use tokio::sync::oneshot;

/// A request to the session driver, sent over its unbounded command
/// channel. While any sender of that channel lives (every [`crate::Client`],
/// [`crate::Publisher`] and [`crate::Subscription`] holds one), the driver
/// keeps the connection up; when the last one is dropped it closes it.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Send Subscribe for this (already registered) subscription id.
    Subscribe(u64),
    /// Send Unsubscribe for this id (already removed from the registry).
    Unsubscribe(u64),
    /// Close the connection normally and stop; reply when done.
    Close(oneshot::Sender<()>),
}
