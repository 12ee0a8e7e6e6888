//! `authorization: Bearer <token>` on gRPC calls.
//!
//! Data calls (Bus) follow the QUIC rules: with tokens configured, one of
//! them must be presented, else `UNAUTHENTICATED`. Admin calls need the
//! admin token: none presented (or one that is no token at all) is
//! `UNAUTHENTICATED`; a token that is valid for data but is not the admin
//! token is `PERMISSION_DENIED`. With no admin token configured, the Admin
//! service exists only on a loopback listener (see [`AdminAuth::served`]).

use lapwing_proto::v1::ErrorCode;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::status;
use crate::auth::{Auth, AuthError};

/// The presented bearer token, if any. A header that is there but is not
/// `Bearer <token>` is refused rather than ignored.
fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        status(
            ErrorCode::Unauthenticated,
            "authorization metadata is not ASCII",
        )
    })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            status(
                ErrorCode::Unauthenticated,
                "authorization metadata must be `Bearer <token>`",
            )
        })?;
    Ok(Some(token.trim()).filter(|t| !t.is_empty()))
}

/// Checks a data call (Bus).
pub(super) fn check_data(auth: &Auth, metadata: &MetadataMap) -> Result<(), Status> {
    if !auth.required() {
        return Ok(());
    }
    match auth.check(bearer(metadata)?.unwrap_or("")) {
        Ok(()) => Ok(()),
        Err(AuthError::Missing) => Err(status(
            ErrorCode::Unauthenticated,
            "this server requires a token: send `authorization: Bearer <token>`",
        )),
        Err(AuthError::Rejected) => Err(status(ErrorCode::Unauthenticated, "token not accepted")),
    }
}

/// The admin token, and whether Admin is served at all.
#[derive(Debug)]
pub(crate) struct AdminAuth {
    token: Option<Auth>,
    loopback_listener: bool,
}

impl AdminAuth {
    pub(crate) fn new(token: Option<&str>, loopback_listener: bool) -> AdminAuth {
        AdminAuth {
            token: token.map(|t| Auth::new(&[t.to_owned()])),
            loopback_listener,
        }
    }

    /// Whether the Admin service is registered: with an admin token, or
    /// without one only on a loopback listener.
    pub(crate) fn served(&self) -> bool {
        self.token.is_some() || self.loopback_listener
    }

    /// Whether an admin token is configured.
    pub(crate) fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// Checks an Admin call. `data` tells a data token (PERMISSION_DENIED)
    /// from no valid token at all (UNAUTHENTICATED).
    pub(super) fn check(&self, data: &Auth, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(admin) = &self.token else {
            // Loopback-only and tokenless: anyone who can reach it.
            return Ok(());
        };
        let Some(presented) = bearer(metadata)? else {
            return Err(status(
                ErrorCode::Unauthenticated,
                "admin calls need the admin token: send `authorization: Bearer <admin token>`",
            ));
        };
        if admin.check(presented).is_ok() {
            return Ok(());
        }
        if data.check(presented).is_ok() {
            Err(status(
                ErrorCode::PermissionDenied,
                "this token may publish and subscribe but is not the admin token",
            ))
        } else {
            Err(status(ErrorCode::Unauthenticated, "token not accepted"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn md(auth: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(a) = auth {
            m.insert("authorization", a.parse().unwrap());
        }
        m
    }

    #[test]
    fn admin_token_rules() {
        let data = Auth::new(&["data".into()]);
        let admin = AdminAuth::new(Some("root"), false);
        assert!(admin.served());
        assert!(admin.check(&data, &md(Some("Bearer root"))).is_ok());
        let code = |m| admin.check(&data, &m).unwrap_err().code();
        assert_eq!(code(md(None)), Code::Unauthenticated);
        assert_eq!(code(md(Some("Bearer data"))), Code::PermissionDenied);
        assert_eq!(code(md(Some("Bearer nope"))), Code::Unauthenticated);
        assert_eq!(code(md(Some("Basic root"))), Code::Unauthenticated);
        // With no data tokens every token is a valid data identity.
        let open = Auth::new(&[]);
        assert_eq!(
            admin
                .check(&open, &md(Some("Bearer x")))
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
    }

    #[test]
    fn tokenless_admin_only_on_loopback() {
        assert!(AdminAuth::new(None, true).served());
        assert!(!AdminAuth::new(None, false).served());
        let open = AdminAuth::new(None, true);
        assert!(open.check(&Auth::new(&[]), &md(None)).is_ok());
    }

    #[test]
    fn data_calls_follow_the_quic_rules() {
        assert!(check_data(&Auth::new(&[]), &md(None)).is_ok());
        let a = Auth::new(&["t".into()]);
        assert!(check_data(&a, &md(Some("Bearer t"))).is_ok());
        assert_eq!(
            check_data(&a, &md(None)).unwrap_err().code(),
            Code::Unauthenticated
        );
        let e = check_data(&a, &md(Some("Bearer u"))).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.metadata().get(super::super::ERROR_CODE_KEY).unwrap(), "2");
    }
}
