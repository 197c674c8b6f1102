//! The one error type every route answers with: a status code and
//! `{"error": {"code": "...", "field": "...", "message": "..."}}`.

use crate::gateway::GatewayError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a request failed, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one the gateway does not know (401).
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The token is valid but its role may not do this (403).
    #[error("this token may not do that: an issuer token is required")]
    Forbidden,
    /// Something in the request is wrong (400); `field` names it when known.
    #[error("{message}")]
    Invalid {
        /// Path to the field at fault, e.g. `area[0].coordinates[1]`.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// No such route or resource (404).
    #[error("{0} not found")]
    NotFound(String),
    /// The route exists but not with this method (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the configured limit (413).
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not `application/json` (415).
    #[error("request body must be JSON (content-type: application/json)")]
    UnsupportedMediaType,
    /// The body of a CAP route is not XML (415).
    #[error(
        "request body must be a CAP message (content-type: application/cap+xml or application/xml)"
    )]
    NotXml,
    /// A well-formed request the gateway will not act on (422), e.g. a CAP message with a
    /// bad element or status Test; `field` names the element when known.
    #[error("{message}")]
    Unprocessable {
        /// Path to the element at fault, e.g. `alert/info[0]/area[0]/polygon[0]`.
        field: Option<String>,
        /// What is wrong, or why it is not acted on.
        message: String,
    },
    /// The gateway cannot take the request now (503).
    #[error("{0}")]
    Unavailable(String),
    /// Something broke inside (500); the detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming a field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::NotXml => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::Invalid { .. } => "invalid",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType | ApiError::NotXml => "unsupported_media_type",
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Invalid { field, message } => ApiError::Invalid {
                field: (!field.is_empty()).then_some(field),
                message,
            },
            GatewayError::NotFound(what) => ApiError::NotFound(what),
            GatewayError::Conflict(message) => ApiError::Conflict(message),
            GatewayError::Unavailable(message) => ApiError::Unavailable(message),
            GatewayError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error answering an API request")
            }
            ApiError::Unavailable(why) => {
                tracing::warn!(why = %why, "API request refused: gateway unavailable")
            }
            _ => {}
        }
        let field = match &self {
            ApiError::Invalid { field, .. } | ApiError::Unprocessable { field, .. } => {
                field.as_deref()
            }
            _ => None,
        };
        let body = Body {
            error: Detail {
                code: self.code(),
                field,
                // Display of Internal is the fixed "internal error": the detail stays in the log.
                message: self.to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if self == ApiError::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(e: ApiError) -> (StatusCode, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_detail_is_never_sent() {
        let (status, body) = body_of(
            GatewayError::Internal("sqlite: disk I/O error at /var/lib/tocsin".into()).into(),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "internal", "message": "internal error"}})
        );
    }

    #[tokio::test]
    async fn gateway_errors_map_to_statuses_and_fields() {
        let (status, body) =
            body_of(GatewayError::invalid("area[0].id", "unknown named area").into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["field"], "area[0].id");
        assert_eq!(body["error"]["code"], "invalid");
        let (status, body) = body_of(GatewayError::invalid("", "whole body").into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].get("field").is_none());
        assert_eq!(
            ApiError::from(GatewayError::NotFound("alert x".into())).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from(GatewayError::Conflict("cancelled".into())).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            ApiError::from(GatewayError::Unavailable("store".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
