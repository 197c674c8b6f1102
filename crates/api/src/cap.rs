//! `POST /v1/cap`: upstream systems push CAP 1.2 (or GB/T 35965.1) messages.
//!
//! A message with msgType Alert becomes a new alert exactly as a JSON submit would,
//! carrying its `sender,identifier,sent` reference; the same message pushed again finds
//! that alert and issues nothing. Update and Cancel find the alert known under one of
//! their references and change or cancel it, and add their own reference to its list:
//! upstream systems chain updates (Update #2 references only Update #1), and a re-pushed
//! Update is recognised by its reference. Anything Tocsin will not act on is a `422`
//! naming the element.

use crate::auth::Issuer;
use crate::error::ApiError;
use crate::extract::{limited_body, media_type};
use crate::gateway::{Gateway, GatewayError};
use crate::model::{
    AlertPatch, IntakeOutcome, IntakeReceipt, NewAlert, check_reference, is_known_as,
};
use crate::routes::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tocsin_cap::{AlertDraft, CapAction, CapError};
use tocsin_router::{AlertState, AlertSummary};

/// A CAP message body: checked for an XML content type and the body limit.
pub(crate) struct CapBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for CapBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = limited_body(req, state, is_xml, ApiError::NotXml).await?;
        Ok(CapBody(bytes))
    }
}

/// `application/cap+xml`, `application/xml`, `text/xml` or any `application/*+xml`,
/// parameters (charset) allowed.
fn is_xml(content_type: Option<&[u8]>) -> bool {
    media_type(content_type).is_some_and(|m| {
        m == "application/xml"
            || m == "text/xml"
            || (m.starts_with("application/") && m.ends_with("+xml"))
    })
}

/// The handler. Intake is serialized (one message at a time) so two pushes of the same
/// message cannot both find nothing and both issue an alert.
pub(crate) async fn submit_cap<G: Gateway>(
    State(s): State<AppState<G>>,
    Issuer(caller): Issuer,
    CapBody(body): CapBody,
) -> Result<Response, ApiError> {
    let message = tocsin_cap::parse_bytes(&body).map_err(cap_error)?;
    let action = tocsin_cap::to_alert(&message, &s.cap_policy).map_err(cap_error)?;
    let _one_at_a_time = s.intake.lock().await;
    match action {
        CapAction::Issue(draft) => issue(&s, draft, &caller.name).await,
        CapAction::Update { references, draft } => {
            let target = referenced(&s, &references).await?;
            update(&s, target, draft, &caller.name).await
        }
        CapAction::Cancel {
            references,
            reference,
        } => {
            let target = referenced(&s, &references).await?;
            cancel(&s, target, reference, &caller.name).await
        }
    }
}

async fn issue<G: Gateway>(
    s: &AppState<G>,
    draft: AlertDraft,
    issuer: &str,
) -> Result<Response, ApiError> {
    if let Some(existing) = s.gateway.alert_by_reference(&draft.reference).await {
        return Ok(already_accepted(&existing, draft.reference));
    }
    let reference = draft.reference.clone();
    let alert = NewAlert {
        grade: draft.grade,
        kind: draft.kind,
        headline: draft.headline,
        text: draft.text,
        area: draft.area,
        exercise: draft.exercise,
        reference: Some(reference.clone()),
    };
    alert.validate().map_err(unprocessable)?;
    let (grade, exercise) = (alert.grade, alert.exercise);
    let accepted = s
        .gateway
        .submit(alert, issuer)
        .await
        .map_err(unprocessable)?;
    tracing::info!(alert = %accepted.id, %grade, exercise, %issuer, %reference, people = accepted.people, "CAP alert accepted");
    let receipt = IntakeReceipt {
        id: accepted.id,
        outcome: IntakeOutcome::Accepted,
        reference,
        people: Some(accepted.people),
        responsible: Some(accepted.responsible),
        located: Some(accepted.located),
    };
    Ok(created(receipt))
}

/// `202` with a `Location`, as the JSON submit answers.
pub(crate) fn created(receipt: IntakeReceipt) -> Response {
    let location = HeaderValue::try_from(format!("/v1/alerts/{}", receipt.id)).ok();
    let mut response = (StatusCode::ACCEPTED, Json(receipt)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `200` naming the alert a re-pushed message was accepted as before.
pub(crate) fn already_accepted(existing: &AlertSummary, reference: String) -> Response {
    tracing::info!(alert = %existing.alert.id, %reference, "message already accepted; nothing issued");
    ok(
        &existing.alert.id,
        IntakeOutcome::AlreadyAccepted,
        reference,
    )
}

fn ok(id: &tocsin_core::AlertId, outcome: IntakeOutcome, reference: String) -> Response {
    let receipt = IntakeReceipt {
        id: id.clone(),
        outcome,
        reference,
        people: None,
        responsible: None,
        located: None,
    };
    (StatusCode::OK, Json(receipt)).into_response()
}

/// The alert known under the first of `references` (message order) that Tocsin knows:
/// the message that issued it or any update or cancel since.
async fn referenced<G: Gateway>(
    s: &AppState<G>,
    references: &[String],
) -> Result<AlertSummary, ApiError> {
    for r in references {
        if let Some(found) = s.gateway.alert_by_reference(r).await {
            return Ok(found);
        }
    }
    Err(ApiError::NotFound(format!(
        "alert issued under reference {}",
        references.join(" or ")
    )))
}

/// Applies an Update to the alert it references. Its own reference joins the alert's
/// list, so a later Update or Cancel that references only this one still finds the alert;
/// a re-push of it (its reference already on the list) touches nothing.
async fn update<G: Gateway>(
    s: &AppState<G>,
    target: AlertSummary,
    draft: AlertDraft,
    by: &str,
) -> Result<Response, ApiError> {
    let current = &target.alert;
    if is_known_as(current.reference.as_deref(), &draft.reference) {
        tracing::info!(alert = %current.id, reference = %draft.reference, "update already applied; nothing changed");
        return Ok(ok(&current.id, IntakeOutcome::Unchanged, draft.reference));
    }
    if current.exercise != draft.exercise {
        return Err(ApiError::Unprocessable {
            field: Some("alert/status".into()),
            message: format!(
                "alert {} is {}; an update cannot turn it into {}",
                current.id,
                if current.exercise {
                    "an exercise"
                } else {
                    "live"
                },
                if draft.exercise {
                    "an exercise"
                } else {
                    "a live warning"
                },
            ),
        });
    }
    // Only what differs: an update that matches the alert re-notifies no one.
    let mut patch = AlertPatch {
        grade: (draft.grade != current.grade).then_some(draft.grade),
        headline: (draft.headline != current.headline).then_some(draft.headline),
        text: (draft.text != current.text).then_some(draft.text),
        area: (draft.area != current.area).then_some(draft.area),
        re_notify: false,
        reference: None,
    };
    let changes = patch != AlertPatch::default();
    // A cancelled alert takes no update; one that changes nothing is answered as before
    // rather than refused for the sake of remembering its reference.
    if changes || target.state != AlertState::Cancelled {
        patch.reference = rememberable(&current.id, &draft.reference);
    }
    if patch == AlertPatch::default() {
        return Ok(ok(&current.id, IntakeOutcome::Unchanged, draft.reference));
    }
    patch.validate().map_err(unprocessable)?;
    let summary = s
        .gateway
        .update(&current.id, patch, by)
        .await
        .map_err(unprocessable)?;
    let outcome = if changes {
        tracing::info!(alert = %summary.alert.id, %by, reference = %draft.reference, "alert updated by CAP");
        IntakeOutcome::Updated
    } else {
        tracing::info!(alert = %summary.alert.id, %by, reference = %draft.reference, "CAP update matched the alert; only its reference was added");
        IntakeOutcome::Unchanged
    };
    Ok(ok(&summary.alert.id, outcome, draft.reference))
}

/// Cancels the alert a Cancel references, adding the Cancel's own reference to its list
/// first (a cancelled alert takes no update), so a re-pushed Cancel, or one referencing
/// this Cancel, is answered `already_cancelled` rather than `404`.
async fn cancel<G: Gateway>(
    s: &AppState<G>,
    target: AlertSummary,
    reference: String,
    by: &str,
) -> Result<Response, ApiError> {
    let id = target.alert.id;
    if target.state == AlertState::Cancelled {
        return Ok(ok(&id, IntakeOutcome::AlreadyCancelled, reference));
    }
    if !is_known_as(target.alert.reference.as_deref(), &reference)
        && let Some(r) = rememberable(&id, &reference)
    {
        let patch = AlertPatch {
            reference: Some(r),
            ..AlertPatch::default()
        };
        // The cancellation matters more than the bookkeeping: it goes ahead either way.
        if let Err(e) = s.gateway.update(&id, patch, by).await {
            tracing::warn!(alert = %id, %reference, error = %e, "the cancel's reference was not added; cancelling anyway");
        }
    }
    s.gateway.cancel(&id, by).await?;
    tracing::info!(alert = %id, %by, %reference, "alert cancelled by CAP");
    Ok(ok(&id, IntakeOutcome::Cancelled, reference))
}

/// `reference` if the alert can keep it. One that cannot (too long) is not a reason to
/// refuse the change or cancellation it came with; it is logged and not remembered.
fn rememberable(alert: &tocsin_core::AlertId, reference: &str) -> Option<String> {
    match check_reference(reference) {
        Ok(()) => Some(reference.to_owned()),
        Err(e) => {
            tracing::warn!(%alert, %reference, error = %e, "reference not kept on the alert");
            None
        }
    }
}

/// CAP errors are `422` naming the element, except a body too large (`413`).
fn cap_error(e: CapError) -> ApiError {
    match e {
        CapError::TooLarge { limit, .. } => ApiError::PayloadTooLarge { limit },
        other => ApiError::Unprocessable {
            field: other.element().map(str::to_owned),
            message: other.to_string(),
        },
    }
}

/// A value the CAP message produced that the gateway refused is the message's fault:
/// `422`, naming the alert field. Other gateway failures keep their status.
fn unprocessable(e: GatewayError) -> ApiError {
    match e {
        GatewayError::Invalid { field, message } => ApiError::Unprocessable {
            field: (!field.is_empty()).then_some(field),
            message,
        },
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ApiConfig, ApiToken, Role};
    use crate::routes::app;
    use crate::testing::FakeGateway;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use std::sync::Arc;
    use tower::ServiceExt;

    use crate::testing::{ISSUER, VIEWER};
    const EXAMPLE: &str = include_str!("../../cap/fixtures/protocols-example.xml");
    const GB_RED: &str = include_str!("../../cap/fixtures/gb35965-red.xml");
    const UPDATE: &str = include_str!("../../cap/fixtures/update.xml");
    const CANCEL: &str = include_str!("../../cap/fixtures/cancel.xml");
    const EXAMPLE_REF: &str =
        "huairou.gov.example,11011600000000_20240701103000_0,2024-07-01T10:30:00+08:00";

    fn setup_with(policy: tocsin_cap::CapPolicy) -> (Arc<FakeGateway>, Router) {
        let fake = Arc::new(FakeGateway::new(16));
        // The upstream system pushes with the issuer token, under its own name.
        let mut config = crate::testing::config();
        if let Some(t) = config.tokens.first_mut() {
            t.name = "weather-bureau".into();
        }
        let router = crate::routes::app_with_cap_policy(Arc::clone(&fake), config, policy);
        (fake, router)
    }

    fn setup() -> (Arc<FakeGateway>, Router) {
        setup_with(tocsin_cap::CapPolicy::default())
    }

    async fn push(
        router: &Router,
        token: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/cap")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
        (status, v)
    }

    async fn push_cap(router: &Router, xml: &str) -> (StatusCode, Value) {
        push(router, ISSUER, "application/cap+xml", xml.to_owned()).await
    }

    async fn get(router: &Router, uri: &str) -> Value {
        let req = Request::builder()
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {ISSUER}"))
            .body(Body::empty())
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_protocol_example_is_issued_once_however_often_it_is_pushed() {
        let (fake, router) = setup();
        let (status, v) = push_cap(&router, EXAMPLE).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["id"], "alert-1");
        assert_eq!(v["outcome"], "accepted");
        assert_eq!(v["reference"], EXAMPLE_REF);
        assert_eq!(v["people"], 2);

        let alert = get(&router, "/v1/alerts/alert-1").await;
        assert_eq!(alert["alert"]["grade"], "red");
        assert_eq!(alert["alert"]["exercise"], true);
        assert_eq!(alert["alert"]["headline"], "暴雨红色预警");
        assert_eq!(alert["alert"]["issuer"], "weather-bureau");
        assert_eq!(alert["alert"]["reference"], EXAMPLE_REF);
        // CAP's lat,lon became [lon, lat].
        assert_eq!(
            alert["alert"]["area"][0]["coordinates"][0][1],
            serde_json::json!([116.60, 40.42])
        );
        assert_eq!(alert["alert"]["area"][1]["radius_m"], 2500.0);

        // Pushed again (a retry after a lost answer): the same id, nothing new.
        for content_type in ["application/xml", "text/xml; charset=utf-8"] {
            let (status, v) = push(&router, ISSUER, content_type, EXAMPLE.to_owned()).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            assert_eq!(v["id"], "alert-1");
            assert_eq!(v["outcome"], "already_accepted");
        }
        let submits = fake.log().iter().filter(|(a, _, _)| a == "submit").count();
        assert_eq!(submits, 1, "{:?}", fake.log());
    }

    #[tokio::test]
    async fn a_gb_35965_message_maps_geocodes_through_the_table() {
        let policy = tocsin_cap::CapPolicy {
            geocodes: [
                ("110116104", "t-llm"),
                ("110116105", "t-thk"),
                ("110116106", "t-bs"),
                ("110116107", "t-bs-n"),
            ]
            .into_iter()
            .map(|(c, a)| (c.to_owned(), vec![tocsin_core::AreaId::from(a)]))
            .collect(),
            ..tocsin_cap::CapPolicy::default()
        };
        let (_fake, router) = setup_with(policy);
        let (status, v) = push_cap(&router, GB_RED).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        let alert = get(&router, "/v1/alerts/alert-1").await;
        assert_eq!(alert["alert"]["grade"], "red");
        assert_eq!(alert["alert"]["exercise"], false);
        assert_eq!(alert["alert"]["headline"], "怀柔区山洪灾害红色预警");
        assert_eq!(alert["alert"]["area"][0]["radius_m"], 3000.0);
        assert_eq!(
            alert["alert"]["area"][1],
            serde_json::json!({"type": "Named", "id": "t-bs"})
        );
        assert_eq!(
            alert["alert"]["reference"],
            "怀柔区气象台,11011641600000_20240721063000_1,2024-07-21T06:30:00+08:00"
        );
    }

    #[tokio::test]
    async fn update_and_cancel_act_on_the_referenced_alert() {
        let (fake, router) = setup();
        assert_eq!(push_cap(&router, EXAMPLE).await.0, StatusCode::ACCEPTED);
        let (status, v) = push_cap(&router, UPDATE).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            (v["id"].as_str(), v["outcome"].as_str()),
            (Some("alert-1"), Some("updated"))
        );
        let alert = get(&router, "/v1/alerts/alert-1").await;
        assert_eq!(alert["alert"]["grade"], "orange");
        assert_eq!(alert["alert"]["headline"], "暴雨橙色预警");
        assert_eq!(alert["alert"]["text"], "降雨减弱，预警降为橙色。");
        assert_eq!(alert["alert"]["area"].as_array().map(Vec::len), Some(1));
        // The same update again changes nothing.
        let (status, v) = push_cap(&router, UPDATE).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("unchanged"))
        );

        let (status, v) = push_cap(&router, CANCEL).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            (v["id"].as_str(), v["outcome"].as_str()),
            (Some("alert-1"), Some("cancelled"))
        );
        assert_eq!(
            get(&router, "/v1/alerts/alert-1").await["state"],
            "cancelled"
        );
        let (status, v) = push_cap(&router, CANCEL).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("already_cancelled"))
        );
        // The cancel's own reference is added first (a cancelled alert takes no update).
        let log: Vec<(String, String, String)> = ["submit", "update", "update", "cancel"]
            .iter()
            .map(|a| {
                (
                    (*a).to_owned(),
                    "alert-1".to_owned(),
                    "weather-bureau".to_owned(),
                )
            })
            .collect();
        assert_eq!(fake.log(), log);
    }

    const UPDATE_REF: &str =
        "huairou.gov.example,11011600000000_20240701120000_0,2024-07-01T12:00:00+08:00";

    /// A message made from `template` (the Update or Cancel fixture) under its own
    /// `identifier` and `sent`, referencing only `references`.
    fn chained(template: &str, identifier: &str, sent: &str, references: &str) -> String {
        let (own_id, own_sent) = if template.contains("<msgType>Update</msgType>") {
            (
                "11011600000000_20240701120000_0",
                "2024-07-01T12:00:00+08:00",
            )
        } else {
            (
                "11011600000000_20240701150000_0",
                "2024-07-01T15:00:00+08:00",
            )
        };
        template
            .replace(
                &format!("<identifier>{own_id}</identifier>"),
                &format!("<identifier>{identifier}</identifier>"),
            )
            .replace(
                &format!("<sent>{own_sent}</sent>"),
                &format!("<sent>{sent}</sent>"),
            )
            .replace(
                &format!("<references>{EXAMPLE_REF}</references>"),
                &format!("<references>{references}</references>"),
            )
    }

    fn reference_of(identifier: &str, sent: &str) -> String {
        format!("huairou.gov.example,{identifier},{sent}")
    }

    #[tokio::test]
    async fn a_chain_of_updates_and_a_cancel_each_referencing_only_the_last_find_the_alert() {
        let (fake, router) = setup();
        assert_eq!(push_cap(&router, EXAMPLE).await.0, StatusCode::ACCEPTED);
        // Update #1 references the alert.
        let (status, v) = push_cap(&router, UPDATE).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("updated"))
        );
        // Update #2 references only Update #1, and lowers the grade again.
        let (id2, sent2) = (
            "11011600000000_20240701130000_0",
            "2024-07-01T13:00:00+08:00",
        );
        let update2 = chained(UPDATE, id2, sent2, UPDATE_REF)
            .replace(
                "<severity>Severe</severity>",
                "<severity>Moderate</severity>",
            )
            .replace("暴雨橙色预警", "暴雨黄色预警");
        let (status, v) = push_cap(&router, &update2).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            (v["id"].as_str(), v["outcome"].as_str()),
            (Some("alert-1"), Some("updated"))
        );
        let alert = get(&router, "/v1/alerts/alert-1").await;
        assert_eq!(alert["alert"]["grade"], "yellow");
        assert_eq!(alert["alert"]["headline"], "暴雨黄色预警");
        // Every message the alert was known under, oldest first, in the one field.
        let ref2 = reference_of(id2, sent2);
        assert_eq!(
            alert["alert"]["reference"],
            format!("{EXAMPLE_REF} {UPDATE_REF} {ref2}")
        );

        // Update #1 pushed again (a retry after a lost answer) is recognised by its
        // reference: it does not put the alert back to orange.
        let (status, v) = push_cap(&router, UPDATE).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("unchanged"))
        );
        assert_eq!(
            get(&router, "/v1/alerts/alert-1").await["alert"]["grade"],
            "yellow"
        );

        // The Cancel references only Update #2.
        let (id3, sent3) = (
            "11011600000000_20240701150000_0",
            "2024-07-01T15:00:00+08:00",
        );
        let cancel = chained(CANCEL, id3, sent3, &ref2);
        let (status, v) = push_cap(&router, &cancel).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            (v["id"].as_str(), v["outcome"].as_str()),
            (Some("alert-1"), Some("cancelled"))
        );
        let alert = get(&router, "/v1/alerts/alert-1").await;
        assert_eq!(alert["state"], "cancelled");
        assert_eq!(
            alert["alert"]["reference"],
            format!(
                "{EXAMPLE_REF} {UPDATE_REF} {ref2} {}",
                reference_of(id3, sent3)
            )
        );
        // A cancel that references the Cancel finds the alert too, already cancelled.
        let again = chained(
            CANCEL,
            "11011600000000_20240701160000_0",
            "2024-07-01T16:00:00+08:00",
            &reference_of(id3, sent3),
        );
        let (status, v) = push_cap(&router, &again).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("already_cancelled"))
        );
        let actions: Vec<String> = fake.log().into_iter().map(|(a, _, _)| a).collect();
        assert_eq!(actions, ["submit", "update", "update", "update", "cancel"]);
    }

    #[tokio::test]
    async fn an_update_that_matches_the_alert_is_unchanged_but_remembered() {
        let (fake, router) = setup();
        assert_eq!(push_cap(&router, EXAMPLE).await.0, StatusCode::ACCEPTED);
        assert_eq!(push_cap(&router, UPDATE).await.0, StatusCode::OK);
        // A new message saying the same as Update #1: nothing to re-send, but a later
        // message may reference it.
        let (id2, sent2) = (
            "11011600000000_20240701130000_0",
            "2024-07-01T13:00:00+08:00",
        );
        let same = chained(UPDATE, id2, sent2, UPDATE_REF);
        let (status, v) = push_cap(&router, &same).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("unchanged"))
        );
        let alert = get(&router, "/v1/alerts/alert-1").await;
        assert_eq!(alert["alert"]["grade"], "orange");
        assert!(
            alert["alert"]["reference"]
                .as_str()
                .unwrap()
                .ends_with(&reference_of(id2, sent2)),
            "{alert}"
        );
        // Pushed again, it touches nothing at all.
        let before = fake.log().len();
        let (status, v) = push_cap(&router, &same).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("unchanged"))
        );
        assert_eq!(fake.log().len(), before);
        let cancel = chained(
            CANCEL,
            "11011600000000_20240701150000_0",
            "2024-07-01T15:00:00+08:00",
            &reference_of(id2, sent2),
        );
        let (status, v) = push_cap(&router, &cancel).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("cancelled"))
        );
    }

    #[tokio::test]
    async fn a_long_chain_keeps_the_first_and_the_latest_references() {
        use crate::model::MAX_REFERENCES;
        let (_fake, router) = setup();
        assert_eq!(push_cap(&router, EXAMPLE).await.0, StatusCode::ACCEPTED);
        let mut previous = EXAMPLE_REF.to_owned();
        let mut chain = Vec::new();
        let n = MAX_REFERENCES + 3;
        for i in 0..n {
            let (id, sent) = (
                format!("11011600000000_20240701120000_{i}"),
                "2024-07-01T12:00:00+08:00",
            );
            let (status, v) = push_cap(&router, &chained(UPDATE, &id, sent, &previous)).await;
            assert_eq!(status, StatusCode::OK, "update {i}: {v}");
            previous = reference_of(&id, sent);
            chain.push(previous.clone());
        }
        let alert = get(&router, "/v1/alerts/alert-1").await;
        let list: Vec<&str> = alert["alert"]["reference"]
            .as_str()
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(list.len(), MAX_REFERENCES);
        assert_eq!(
            list[0], EXAMPLE_REF,
            "the message that issued it stays first"
        );
        assert_eq!(list[1..], chain[n - (MAX_REFERENCES - 1)..]);
        // The original is still recognised when re-pushed.
        let (status, v) = push_cap(&router, EXAMPLE).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("already_accepted"))
        );
        // A cancel referencing a forgotten update is 404; one referencing the latest works.
        let forgotten = chained(
            CANCEL,
            "11011600000000_20240701150000_0",
            "2024-07-01T15:00:00+08:00",
            &chain[0],
        );
        assert_eq!(push_cap(&router, &forgotten).await.0, StatusCode::NOT_FOUND);
        let latest = chained(
            CANCEL,
            "11011600000000_20240701150000_0",
            "2024-07-01T15:00:00+08:00",
            &previous,
        );
        let (status, v) = push_cap(&router, &latest).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("cancelled"))
        );
    }

    #[tokio::test]
    async fn an_overlong_update_reference_is_not_kept_but_the_update_applies() {
        let (_fake, router) = setup();
        assert_eq!(push_cap(&router, EXAMPLE).await.0, StatusCode::ACCEPTED);
        let long_id = "x".repeat(crate::model::MAX_REFERENCE_CHARS);
        let update = chained(UPDATE, &long_id, "2024-07-01T12:00:00+08:00", EXAMPLE_REF);
        let (status, v) = push_cap(&router, &update).await;
        assert_eq!(
            (status, v["outcome"].as_str()),
            (StatusCode::OK, Some("updated")),
            "{v}"
        );
        let alert = get(&router, "/v1/alerts/alert-1").await;
        assert_eq!(alert["alert"]["grade"], "orange");
        assert_eq!(alert["alert"]["reference"], EXAMPLE_REF);
    }

    #[tokio::test]
    async fn update_or_cancel_of_an_unknown_reference_is_404() {
        let (fake, router) = setup();
        for xml in [UPDATE, CANCEL] {
            let (status, v) = push_cap(&router, xml).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(EXAMPLE_REF),
                "{v}"
            );
        }
        assert!(fake.log().is_empty());
    }

    #[tokio::test]
    async fn an_update_cannot_turn_a_drill_live() {
        let (_fake, router) = setup();
        assert_eq!(push_cap(&router, EXAMPLE).await.0, StatusCode::ACCEPTED);
        let live = UPDATE.replace("<status>Exercise</status>", "<status>Actual</status>");
        let (status, v) = push_cap(&router, &live).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["field"], "alert/status");
    }

    #[tokio::test]
    async fn bad_messages_are_4xx_naming_the_element_never_500() {
        let (fake, router) = setup();
        let cases: Vec<(String, StatusCode, Option<&str>)> = vec![
            ("<alert".into(), StatusCode::UNPROCESSABLE_ENTITY, None),
            ("not xml at all".into(), StatusCode::UNPROCESSABLE_ENTITY, None),
            (
                EXAMPLE.replace("<status>Exercise</status>", "<status>Test</status>"),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("alert/status"),
            ),
            (
                EXAMPLE.replace("<severity>Extreme</severity>", "<severity>Huge</severity>"),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("alert/info[0]/severity"),
            ),
            (
                EXAMPLE.replace("<sender>huairou.gov.example</sender>", ""),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("alert/sender"),
            ),
            (
                // Geocode only, and no table: the geocode is named.
                EXAMPLE
                    .replace("<polygon>40.40,116.60 40.42,116.60 40.42,116.64 40.40,116.64 40.40,116.60</polygon>", "")
                    .replace("<circle>40.41,116.62 2.5</circle>", ""),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("alert/info[0]/area[0]/geocode[0]"),
            ),
            (
                format!("<?xml version=\"1.0\"?><!DOCTYPE alert [<!ENTITY x \"x\">]>{EXAMPLE}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
            ),
        ];
        for (xml, want, field) in cases {
            let (status, v) = push_cap(&router, &xml).await;
            assert_eq!(status, want, "{v}\n{xml}");
            assert_eq!(v["error"]["code"], "unprocessable");
            assert_eq!(v["error"]["field"].as_str(), field, "{v}");
        }
        let (status, v) = push_cap(
            &router,
            &EXAMPLE.replace("<status>Exercise</status>", "<status>Draft</status>"),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            v["error"]["message"].as_str().unwrap().contains("Draft"),
            "{v}"
        );

        // Oversized: refused before reading past the limit.
        let big = format!("{EXAMPLE}<!--{}-->", "x".repeat(300 * 1024));
        let (status, v) = push_cap(&router, &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        // Not XML by content type, and a viewer token.
        let (status, v) = push(&router, ISSUER, "application/json", EXAMPLE.to_owned()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
        let (status, _) = push(&router, VIEWER, "application/cap+xml", EXAMPLE.to_owned()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Not UTF-8.
        let (status, v) = push(&router, ISSUER, "application/xml", vec![0xffu8, 0xfe, 0x00]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(fake.log().is_empty(), "{:?}", fake.log());
    }

    #[tokio::test]
    async fn json_submits_with_a_reference_are_idempotent_too() {
        let (fake, router) = setup();
        let body = serde_json::json!({
            "grade": "yellow", "kind": "flood", "headline": "洪水黄色预警", "text": "注意",
            "area": {"type": "Named", "id": "v1"}, "reference": "hydro,HY-7,2024-07-01T10:30:00+08:00"
        });
        let send = || {
            Request::builder()
                .method(Method::POST)
                .uri("/v1/alerts")
                .header(header::AUTHORIZATION, format!("Bearer {ISSUER}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let first = router.clone().oneshot(send()).await.unwrap();
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        let again = router.clone().oneshot(send()).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        let bytes = again.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["outcome"].as_str()),
            (Some("alert-1"), Some("already_accepted"))
        );
        assert_eq!(fake.log().len(), 1);
        let listed = get(&router, "/v1/alerts").await;
        assert_eq!(
            listed[0]["alert"]["reference"],
            "hydro,HY-7,2024-07-01T10:30:00+08:00"
        );
    }

    #[tokio::test]
    async fn the_plain_app_serves_cap_with_the_default_policy() {
        let fake = Arc::new(FakeGateway::new(4));
        let config = ApiConfig {
            tokens: vec![ApiToken {
                name: "weather-bureau".into(),
                token: ISSUER.into(),
                role: Role::Issuer,
            }],
            ..ApiConfig::default()
        };
        let router = app(fake, config);
        assert_eq!(push_cap(&router, EXAMPLE).await.0, StatusCode::ACCEPTED);
    }
}
