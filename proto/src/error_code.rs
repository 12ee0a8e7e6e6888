//! What a client should do about each [`ErrorCode`]. PROTOCOL.md has the
//! same table in prose; keep them in step.

use crate::v1::ErrorCode;

impl ErrorCode {
    /// Whether this error always ends the whole connection (it is then also
    /// the QUIC application close code), as opposed to failing one
    /// subscription, one publish or one stream. `PROTOCOL` and
    /// `FRAME_TOO_LARGE` close the connection only when they concern the
    /// control stream; on a publish stream they stop that stream alone.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::Unauthenticated
                | ErrorCode::UnsupportedVersion
                | ErrorCode::TooManyConnections
                | ErrorCode::ShuttingDown
        )
    }

    /// Whether reconnecting (after a backoff) can succeed without the
    /// client changing anything.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::TooManyConnections
                | ErrorCode::ShuttingDown
                | ErrorCode::Internal
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
        )
    }

    /// The error code for a QUIC application close code; `None` for 0
    /// (normal close) and for codes this version does not know.
    pub fn from_close_code(code: u64) -> Option<ErrorCode> {
        let code = i32::try_from(code).ok()?;
        match ErrorCode::try_from(code) {
            Ok(ErrorCode::Unspecified) | Err(_) => None,
            Ok(c) => Some(c),
        }
    }

    /// The QUIC application close code for this error.
    pub fn close_code(self) -> u32 {
        // Enum values are small and non-negative by definition in the .proto.
        self as i32 as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip() {
        for code in 1..=19u64 {
            let e = ErrorCode::from_close_code(code).expect("known code");
            assert_eq!(u64::from(e.close_code()), code);
        }
        assert_eq!(ErrorCode::from_close_code(0), None);
        assert_eq!(ErrorCode::from_close_code(9999), None);
        assert_eq!(ErrorCode::from_close_code(u64::MAX), None);
    }

    #[test]
    fn only_connection_level_codes_close() {
        assert!(ErrorCode::Unauthenticated.closes_connection());
        assert!(ErrorCode::ShuttingDown.closes_connection());
        assert!(!ErrorCode::MessageTooLarge.closes_connection());
        assert!(!ErrorCode::InvalidTopic.closes_connection());
        assert!(!ErrorCode::Lagged.closes_connection());
        assert!(!ErrorCode::FrameTooLarge.closes_connection());
    }
}
