//! Edges: the network front ends that turn client streams into
//! `Topic::publish` calls and `Drain`s into client streams. Only QUIC so far;
//! the gRPC edge will sit next to it and reuse `crate::subscription`.

pub(crate) mod quic;
