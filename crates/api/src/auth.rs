//! Bearer-token authentication. Handlers name the role they need by taking an [`Issuer`]
//! or a [`Viewer`] argument, so a route cannot forget to check.

use crate::config::{ApiToken, Role};
use crate::error::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The configured tokens, kept only as SHA-256 digests.
///
/// A presented token is hashed and compared digest to digest in constant time, against
/// every entry without stopping early, so neither the comparison nor the position of a
/// match tells an attacker how close a guess was.
#[derive(Clone)]
pub(crate) struct TokenTable {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    name: Arc<str>,
    role: Role,
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The token's name; recorded as issuer or canceller.
    pub name: Arc<str>,
    /// What the token may do.
    pub role: Role,
}

impl TokenTable {
    /// Builds the table; empty tokens are skipped so that an empty bearer never matches.
    pub(crate) fn new(tokens: &[ApiToken]) -> Self {
        let entries = tokens
            .iter()
            .filter(|t| !t.token.is_empty())
            .map(|t| Entry {
                digest: digest(t.token.as_bytes()),
                name: Arc::from(t.name.as_str()),
                role: t.role,
            })
            .collect();
        TokenTable { entries }
    }

    /// The caller holding `token`, if any.
    pub(crate) fn lookup(&self, token: &[u8]) -> Option<Caller> {
        let presented = digest(token);
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            let same = constant_time_eq(&entry.digest, &presented);
            // Keep scanning after a match: the loop always runs over every entry.
            if same && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|e| Caller {
            name: Arc::clone(&e.name),
            role: e.role,
        })
    }

    /// The caller named by the request's `Authorization: Bearer` header.
    fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?
            .as_bytes();
        let token = bearer_token(value).ok_or(ApiError::Unauthorized)?;
        self.lookup(token).ok_or(ApiError::Unauthorized)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// The token in `Bearer <token>` (scheme case-insensitive, RFC 7235), without
/// surrounding spaces.
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let scheme = header.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = header.get(7..)?.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A caller whose token may issue, update and cancel alerts.
pub(crate) struct Issuer(pub Caller);

/// Any authenticated caller (issuers may do everything viewers may).
pub(crate) struct Viewer(pub Caller);

impl<S> FromRequestParts<S> for Viewer
where
    S: Send + Sync,
    Arc<TokenTable>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Arc::<TokenTable>::from_ref(state)
            .authenticate(parts)
            .map(Viewer)
    }
}

impl<S> FromRequestParts<S> for Issuer
where
    S: Send + Sync,
    Arc<TokenTable>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Arc::<TokenTable>::from_ref(state).authenticate(parts)?;
        match caller.role {
            Role::Issuer => Ok(Issuer(caller)),
            Role::Viewer => Err(ApiError::Forbidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TokenTable {
        TokenTable::new(&[
            ApiToken {
                name: "ops".into(),
                token: "issuer-token-0123".into(),
                role: Role::Issuer,
            },
            ApiToken {
                name: "wall".into(),
                token: "viewer-token-0123".into(),
                role: Role::Viewer,
            },
            ApiToken {
                name: "blank".into(),
                token: String::new(),
                role: Role::Issuer,
            },
        ])
    }

    #[test]
    fn tokens_resolve_to_their_names_and_roles() {
        let t = table();
        let ops = t.lookup(b"issuer-token-0123").unwrap();
        assert_eq!((&*ops.name, ops.role), ("ops", Role::Issuer));
        let wall = t.lookup(b"viewer-token-0123").unwrap();
        assert_eq!((&*wall.name, wall.role), ("wall", Role::Viewer));
        assert!(t.lookup(b"issuer-token-012").is_none());
        assert!(
            t.lookup(b"").is_none(),
            "an empty configured token must never match"
        );
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
        assert_eq!(bearer_token(b""), None);
    }
}
