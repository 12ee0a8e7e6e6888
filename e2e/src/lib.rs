//! End-to-end tests of Lapwing: a real server and real clients over loopback
//! sockets, in one process. The tests live in `tests/`; the library holds
//! what several of them share: the fault relays, [`relay`] for QUIC (UDP:
//! loss, duplicates, reordering, delay, partitions) and [`tcp_relay`] for
//! gRPC (TCP: stall, then reset).

pub mod nats;
pub mod relay;
pub mod tcp_relay;
