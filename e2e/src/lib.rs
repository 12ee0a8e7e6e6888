//! End-to-end tests of Lapwing: a real server and real clients over loopback
//! sockets, in one process. The tests live in `tests/`; this crate has no
//! library code of its own.
