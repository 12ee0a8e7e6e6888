//! `authorization: Bearer <token>` on gRPC calls.
//!
//! Data calls (Bus) follow the QUIC rules through the session layer
//! (`Core::authenticate`): with tokens configured, one of them must be
//! presented, else `UNAUTHENTICATED`. Admin calls need the admin token:
//! none presented (or one that is no token at all) is `UNAUTHENTICATED`; a
//! token that is valid for data but is not the admin token is
//! `PERMISSION_DENIED`. Without an admin token, the Admin service exists
//! only on a loopback listener of a server that has no data tokens either
//! (see [`AdminAuth::served`]): a server whose data is protected by tokens
//! must not leave its operator API open to every local process.

use tonic::metadata::MetadataMap;
use tonic::Status;

use super::status;
use crate::auth::Auth;
use crate::error::RequestError;
use crate::permissions::Denials;

/// The presented bearer token, if any. A header that is there but is not
/// `Bearer <token>` is refused rather than ignored.
pub(super) fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let refuse = |why| status(&RequestError::Unauthenticated(why));
    let value = value
        .to_str()
        .map_err(|_| refuse("authorization metadata is not ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| refuse("authorization metadata must be `Bearer <token>`"))?;
    Ok(Some(token.trim()).filter(|t| !t.is_empty()))
}

/// The admin token, and whether Admin is served at all.
#[derive(Debug)]
pub(crate) struct AdminAuth {
    token: Option<Auth>,
    served: bool,
}

impl AdminAuth {
    /// `data_tokens`: whether data calls need a token.
    pub(crate) fn new(token: Option<&str>, loopback_listener: bool, data: &Auth) -> AdminAuth {
        AdminAuth {
            served: token.is_some()
                || data.has_admin_principal()
                || (loopback_listener && !data.required()),
            token: token.map(|t| Auth::new(&[t.to_owned()])),
        }
    }

    /// Whether the Admin service is registered: with an admin token or a
    /// principal with `admin = true`, or without either only on a loopback
    /// listener of a server without data tokens.
    pub(crate) fn served(&self) -> bool {
        self.served
    }

    /// Whether an admin token is configured.
    pub(crate) fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// Checks an Admin call: the admin token, or the token of a principal
    /// with `admin = true`. `data` tells a data token without the admin
    /// permission (PERMISSION_DENIED, counted in `denials`) from no valid
    /// token at all (UNAUTHENTICATED).
    pub(super) fn check(
        &self,
        data: &Auth,
        denials: &Denials,
        metadata: &MetadataMap,
    ) -> Result<(), Status> {
        if self.token.is_none() && !data.required() {
            // Loopback-only and tokenless: anyone who can reach it.
            return Ok(());
        }
        let refuse = |e: RequestError| Err(status(&e));
        let Some(presented) = bearer(metadata)? else {
            return refuse(RequestError::Unauthenticated(
                "admin calls need the admin token: send `authorization: Bearer <admin token>`",
            ));
        };
        if self
            .token
            .as_ref()
            .is_some_and(|a| a.check(presented).is_ok())
        {
            return Ok(());
        }
        match data.check(presented) {
            Ok(principal) if principal.is_admin() => Ok(()),
            Ok(_) => {
                denials.count_admin();
                refuse(RequestError::PermissionDenied(
                    "this token may publish and subscribe but may not call Admin",
                ))
            }
            Err(_) => refuse(RequestError::Unauthenticated("token not accepted")),
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
        let denials = Denials::default();
        let admin = AdminAuth::new(Some("root"), false, &data);
        assert!(admin.served());
        assert!(admin
            .check(&data, &denials, &md(Some("Bearer root")))
            .is_ok());
        let code = |m| admin.check(&data, &denials, &m).unwrap_err().code();
        assert_eq!(code(md(None)), Code::Unauthenticated);
        assert_eq!(code(md(Some("Bearer data"))), Code::PermissionDenied);
        assert_eq!(code(md(Some("Bearer nope"))), Code::Unauthenticated);
        assert_eq!(code(md(Some("Basic root"))), Code::Unauthenticated);
        let e = admin
            .check(&data, &denials, &md(Some("Bearer data")))
            .unwrap_err();
        assert_eq!(denials.admin(), 2);
        assert_eq!(
            e.metadata().get(super::super::ERROR_CODE_KEY).unwrap(),
            "12"
        );
        // With no data tokens every token is a valid data identity.
        let open = Auth::new(&[]);
        assert_eq!(
            admin
                .check(&open, &denials, &md(Some("Bearer x")))
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
    }

    #[test]
    fn tokenless_admin_only_on_loopback_without_data_tokens() {
        let none = Auth::new(&[]);
        let tokens = Auth::new(&["t".into()]);
        assert!(AdminAuth::new(None, true, &none).served());
        assert!(!AdminAuth::new(None, false, &none).served());
        assert!(
            !AdminAuth::new(None, true, &tokens).served(),
            "data tokens set and no admin token: Admin is not served"
        );
        let open = AdminAuth::new(None, true, &none);
        assert!(open.check(&none, &Denials::default(), &md(None)).is_ok());
    }

    #[test]
    fn malformed_authorization_is_refused_with_a_code() {
        let mut m = MetadataMap::new();
        m.insert("authorization", "Token x".parse().unwrap());
        let e = bearer(&m).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.metadata().get(super::super::ERROR_CODE_KEY).unwrap(), "2");
    }
}
