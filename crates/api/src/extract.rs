//! Extractors that turn every malformed request into an [`ApiError`] naming what is
//! wrong, instead of axum's plain-text rejections.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use tocsin_core::AlertId;
use tocsin_router::DeliveryState;

/// Longest alert id accepted in a path.
pub const MAX_ID_CHARS: usize = 128;

/// The body of `req` if its content type passes `accepts` (else `wrong_type`), read no
/// further than the router's body limit (`413` naming it past that).
pub(crate) async fn limited_body<S: Send + Sync>(
    req: Request,
    state: &S,
    accepts: fn(Option<&[u8]>) -> bool,
    wrong_type: ApiError,
) -> Result<Bytes, ApiError> {
    if !accepts(
        req.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
    ) {
        return Err(wrong_type);
    }
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or(usize::MAX);
    // `Bytes` honours the router's `DefaultBodyLimit` and stops reading past it.
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::Invalid {
                field: None,
                message: format!("could not read the request body: {rejection}"),
            }
        }
    })
}

/// A JSON body, checked for content type and size, with serde errors turned into
/// `invalid` errors that name the field (`area[0].coordinates`, `headline`).
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = limited_body(req, state, is_json, ApiError::UnsupportedMediaType).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The configured body limit, put in request extensions so rejections can quote it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimit(pub usize);

/// A Content-Type header's media type without its parameters, lower-cased
/// (`Application/JSON; charset=utf-8` → `application/json`).
pub(crate) fn media_type(content_type: Option<&[u8]>) -> Option<String> {
    let ct = std::str::from_utf8(content_type?).ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// `application/json` or any `application/*+json`, parameters (charset) allowed.
fn is_json(content_type: Option<&[u8]>) -> bool {
    media_type(content_type).is_some_and(|m| {
        m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
    })
}

/// Deserializes a JSON document, naming the field serde stumbled on.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        ApiError::Invalid {
            field: field_name(&path, &message),
            message,
        }
    })?;
    // Trailing bytes after the document are as wrong as a missing brace.
    de.end().map_err(|e| ApiError::Invalid {
        field: None,
        message: e.to_string(),
    })?;
    Ok(value)
}

/// The field an error is about: the path serde reached, plus the name quoted in
/// "missing field `x`", whose path stops at the parent.
fn field_name(path: &str, message: &str) -> Option<String> {
    let parent = (path != "." && !path.is_empty()).then_some(path);
    let quoted = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| {
            let rest = message.strip_prefix(prefix)?;
            rest.split('`').next()
        });
    match (parent, quoted) {
        // serde_path_to_error already ends the path with an unknown key's name.
        (Some(p), Some(q)) if p == q || p.ends_with(&format!(".{q}")) => Some(p.to_owned()),
        (Some(p), Some(q)) => Some(format!("{p}.{q}")),
        (None, Some(q)) => Some(q.to_owned()),
        (Some(p), None) => Some(p.to_owned()),
        (None, None) => None,
    }
}

/// The `{id}` of an alert route, checked to look like an id before the gateway sees it.
pub(crate) struct AlertIdPath(pub AlertId);

impl<S: Send + Sync> FromRequestParts<S> for AlertIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("id", format!("bad alert id in path: {e}")))?;
        parse_alert_id(&raw).map(AlertIdPath)
    }
}

/// Alert ids are UUIDv7 text made by the daemon; ASCII letters, digits and `-_.:` cover
/// them and any upstream identifier worth keeping.
pub(crate) fn parse_alert_id(raw: &str) -> Result<AlertId, ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_ID_CHARS
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(AlertId::from(raw))
    } else {
        Err(ApiError::invalid(
            "id",
            format!("an alert id is 1 to {MAX_ID_CHARS} ASCII letters, digits or -_.:"),
        ))
    }
}

/// The query of `GET /v1/alerts/{id}/deliveries`: only `state`, once at most.
pub(crate) fn parse_deliveries_query(
    query: Option<&str>,
) -> Result<Option<DeliveryState>, ApiError> {
    let mut state = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "state" {
            return Err(ApiError::invalid(
                key,
                "unknown query parameter; only `state` is accepted",
            ));
        }
        if state.is_some() {
            return Err(ApiError::invalid("state", "given more than once"));
        }
        let parsed: DeliveryState = serde_json::from_value(serde_json::Value::String(value.to_owned()))
            .map_err(|_| {
                ApiError::invalid(
                    "state",
                    "must be one of planned, attempting, reached, acknowledged, escalated, confirmed, unreached, cancelled, withdrawn",
                )
            })?;
        state = Some(parsed);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewAlert;

    fn field(e: ApiError) -> Option<String> {
        match e {
            ApiError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn serde_errors_name_the_field() {
        let base = r#""kind": "flood", "headline": "h", "text": "t", "area": {"type": "Named", "id": "v"}"#;
        let e = parse_json::<NewAlert>(format!(r#"{{"grade": "purple", {base}}}"#).as_bytes())
            .unwrap_err();
        assert_eq!(field(e), Some("grade".into()));
        let e = parse_json::<NewAlert>(br#"{"grade": "red"}"#).unwrap_err();
        assert_eq!(field(e), Some("kind".into()), "missing fields are named");
        let e = parse_json::<NewAlert>(
            format!(r#"{{"grade": "red", "colour": 1, {base}}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(field(e), Some("colour".into()), "unknown fields are named");
        let e = parse_json::<NewAlert>(
            format!(r#"{{"grade": "red", {base}, "exercise": "yes"}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(field(e), Some("exercise".into()), "wrong types are named");
        let e = parse_json::<NewAlert>(
            br#"{"grade": "red", "kind": "k", "headline": "h", "text": "t", "area": [{"type": "Named", "id": "v"}, {"type": "Circle", "center": "x", "radius_m": 1}]}"#,
        )
        .unwrap_err();
        let f = field(e).unwrap();
        assert!(f.starts_with("area[1]"), "{f}");
    }

    #[test]
    fn syntax_errors_and_trailing_bytes_are_invalid() {
        let e = parse_json::<NewAlert>(br#"{"grade": "red""#).unwrap_err();
        assert!(matches!(e, ApiError::Invalid { .. }));
        let ok = br#"{"grade": "red", "kind": "k", "headline": "h", "text": "t", "area": {"type": "Named", "id": "v"}}"#;
        assert!(parse_json::<NewAlert>(ok).is_ok());
        let mut trailing = ok.to_vec();
        trailing.extend_from_slice(b" {}");
        assert!(parse_json::<NewAlert>(&trailing).is_err());
    }

    #[test]
    fn content_types() {
        assert!(is_json(Some(b"application/json")));
        assert!(is_json(Some(b"Application/JSON; charset=utf-8")));
        assert!(is_json(Some(b"application/merge-patch+json")));
        assert!(!is_json(Some(b"text/plain")));
        assert!(!is_json(Some(b"application/x-www-form-urlencoded")));
        assert!(!is_json(Some(&[0xff, 0xfe])));
        assert!(!is_json(None));
    }

    #[test]
    fn alert_ids() {
        assert!(parse_alert_id("0192f5a4-7c1e-7b3a-9d2e-4f6a8b0c1d2e").is_ok());
        assert!(parse_alert_id("").is_err());
        assert!(parse_alert_id("a b").is_err());
        assert!(parse_alert_id("../etc").is_err());
        assert!(parse_alert_id(&"a".repeat(129)).is_err());
        assert!(parse_alert_id("警报").is_err());
    }

    #[test]
    fn deliveries_query() {
        assert_eq!(parse_deliveries_query(None).unwrap(), None);
        assert_eq!(parse_deliveries_query(Some("")).unwrap(), None);
        assert_eq!(
            parse_deliveries_query(Some("state=acknowledged")).unwrap(),
            Some(DeliveryState::Acknowledged)
        );
        assert_eq!(
            field(parse_deliveries_query(Some("state=asleep")).unwrap_err()),
            Some("state".into())
        );
        assert_eq!(
            field(parse_deliveries_query(Some("colour=red")).unwrap_err()),
            Some("colour".into())
        );
        assert!(parse_deliveries_query(Some("state=reached&state=planned")).is_err());
    }
}
