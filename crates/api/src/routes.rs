//! The routes: one table of (method, path, handler) from which the router is built and
//! against which the OpenAPI document is checked.

use crate::auth::{Issuer, TokenTable, Viewer};
use crate::cap::{already_accepted, submit_cap};
use crate::config::ApiConfig;
use crate::config::Role;
use crate::error::ApiError;
use crate::extract::{AlertIdPath, ApiJson, BodyLimit, parse_deliveries_query};
use crate::gateway::Gateway;
use crate::model::{AlertPatch, GatewayEvent, NewAlert};
use crate::redact::redact;
use axum::extract::{DefaultBodyLimit, FromRef, RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, patch, post};
use axum::{Extension, Json, Router};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tocsin_cap::CapPolicy;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// The OpenAPI 3.1 document served at `/v1/openapi.json`, written by hand; a test checks
/// that it lists exactly the routes the app serves.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// How often an idle event stream gets a comment line, so proxies and NAT boxes on thin
/// links do not drop it as dead.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What every handler can reach.
pub(crate) struct AppState<G> {
    pub(crate) gateway: Arc<G>,
    tokens: Arc<TokenTable>,
    event_streams: Arc<Semaphore>,
    /// How CAP messages map onto the district.
    pub(crate) cap_policy: Arc<CapPolicy>,
    /// Held while a message with an upstream reference is looked up and submitted, so
    /// two pushes of one message cannot both issue it.
    pub(crate) intake: Arc<Mutex<()>>,
}

impl<G> Clone for AppState<G> {
    fn clone(&self) -> Self {
        AppState {
            gateway: Arc::clone(&self.gateway),
            tokens: Arc::clone(&self.tokens),
            event_streams: Arc::clone(&self.event_streams),
            cap_policy: Arc::clone(&self.cap_policy),
            intake: Arc::clone(&self.intake),
        }
    }
}

impl<G> FromRef<AppState<G>> for Arc<TokenTable> {
    fn from_ref(state: &AppState<G>) -> Self {
        Arc::clone(&state.tokens)
    }
}

/// Most `/v1/events` streams open at once (more get `503`): enough for every console
/// and integrator of a district, few enough that watchers cannot exhaust the daemon.
pub const MAX_EVENT_STREAMS: usize = 64;

/// The HTTP API over a gateway. Serve it with `axum::serve`, or call it in tests with
/// `tower::ServiceExt::oneshot`.
/// CAP messages are read with the default [`CapPolicy`]: areas given only by geocodes
/// are refused (see [`app_with_cap_policy`]).
pub fn app<G: Gateway>(gateway: Arc<G>, config: ApiConfig) -> Router {
    app_with_stream_limit(gateway, config, MAX_EVENT_STREAMS, CapPolicy::default())
}

/// [`app`] with the district's CAP policy: its geocode table, the grade for severity
/// Unknown, the preferred languages.
pub fn app_with_cap_policy<G: Gateway>(
    gateway: Arc<G>,
    config: ApiConfig,
    cap_policy: CapPolicy,
) -> Router {
    app_with_stream_limit(gateway, config, MAX_EVENT_STREAMS, cap_policy)
}

/// [`app`] with a different cap on event streams (tests use a small one).
pub(crate) fn app_with_stream_limit<G: Gateway>(
    gateway: Arc<G>,
    config: ApiConfig,
    max_event_streams: usize,
    cap_policy: CapPolicy,
) -> Router {
    let state = AppState {
        gateway,
        tokens: Arc::new(TokenTable::new(&config.tokens)),
        event_streams: Arc::new(Semaphore::new(max_event_streams)),
        cap_policy: Arc::new(cap_policy),
        intake: Arc::new(Mutex::new(())),
    };
    let mut router = Router::new();
    for (_, path, handler) in endpoints::<G>() {
        // Routing the same path twice merges the method routers.
        router = router.route(path, handler);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(Extension(BodyLimit(config.max_body_bytes)))
        .with_state(state)
}

/// Every route the app serves: (method, path as in OpenAPI, handler).
pub(crate) fn endpoints<G: Gateway>() -> Vec<(Method, &'static str, MethodRouter<AppState<G>>)> {
    vec![
        (Method::POST, "/v1/alerts", post(submit::<G>)),
        (Method::POST, "/v1/cap", post(submit_cap::<G>)),
        (Method::GET, "/v1/alerts", get(list::<G>)),
        (Method::POST, "/v1/alerts/preview", post(preview::<G>)),
        (Method::GET, "/v1/alerts/{id}", get(show::<G>)),
        (Method::PATCH, "/v1/alerts/{id}", patch(update::<G>)),
        (Method::POST, "/v1/alerts/{id}/cancel", post(cancel::<G>)),
        (
            Method::GET,
            "/v1/alerts/{id}/deliveries",
            get(deliveries::<G>),
        ),
        (Method::GET, "/v1/alerts/{id}/speakers", get(speakers::<G>)),
        (Method::GET, "/v1/alerts/{id}/kits", get(kits::<G>)),
        (Method::GET, "/v1/devices", get(devices::<G>)),
        (Method::GET, "/v1/events", get(events::<G>)),
        (Method::GET, "/v1/openapi.json", get(openapi)),
        (Method::GET, "/healthz", get(healthz::<G>)),
        (Method::GET, "/metrics", get(metrics::<G>)),
    ]
}

async fn submit<G: Gateway>(
    State(s): State<AppState<G>>,
    Issuer(caller): Issuer,
    ApiJson(alert): ApiJson<NewAlert>,
) -> Result<Response, ApiError> {
    alert.validate()?;
    let (grade, exercise) = (alert.grade, alert.exercise);
    // With an upstream reference the same alert pushed twice is issued once.
    let _one_at_a_time = match &alert.reference {
        Some(reference) => {
            let guard = s.intake.lock().await;
            if let Some(existing) = s.gateway.alert_by_reference(reference).await {
                return Ok(already_accepted(&existing, reference.clone()));
            }
            Some(guard)
        }
        None => None,
    };
    let accepted = s.gateway.submit(alert, &caller.name).await?;
    tracing::info!(alert = %accepted.id, %grade, exercise, issuer = %caller.name, people = accepted.people, "alert accepted through the API");
    let location = HeaderValue::try_from(format!("/v1/alerts/{}", accepted.id)).ok();
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn preview<G: Gateway>(
    State(s): State<AppState<G>>,
    _: Viewer,
    ApiJson(alert): ApiJson<NewAlert>,
) -> Result<Response, ApiError> {
    alert.validate()?;
    Ok(Json(s.gateway.preview(alert).await?).into_response())
}

async fn list<G: Gateway>(State(s): State<AppState<G>>, _: Viewer) -> Response {
    Json(s.gateway.alerts().await).into_response()
}

async fn show<G: Gateway>(
    State(s): State<AppState<G>>,
    _: Viewer,
    AlertIdPath(id): AlertIdPath,
) -> Result<Response, ApiError> {
    match s.gateway.alert(&id).await {
        Some(summary) => Ok(Json(summary).into_response()),
        None => Err(ApiError::NotFound(format!("alert {id}"))),
    }
}

async fn update<G: Gateway>(
    State(s): State<AppState<G>>,
    Issuer(caller): Issuer,
    AlertIdPath(id): AlertIdPath,
    ApiJson(patch): ApiJson<AlertPatch>,
) -> Result<Response, ApiError> {
    patch.validate()?;
    let summary = s.gateway.update(&id, patch, &caller.name).await?;
    tracing::info!(alert = %id, by = %caller.name, "alert updated through the API");
    Ok(Json(summary).into_response())
}

async fn cancel<G: Gateway>(
    State(s): State<AppState<G>>,
    Issuer(caller): Issuer,
    AlertIdPath(id): AlertIdPath,
) -> Result<Response, ApiError> {
    let summary = s.gateway.cancel(&id, &caller.name).await?;
    tracing::info!(alert = %id, by = %caller.name, "alert cancelled through the API");
    Ok(Json(summary).into_response())
}

async fn deliveries<G: Gateway>(
    State(s): State<AppState<G>>,
    Viewer(caller): Viewer,
    AlertIdPath(id): AlertIdPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let state = parse_deliveries_query(query.as_deref())?;
    let Some(records) = s.gateway.deliveries(&id, state).await else {
        return Err(ApiError::NotFound(format!("alert {id}")));
    };
    if caller.role == Role::Issuer {
        return Ok(Json(records).into_response());
    }
    // A viewer sees each record without its code (and without it in any text).
    let mut value = serde_json::to_value(&records)
        .map_err(|e| ApiError::Internal(format!("serializing delivery records: {e}")))?;
    redact(&mut value);
    Ok(Json(value).into_response())
}

async fn speakers<G: Gateway>(
    State(s): State<AppState<G>>,
    _: Viewer,
    AlertIdPath(id): AlertIdPath,
) -> Result<Response, ApiError> {
    match s.gateway.speakers(&id).await {
        Some(views) => Ok(Json(views).into_response()),
        None => Err(ApiError::NotFound(format!("alert {id}"))),
    }
}

async fn kits<G: Gateway>(
    State(s): State<AppState<G>>,
    _: Viewer,
    AlertIdPath(id): AlertIdPath,
) -> Result<Response, ApiError> {
    match s.gateway.relays(&id).await {
        Some(views) => Ok(Json(views).into_response()),
        None => Err(ApiError::NotFound(format!("alert {id}"))),
    }
}

async fn devices<G: Gateway>(State(s): State<AppState<G>>, _: Viewer) -> Response {
    Json(s.gateway.devices().await).into_response()
}

async fn events<G: Gateway>(
    State(s): State<AppState<G>>,
    Viewer(caller): Viewer,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = Arc::clone(&s.event_streams)
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many event streams are open".into()))?;
    let full = caller.role == Role::Issuer;
    let stream = event_stream(s.gateway.events(), permit, full);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// Turns a broadcast subscription into SSE events. The permit lives as long as the
/// stream, so a closed connection frees its slot.
///
/// Unless `full` (an issuer's stream), each event's data is redacted: records carry
/// planned codes and the message texts that contain them.
fn event_stream(
    rx: tokio::sync::broadcast::Receiver<GatewayEvent>,
    permit: OwnedSemaphorePermit,
    full: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((rx, permit), move |(mut rx, permit)| async move {
        match rx.recv().await {
            Ok(mut event) => {
                if !full {
                    redact(&mut event.data);
                }
                Some((Ok(sse_event(&event)), (rx, permit)))
            }
            // The watcher fell behind the bounded channel: tell it how much it missed and
            // carry on from the oldest event still held.
            Err(RecvError::Lagged(missed)) => {
                let event = Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{missed}}}"));
                Some((Ok(event), (rx, permit)))
            }
            Err(RecvError::Closed) => None,
        }
    })
}

fn sse_event(event: &GatewayEvent) -> Event {
    let base = Event::default()
        .id(event.seq.to_string())
        .event(sse_name(&event.kind));
    match base.clone().json_data(event) {
        Ok(e) => e,
        // Serializing a GatewayEvent cannot fail in practice; never drop the event silently.
        Err(e) => {
            tracing::error!(error = %e, seq = event.seq, "could not serialize a gateway event");
            base.data("{}")
        }
    }
}

/// An SSE event name must be one line; axum panics otherwise, so anything odd becomes `_`.
fn sse_name(kind: &str) -> String {
    let name: String = kind
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "message".into()
    } else {
        name
    }
}

async fn openapi(_: Viewer) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn healthz<G: Gateway>(State(s): State<AppState<G>>) -> Response {
    let report = s.gateway.health().await;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn metrics<G: Gateway>(State(s): State<AppState<G>>) -> Response {
    let text = s.gateway.metrics().await;
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gateway::GatewayError;
    use crate::testing::FakeGateway;
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, Request};
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;
    use tower::ServiceExt;

    use crate::testing::{ISSUER, VIEWER};

    fn config() -> ApiConfig {
        ApiConfig {
            max_body_bytes: 4096,
            ..crate::testing::config()
        }
    }

    fn setup() -> (Arc<FakeGateway>, Router) {
        let fake = Arc::new(FakeGateway::new(16));
        let router = app(Arc::clone(&fake), config());
        (fake, router)
    }

    fn new_alert() -> Value {
        json!({
            "grade": "red", "kind": "flash_flood", "headline": "山洪红色预警",
            "text": "王家沟村立即转移到安置点", "exercise": true,
            "area": {"type": "Polygon", "coordinates": [[[116.0, 40.0], [116.1, 40.0], [116.1, 40.1], [116.0, 40.0]]]}
        })
    }

    fn request(
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Request<Body> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        }
    }

    async fn send(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    async fn send_json(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
        let (status, _, bytes) = send(router, req).await;
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
        (status, v)
    }

    async fn submit_one(router: &Router) -> String {
        let (status, v) = send_json(
            router,
            request(Method::POST, "/v1/alerts", Some(ISSUER), Some(&new_alert())),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// A request that reaches `method path`'s handler successfully once `alert-1` exists.
    fn happy_request(method: &Method, path: &str, token: &str) -> Request<Body> {
        let uri = path.replace("{id}", "alert-1");
        if path == "/v1/cap" {
            return Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/cap+xml")
                .body(Body::from(include_str!(
                    "../../cap/fixtures/protocols-example.xml"
                )))
                .unwrap();
        }
        let body = match (method.as_str(), path) {
            ("POST", "/v1/alerts") | ("POST", "/v1/alerts/preview") => Some(new_alert()),
            ("PATCH", _) => Some(json!({"headline": "山洪橙色预警", "grade": "orange"})),
            _ => None,
        };
        request(method.clone(), &uri, Some(token), body.as_ref())
    }

    fn documented_routes() -> BTreeSet<(String, String)> {
        let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (key, _) in item.as_object().unwrap() {
                if [
                    "get", "put", "post", "delete", "options", "head", "patch", "trace",
                ]
                .contains(&key.as_str())
                {
                    out.insert((key.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn openapi_lists_every_route_and_nothing_else() {
        let served: BTreeSet<(String, String)> = endpoints::<FakeGateway>()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_owned()))
            .collect();
        assert_eq!(served, documented_routes());
        // Every $ref points at something that exists.
        let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let text = OPENAPI_JSON;
        for piece in text.split("\"$ref\": \"#/components/").skip(1) {
            let target = piece.split('"').next().unwrap();
            let mut node = &doc["components"];
            for seg in target.split('/') {
                node = &node[seg];
            }
            assert!(!node.is_null(), "dangling $ref {target}");
        }
    }

    #[tokio::test]
    async fn every_route_answers_its_happy_path() {
        let (_fake, router) = setup();
        submit_one(&router).await;
        for (method, path, _) in endpoints::<FakeGateway>() {
            let resp = router
                .clone()
                .oneshot(happy_request(&method, path, ISSUER))
                .await
                .unwrap();
            assert!(
                resp.status().is_success(),
                "{method} {path} -> {}",
                resp.status()
            );
        }
    }

    #[tokio::test]
    async fn auth_failures_on_every_protected_route() {
        let (fake, router) = setup();
        submit_one(&router).await;
        let issuer_only = [
            (Method::POST, "/v1/alerts"),
            (Method::POST, "/v1/cap"),
            (Method::PATCH, "/v1/alerts/{id}"),
            (Method::POST, "/v1/alerts/{id}/cancel"),
        ];
        for (method, path, _) in endpoints::<FakeGateway>() {
            let open = path == "/healthz" || path == "/metrics";
            let uri = path.replace("{id}", "alert-1");
            // No token at all.
            let (status, headers, bytes) =
                send(&router, request(method.clone(), &uri, None, None)).await;
            if open {
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "{method} {path} must not need a token"
                );
                continue;
            }
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
            // A wrong token, and a malformed header.
            let (status, _, _) = send(
                &router,
                request(method.clone(), &uri, Some("not-a-token-at-all"), None),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            let req = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Basic {ISSUER}"))
                .body(Body::empty())
                .unwrap();
            assert_eq!(
                send(&router, req).await.0,
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            // A viewer: refused on issuer routes, served elsewhere.
            let resp = router
                .clone()
                .oneshot(happy_request(&method, path, VIEWER))
                .await
                .unwrap();
            if issuer_only.contains(&(method.clone(), path)) {
                assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v["error"]["code"], "forbidden");
            } else {
                assert!(
                    resp.status().is_success(),
                    "viewer on {method} {path} -> {}",
                    resp.status()
                );
            }
        }
        // Nothing the refused callers sent reached the gateway.
        assert_eq!(fake.log().len(), 1, "{:?}", fake.log());
    }

    #[tokio::test]
    async fn submit_is_202_with_the_issuers_name_recorded() {
        let (fake, router) = setup();
        let (status, headers, bytes) = send(
            &router,
            request(Method::POST, "/v1/alerts", Some(ISSUER), Some(&new_alert())),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(headers[header::LOCATION], "/v1/alerts/alert-1");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"id": "alert-1", "people": 2, "responsible": 1, "located": 1})
        );
        assert_eq!(
            fake.log(),
            vec![("submit".into(), "alert-1".into(), "ops-desk".into())]
        );

        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/alerts/alert-1", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["alert"]["issuer"], "ops-desk");
        assert_eq!(v["alert"]["exercise"], true);
        assert_eq!(v["alert"]["headline"], "山洪红色预警");
        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/alerts", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v.as_array().map(Vec::len), Some(1));
    }

    #[tokio::test]
    async fn preview_returns_counts_and_validates() {
        let (fake, router) = setup();
        let (status, v) = send_json(
            &router,
            request(
                Method::POST,
                "/v1/alerts/preview",
                Some(VIEWER),
                Some(&new_alert()),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["people"], 1);
        assert_eq!(v["seconds_to_first_attempt_all"], 12.5);
        // Speakers and the population travel as the gateway gives them; an unknown
        // population would be null, never 0.
        assert_eq!(v["speakers"], 3);
        assert_eq!(v["speakers_sound"], true, "a red alert sounds them");
        assert_eq!(v["population"], 1250);
        assert_eq!(v["population_unknown_areas"], 1);
        let documented: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let fields = documented["components"]["schemas"]["Preview"]["properties"]
            .as_object()
            .unwrap();
        for (key, _) in v.as_object().unwrap() {
            assert!(
                fields.contains_key(key),
                "{key} is not in the OpenAPI Preview"
            );
        }
        let mut bad = new_alert();
        bad["headline"] = json!("");
        let (status, v) = send_json(
            &router,
            request(Method::POST, "/v1/alerts/preview", Some(VIEWER), Some(&bad)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["field"], "headline");
        assert!(fake.log().is_empty(), "a preview stores nothing");
    }

    #[tokio::test]
    async fn client_mistakes_are_4xx_naming_the_field() {
        let (fake, router) = setup();
        let post = |body: Value| request(Method::POST, "/v1/alerts", Some(ISSUER), Some(&body));
        let cases: Vec<(Value, &str)> = vec![
            (
                {
                    let mut v = new_alert();
                    v["grade"] = json!("purple");
                    v
                },
                "grade",
            ),
            (
                {
                    let mut v = new_alert();
                    v["grade"] = json!(3);
                    v
                },
                "grade",
            ),
            (
                {
                    let mut v = new_alert();
                    v.as_object_mut().unwrap().remove("text");
                    v
                },
                "text",
            ),
            (
                {
                    let mut v = new_alert();
                    v["exercize"] = json!(false);
                    v
                },
                "exercize",
            ),
            (
                {
                    let mut v = new_alert();
                    v["exercise"] = json!("no");
                    v
                },
                "exercise",
            ),
            (
                {
                    let mut v = new_alert();
                    v["headline"] = json!("长".repeat(61));
                    v
                },
                "headline",
            ),
            (
                {
                    let mut v = new_alert();
                    v["area"]["coordinates"][0][1] = json!([116.1, 91.0]);
                    v
                },
                "area[0].coordinates[0][1]",
            ),
            (
                {
                    let mut v = new_alert();
                    v["area"] = json!([]);
                    v
                },
                "area",
            ),
        ];
        for (body, field) in cases {
            let (status, v) = send_json(&router, post(body.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(v["error"]["code"], "invalid", "{v}");
            assert_eq!(v["error"]["field"], field, "{v}");
        }
        // Malformed JSON.
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/alerts")
            .header(header::AUTHORIZATION, format!("Bearer {ISSUER}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"grade\": \"red\",,}"))
            .unwrap();
        let (status, v) = send_json(&router, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            v["error"]["message"].as_str().unwrap().contains("line 1"),
            "{v}"
        );
        // Deep nesting stops at serde_json's depth limit instead of overflowing the stack,
        // at the top level and inside an area (whose tagged enum is buffered first).
        for deep in [
            "[".repeat(4000),
            format!(
                r#"{{"grade": "red", "kind": "k", "headline": "h", "text": "t", "area": {{"type": "Polygon", "coordinates": {}"#,
                "[".repeat(3900)
            ),
        ] {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/v1/alerts")
                .header(header::AUTHORIZATION, format!("Bearer {ISSUER}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(deep))
                .unwrap();
            let (status, v) = send_json(&router, req).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        }
        // Wrong or missing content type.
        for ct in [Some("text/plain"), None] {
            let mut b = Request::builder()
                .method(Method::POST)
                .uri("/v1/alerts")
                .header(header::AUTHORIZATION, format!("Bearer {ISSUER}"));
            if let Some(ct) = ct {
                b = b.header(header::CONTENT_TYPE, ct);
            }
            let (status, v) = send_json(
                &router,
                b.body(Body::from(new_alert().to_string())).unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(v["error"]["code"], "unsupported_media_type");
        }
        // Oversize body (limit 4096 in this config), with and without a content length.
        let mut big = new_alert();
        big["text"] = json!("x".repeat(5000));
        let (status, v) = send_json(&router, post(big.clone())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(v["error"]["code"], "payload_too_large");
        let chunks = futures_util::stream::iter(
            big.to_string()
                .into_bytes()
                .chunks(512)
                .map(|c| Ok::<_, Infallible>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/alerts")
            .header(header::AUTHORIZATION, format!("Bearer {ISSUER}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(chunks))
            .unwrap();
        assert_eq!(send(&router, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            fake.log().is_empty(),
            "no refused request reached the gateway"
        );
    }

    #[tokio::test]
    async fn ids_and_queries_are_checked() {
        let (_fake, router) = setup();
        submit_one(&router).await;
        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/alerts/alert-9", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["message"], "alert alert-9 not found");
        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/alerts/bad%20id", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["field"], "id");
        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/alerts/%FF%FE", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

        let uri = "/v1/alerts/alert-1/deliveries?state=acknowledged";
        let (status, v) = send_json(&router, request(Method::GET, uri, Some(VIEWER), None)).await;
        assert_eq!(status, StatusCode::OK);
        let people: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["person"].as_str().unwrap())
            .collect();
        assert_eq!(people, ["p1"]);
        let (_, v) = send_json(
            &router,
            request(
                Method::GET,
                "/v1/alerts/alert-1/deliveries",
                Some(VIEWER),
                None,
            ),
        )
        .await;
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        let (status, v) = send_json(
            &router,
            request(
                Method::GET,
                "/v1/alerts/alert-1/speakers",
                Some(VIEWER),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v[0]["id"], "s1");
        assert_eq!(v[0]["state"], "reached");
        assert_eq!(v[1]["state"], "no_evidence");
        assert!(v[1]["evidence"].is_null());
        let (status, _) = send_json(
            &router,
            request(
                Method::GET,
                "/v1/alerts/alert-7/speakers",
                Some(VIEWER),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/alerts/alert-1/kits", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v[0]["kit"], "upper");
        assert_eq!(v[0]["state"], "confirmed");
        assert_eq!(v[0]["acks"], 2);
        let (status, _) = send_json(
            &router,
            request(Method::GET, "/v1/alerts/alert-7/kits", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let uri = "/v1/alerts/alert-1/deliveries?state=sleeping";
        let (status, v) = send_json(&router, request(Method::GET, uri, Some(VIEWER), None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["field"], "state");
        let (status, _) = send_json(
            &router,
            request(
                Method::GET,
                "/v1/alerts/alert-7/deliveries",
                Some(VIEWER),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_patch_may_add_a_reference_and_a_reference_is_one_token() {
        let (fake, router) = setup();
        let id = submit_one(&router).await;
        let patch_uri = format!("/v1/alerts/{id}");
        let patch = |body: Value| request(Method::PATCH, &patch_uri, Some(ISSUER), Some(&body));
        let (status, v) = send_json(&router, patch(json!({"reference": "qx,U-1,t1"}))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["alert"]["reference"], "qx,U-1,t1");
        assert_eq!(v["alert"]["grade"], "red", "nothing else changed");
        let (status, v) = send_json(&router, patch(json!({"reference": "qx,U-2,t2"}))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["alert"]["reference"], "qx,U-1,t1 qx,U-2,t2");
        let (status, v) = send_json(&router, patch(json!({"reference": "qx,U-3 t3"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], "reference");
        // A submitted alert's reference is one token too.
        let mut body = new_alert();
        body["reference"] = json!("qx,A-1,2024-07-01 10:30:00+08:00");
        let (status, v) = send_json(
            &router,
            request(Method::POST, "/v1/alerts", Some(ISSUER), Some(&body)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], "reference");
        let updates = fake.log().iter().filter(|(a, _, _)| a == "update").count();
        assert_eq!(updates, 2);
    }

    #[tokio::test]
    async fn cancel_and_update() {
        let (fake, router) = setup();
        let id = submit_one(&router).await;
        let patch_uri = format!("/v1/alerts/{id}");
        let (status, v) = send_json(
            &router,
            request(
                Method::PATCH,
                &patch_uri,
                Some(ISSUER),
                Some(&json!({"grade": "orange"})),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["alert"]["grade"], "orange");
        let (status, v) = send_json(
            &router,
            request(Method::PATCH, &patch_uri, Some(ISSUER), Some(&json!({}))),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        let (status, v) = send_json(
            &router,
            request(
                Method::PATCH,
                &patch_uri,
                Some(ISSUER),
                Some(&json!({"kind": "fire"})),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["field"], "kind");
        let (status, v) = send_json(
            &router,
            request(
                Method::PATCH,
                &patch_uri,
                Some(ISSUER),
                Some(&json!({"area": {"type": "Circle", "center": [116.0, 40.0], "radius_m": -5}})),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["field"], "area[0].radius_m");

        let cancel_uri = format!("/v1/alerts/{id}/cancel");
        let (status, v) = send_json(
            &router,
            request(Method::POST, &cancel_uri, Some(ISSUER), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["state"], "cancelled");
        let (status, v) = send_json(
            &router,
            request(Method::POST, &cancel_uri, Some(ISSUER), None),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(v["error"]["code"], "conflict");
        let (status, _) = send_json(
            &router,
            request(Method::POST, "/v1/alerts/nope/cancel", Some(ISSUER), None),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let log: Vec<(String, String)> =
            fake.log().into_iter().map(|(a, _, who)| (a, who)).collect();
        assert_eq!(
            log,
            [
                ("submit", "ops-desk"),
                ("update", "ops-desk"),
                ("cancel", "ops-desk")
            ]
            .map(|(a, w)| (a.to_owned(), w.to_owned()))
        );
    }

    #[tokio::test]
    async fn gateway_failures_map_to_503_and_an_opaque_500() {
        let (fake, router) = setup();
        fake.fail_with(GatewayError::Unavailable("store is not writable".into()));
        let (status, v) = send_json(
            &router,
            request(Method::POST, "/v1/alerts", Some(ISSUER), Some(&new_alert())),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["error"]["code"], "unavailable");
        fake.fail_with(GatewayError::Internal(
            "rusqlite: database disk image is malformed".into(),
        ));
        let (status, v) = send_json(
            &router,
            request(Method::POST, "/v1/alerts", Some(ISSUER), Some(&new_alert())),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            v,
            json!({"error": {"code": "internal", "message": "internal error"}})
        );
    }

    #[tokio::test]
    async fn health_metrics_and_fallbacks() {
        let (fake, router) = setup();
        let (status, v) = send_json(&router, request(Method::GET, "/healthz", None, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            v,
            json!({"ok": true, "store": true, "devices_up": 1, "devices_total": 2})
        );
        fake.set_healthy(false);
        let (status, v) = send_json(&router, request(Method::GET, "/healthz", None, None)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["store"], false);

        let (status, headers, body) =
            send(&router, request(Method::GET, "/metrics", None, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("tocsin_alerts_total 3")
        );

        let (status, headers, body) = send(
            &router,
            request(Method::GET, "/v1/openapi.json", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["info"]["title"],
            "Tocsin gateway API"
        );

        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/devices", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v[0]["id"], "modem-1");
        assert_eq!(v[0]["signal"], 21);

        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v2/nothing", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["code"], "not_found");
        let (status, v) = send_json(
            &router,
            request(Method::DELETE, "/v1/alerts", Some(ISSUER), None),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["error"]["code"], "method_not_allowed");
    }

    /// Reads an SSE body until `done` says the text so far is enough (5 s upper bound).
    async fn read_sse(body: Body, done: impl Fn(&str) -> bool) -> String {
        let mut body = body;
        let mut text = String::new();
        while !done(&text) {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("no SSE frame within 5 s; got so far: {text:?}"))
                .expect("stream ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        text
    }

    #[tokio::test]
    async fn events_stream_what_the_gateway_broadcasts() {
        let (fake, router) = setup();
        let resp = router
            .clone()
            .oneshot(request(Method::GET, "/v1/events", Some(VIEWER), None))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(fake.subscribers(), 1);
        fake.push(1, "alert_accepted");
        fake.push(2, "delivery\nacknowledged");
        let text = read_sse(resp.into_body(), |t| t.matches("\n\n").count() >= 2).await;
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert!(
            events[0].starts_with("id: 1\nevent: alert_accepted\ndata: "),
            "{text}"
        );
        let data: Value = serde_json::from_str(events[0].split("data: ").nth(1).unwrap()).unwrap();
        assert_eq!(data["seq"], 1);
        assert_eq!(data["alert"], "alert-1");
        assert_eq!(data["data"], json!({"n": 1}));
        // A kind with a line break cannot break the framing (nor panic).
        assert!(
            events[1].starts_with("id: 2\nevent: delivery_acknowledged\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn viewers_never_see_ack_codes_in_records() {
        let (_fake, router) = setup();
        submit_one(&router).await;
        let uri = "/v1/alerts/alert-1/deliveries";
        let (status, full) =
            send_json(&router, request(Method::GET, uri, Some(ISSUER), None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(full[0]["code"], "K7XY", "issuers see codes: {full}");
        assert_eq!(full[0]["ack_evidence"], "sms +8613800000001: 1 k7xy");

        let (status, seen) =
            send_json(&router, request(Method::GET, uri, Some(VIEWER), None)).await;
        assert_eq!(status, StatusCode::OK);
        let text = seen.to_string();
        assert!(!text.to_uppercase().contains("K7XY"), "{text}");
        for record in seen.as_array().unwrap() {
            assert!(record.get("code").is_none(), "{record}");
        }
        assert_eq!(seen[0]["ack_evidence"], "sms +8613800000001: 1 ****");
        // Everything else is as the issuer sees it.
        assert_eq!(seen[0]["person"], full[0]["person"]);
        assert_eq!(seen[1]["state"], "attempting");
        assert_eq!(seen.as_array().map(Vec::len), Some(2));
    }

    #[tokio::test]
    async fn viewers_event_streams_carry_no_codes_issuers_get_them_whole() {
        let (fake, router) = setup();
        let open = |token: &str| {
            router
                .clone()
                .oneshot(request(Method::GET, "/v1/events", Some(token), None))
        };
        let viewer = open(VIEWER).await.unwrap();
        let issuer = open(ISSUER).await.unwrap();
        assert_eq!(fake.subscribers(), 2);
        // As the router logs them: a planned record with its code and message text, and
        // an attempt whose text carries the code.
        let planned = json!({"delivery_planned": {
            "alert": "alert-1", "person": "p1",
            "plan": {"code": "K7XY", "message": "【红色预警】山洪红色预警：立即转移 回复 1 K7XY 确认", "grade": "red"}
        }});
        let attempt = json!({"attempt_started": {
            "alert": "alert-1", "person": "p1", "device": "gsm-1",
            "text": "【红色预警】山洪红色预警 回复1 K7XY"
        }});
        fake.push_data(1, "delivery_planned", planned.clone());
        fake.push_data(2, "attempt_started", attempt.clone());
        let done = |t: &str| t.matches("\n\n").count() >= 2;
        let seen = read_sse(viewer.into_body(), done).await;
        let whole = read_sse(issuer.into_body(), done).await;
        assert!(!seen.contains("K7XY"), "{seen}");
        assert!(seen.contains("回复 1 **** 确认"), "{seen}");
        assert!(seen.contains("回复1 ****"), "{seen}");
        assert!(seen.contains("\"person\":\"p1\""), "{seen}");
        let data = |t: &str, i: usize| -> Value {
            let event = t.split("\n\n").nth(i).unwrap();
            serde_json::from_str(event.split("data: ").nth(1).unwrap()).unwrap()
        };
        assert!(
            data(&seen, 0)["data"]["delivery_planned"]["plan"]
                .get("code")
                .is_none()
        );
        assert_eq!(data(&whole, 0)["data"], planned);
        assert_eq!(data(&whole, 1)["data"], attempt);
    }

    #[tokio::test]
    async fn a_lagging_watcher_is_told_and_continues() {
        let fake = Arc::new(FakeGateway::new(2));
        let router = app(Arc::clone(&fake), config());
        let resp = router
            .oneshot(request(Method::GET, "/v1/events", Some(VIEWER), None))
            .await
            .unwrap();
        for seq in 1..=5 {
            fake.push(seq, "attempt");
        }
        let text = read_sse(resp.into_body(), |t| t.contains("id: 5\n")).await;
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events[0], "event: lagged\ndata: {\"missed\":3}", "{text}");
        assert!(events[1].starts_with("id: 4\n"), "{text}");
        assert!(events[2].starts_with("id: 5\n"), "{text}");
    }

    #[tokio::test]
    async fn event_streams_are_bounded_and_freed_on_disconnect() {
        let fake = Arc::new(FakeGateway::new(4));
        let router = app_with_stream_limit(Arc::clone(&fake), config(), 1, CapPolicy::default());
        let first = router
            .clone()
            .oneshot(request(Method::GET, "/v1/events", Some(VIEWER), None))
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let (status, v) = send_json(
            &router,
            request(Method::GET, "/v1/events", Some(VIEWER), None),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["error"]["code"], "unavailable");
        drop(first);
        assert_eq!(fake.subscribers(), 0);
        let third = router
            .oneshot(request(Method::GET, "/v1/events", Some(VIEWER), None))
            .await
            .unwrap();
        assert_eq!(third.status(), StatusCode::OK);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,70}".prop_map(Value::String),
            prop::sample::select(vec![
                "red",
                "blue",
                "Polygon",
                "Circle",
                "Named",
                "MultiPolygon",
                ""
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "grade",
                        "kind",
                        "headline",
                        "text",
                        "area",
                        "exercise",
                        "type",
                        "coordinates",
                        "center",
                        "radius_m",
                        "id",
                        "x",
                    ])
                    .prop_map(String::from),
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid alert with one field replaced by an arbitrary value.
    fn mutated_alert() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![
                "grade", "kind", "headline", "text", "area", "exercise", "extra",
            ]),
            arb_json(),
        )
            .prop_map(|(key, value)| {
                let mut v = new_alert();
                v[key] = value;
                v
            })
    }

    fn arb_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            arb_json().prop_map(|v| v.to_string().into_bytes()),
            mutated_alert().prop_map(|v| v.to_string().into_bytes()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn no_body_makes_the_api_fail_or_panic(body in arb_body(), patch in any::<bool>()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (status, bytes) = rt.block_on(async {
                let (fake, router) = setup();
                submit_one(&router).await;
                let (method, uri) = if patch { (Method::PATCH, "/v1/alerts/alert-1") } else { (Method::POST, "/v1/alerts") };
                let req = Request::builder()
                    .method(method)
                    .uri(uri)
                    .header(header::AUTHORIZATION, format!("Bearer {ISSUER}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .unwrap();
                let (status, _, bytes) = send(&router, req).await;
                drop(fake);
                (status, bytes)
            });
            prop_assert!(status.as_u16() < 500, "status {}", status);
            prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok(), "body is not JSON: {:?}", bytes);
        }
    }
}
