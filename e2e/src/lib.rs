//! End-to-end tests of Lapwing: a real server and real clients over loopback
//! sockets, in one process. The tests live in `tests/`; the library holds
//! what several of them share: [`relay`], a UDP relay that injects faults.

pub mod relay;
