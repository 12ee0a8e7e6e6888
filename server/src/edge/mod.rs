//! Edges: the network front ends that turn client streams into
//! `Topic::publish` calls and `Drain`s into client streams: QUIC (`quic`)
//! and gRPC (`grpc`), both on `crate::subscription`.

pub(crate) mod grpc;
pub(crate) mod quic;
