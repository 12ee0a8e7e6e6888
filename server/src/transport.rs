//! Which edge a connection came through: the label the connection table,
//! the admin API and the metrics share. Its own module so that `metrics`
//! and `connections` need not import each other.

/// The network front end a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The QUIC edge (`lapwing/1`).
    Quic,
    /// The gRPC edge (HTTP/2).
    Grpc,
}

impl Transport {
    /// Both, in the order metrics list them.
    pub const ALL: [Transport; 2] = [Transport::Quic, Transport::Grpc];

    /// `"quic"` or `"grpc"`, as the admin API and metrics label them.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Grpc => "grpc",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Transport::Quic => 0,
            Transport::Grpc => 1,
        }
    }
}
