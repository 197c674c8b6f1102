//! What the API reads and writes: alert requests and patches, the answers to them, device
//! and health reports, and the events streamed to watchers.
//!
//! Request types are strict (`deny_unknown_fields`) because an operator who misspells
//! `exercise` must not issue a live warning by accident.

use crate::gateway::GatewayError;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use tocsin_core::area::{AreaError, AreaSpec};
use tocsin_core::{AlertId, Bearer, DeviceId, Grade, Timestamp};

/// Longest headline, in characters: it must fit the first line of any bearer's message.
pub const MAX_HEADLINE_CHARS: usize = 60;
/// Longest warning text, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Longest hazard kind, in characters.
pub const MAX_KIND_CHARS: usize = 32;
/// Most area pieces in one alert; a district never needs more, and it bounds the work.
pub const MAX_AREAS: usize = 100;
/// Longest named-area id, in characters.
pub const MAX_AREA_ID_CHARS: usize = 128;
/// Longest upstream reference, in characters. A CAP `sender,identifier,sent` is a few
/// dozen; the cap keeps a chatty upstream from growing every record of an alert.
pub const MAX_REFERENCE_CHARS: usize = 256;
/// Most references one alert is known under. Past it the oldest are forgotten, except the
/// first (the message that issued the alert): a long-lived alert updated every few minutes
/// must not grow without bound, and upstream systems reference recent messages.
pub const MAX_REFERENCES: usize = 64;

/// A warning as a command center submits it (or previews it) through the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAlert {
    /// The grade; decides the policy (bearers, ack deadline, escalation).
    pub grade: Grade,
    /// The kind of hazard, e.g. `flood`, `landslide` (1 to 32 characters).
    pub kind: String,
    /// One short line, e.g. 山洪红色预警 (1 to 60 characters).
    pub headline: String,
    /// What people must do (1 to 500 characters).
    pub text: String,
    /// Where it applies: one area object or an array of them (their union).
    #[serde(deserialize_with = "one_or_many")]
    pub area: Vec<AreaSpec>,
    /// A drill: marked as an exercise on every bearer. Live unless set.
    #[serde(default)]
    pub exercise: bool,
    /// The upstream system's own reference for this warning (a CAP message's
    /// `sender,identifier,sent`; one token, no spaces); kept on the alert so updates and
    /// cancels can find it and a re-pushed message is not issued twice. The alert's own
    /// `reference` then lists it first, followed by the references of later updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl NewAlert {
    /// Checks every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<(), GatewayError> {
        check_kind(&self.kind)?;
        check_headline(&self.headline)?;
        check_text(&self.text)?;
        check_areas(&self.area)?;
        match &self.reference {
            Some(r) => check_reference(r),
            None => Ok(()),
        }
    }
}

/// Changes to an alert already issued. Absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertPatch {
    /// A new grade (an upgrade re-plans deliveries under the stricter policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grade: Option<Grade>,
    /// A new headline (1 to 60 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    /// A new text (1 to 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A new area: one area object or an array of them.
    #[serde(
        default,
        deserialize_with = "some_one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    pub area: Option<Vec<AreaSpec>>,
    /// Tell everyone still in the area again, with a fresh code and a new ack window, even
    /// those who already acknowledged (a higher grade or a new text does so anyway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub re_notify: bool,
    /// Another upstream reference the alert is also known under (the CAP Update or Cancel
    /// that changed it), added to its list if absent, so a later message that references
    /// only this one finds the alert. On its own it changes no content and re-notifies
    /// nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl AlertPatch {
    /// Checks the fields present; a patch that changes nothing is refused too, so an
    /// operator who sent the wrong body hears about it.
    pub fn validate(&self) -> Result<(), GatewayError> {
        if self.grade.is_none()
            && self.headline.is_none()
            && self.text.is_none()
            && self.area.is_none()
            && !self.re_notify
            && self.reference.is_none()
        {
            return Err(GatewayError::invalid(
                "",
                "a patch must change at least one of grade, headline, text, area, reference, or ask to re_notify",
            ));
        }
        if let Some(r) = &self.reference {
            check_reference(r)?;
        }
        if let Some(h) = &self.headline {
            check_headline(h)?;
        }
        if let Some(t) = &self.text {
            check_text(t)?;
        }
        if let Some(a) = &self.area {
            check_areas(a)?;
        }
        Ok(())
    }
}

/// The answer to an accepted alert: it is stored and its deliveries are planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The new alert's id.
    pub id: AlertId,
    /// People targeted in all.
    pub people: u32,
    /// Of which responsible persons (they must acknowledge).
    pub responsible: u32,
    /// Of which found by their location inside the area (the others through the named
    /// areas they answer for).
    pub located: u32,
}

/// What became of a message that carries an upstream reference: a CAP message on
/// `/v1/cap`, or a JSON alert with `reference` that was already accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeReceipt {
    /// The alert concerned: the new one, or the one the message referred to.
    pub id: AlertId,
    /// What was done.
    pub outcome: IntakeOutcome,
    /// The message's own reference (`sender,identifier,sent` for CAP).
    pub reference: String,
    /// People targeted, when a new alert was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people: Option<u32>,
    /// Of which responsible persons, when a new alert was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsible: Option<u32>,
    /// Of which found by location, when a new alert was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub located: Option<u32>,
}

/// What an intake message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntakeOutcome {
    /// A new alert was stored and its deliveries planned (`202`).
    Accepted,
    /// The same message was accepted before; nothing new was issued (`200`).
    AlreadyAccepted,
    /// The referenced alert was changed (`200`).
    Updated,
    /// The referenced alert already matched the update, or the update was applied before
    /// (its reference is known); nothing was re-sent (`200`).
    Unchanged,
    /// The referenced alert was cancelled (`200`).
    Cancelled,
    /// The referenced alert had been cancelled already (`200`).
    AlreadyCancelled,
}

/// One device as operators see it on the devices page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The device's name from config.
    pub id: DeviceId,
    /// The bearer it serves.
    pub bearer: Bearer,
    /// Whether its driver is running and talking to it.
    pub up: bool,
    /// Whether it is registered on its network (GSM registration, satellite lock...).
    pub registered: bool,
    /// Signal quality, 0–31 as `+CSQ` reports it (the driver contract's scale); `None`
    /// when unknown.
    pub signal: Option<u8>,
    /// The last error its driver reported, if any.
    pub last_error: Option<String>,
    /// Messages sent since the daemon started.
    pub sent: u64,
    /// Messages received since the daemon started.
    pub received: u64,
    /// Messages per minute it can send (the router's send budget for it).
    pub per_minute: f64,
}

/// Something that happened, as streamed to watchers on `/v1/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayEvent {
    /// Increasing sequence number; the SSE `id:`.
    pub seq: u64,
    /// What happened, e.g. `alert_accepted`, `delivery_acknowledged`; the SSE `event:`.
    pub kind: String,
    /// The alert concerned, if any.
    pub alert: Option<AlertId>,
    /// When it happened.
    pub at: Timestamp,
    /// Details, shaped by `kind`.
    pub data: serde_json::Value,
}

/// What `/healthz` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Whether the gateway can take alerts (the endpoint answers 503 when not).
    pub ok: bool,
    /// Whether the durable store is writable.
    pub store: bool,
    /// Devices whose drivers are up.
    pub devices_up: u32,
    /// Devices configured.
    pub devices_total: u32,
}

/// The references an alert is known under, oldest first: its `reference` field is a
/// whitespace-separated list, as CAP's own `references` element is (a single reference,
/// as alerts stored before lists existed carry, is a list of one).
pub fn references_of(list: Option<&str>) -> impl Iterator<Item = &str> {
    list.unwrap_or_default().split_whitespace()
}

/// Whether an alert whose `reference` field is `list` is known under `reference`.
pub fn is_known_as(list: Option<&str>, reference: &str) -> bool {
    let reference = reference.trim();
    !reference.is_empty() && references_of(list).any(|r| r == reference)
}

/// The list `list` with `reference` appended, or `None` when there is nothing to add (it
/// is known already, or it is not a single token). Past [`MAX_REFERENCES`] the oldest
/// entries after the first are dropped: the first is the message that issued the alert,
/// the one a re-push of that message is recognised by.
pub fn add_reference(list: Option<&str>, reference: &str) -> Option<String> {
    let reference = reference.trim();
    if reference.is_empty()
        || reference.chars().any(char::is_whitespace)
        || is_known_as(list, reference)
    {
        return None;
    }
    let mut all: Vec<&str> = references_of(list).collect();
    all.push(reference);
    if all.len() > MAX_REFERENCES {
        let excess = all.len() - MAX_REFERENCES;
        // Keeps index 0; `excess` is at least 1 and at most `len - 1`, so the range is
        // inside the vector.
        all.drain(1..=excess);
    }
    Some(all.join(" "))
}

/// One upstream reference: a single token (the list separates references by spaces), at
/// most [`MAX_REFERENCE_CHARS`] characters, without control characters.
pub fn check_reference(reference: &str) -> Result<(), GatewayError> {
    check_length("reference", reference, MAX_REFERENCE_CHARS)?;
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(GatewayError::invalid(
            "reference",
            "must be one token without spaces or control characters (an alert keeps its references as a space-separated list)",
        ));
    }
    Ok(())
}

fn check_kind(kind: &str) -> Result<(), GatewayError> {
    check_line("kind", kind, MAX_KIND_CHARS)
}

fn check_headline(headline: &str) -> Result<(), GatewayError> {
    check_line("headline", headline, MAX_HEADLINE_CHARS)
}

fn check_text(text: &str) -> Result<(), GatewayError> {
    check_length("text", text, MAX_TEXT_CHARS)?;
    // Line breaks are fine in a warning text; other control characters garble SMS and
    // BeiDou encodings.
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(GatewayError::invalid(
            "text",
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

/// A single-line field: no control characters at all.
fn check_line(field: &str, value: &str, max: usize) -> Result<(), GatewayError> {
    check_length(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(GatewayError::invalid(
            field,
            "must be a single line without control characters",
        ));
    }
    Ok(())
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), GatewayError> {
    if value.trim().is_empty() {
        return Err(GatewayError::invalid(field, "must not be empty"));
    }
    let n = value.chars().count();
    if n > max {
        return Err(GatewayError::invalid(
            field,
            format!("must be at most {max} characters, got {n}"),
        ));
    }
    Ok(())
}

fn check_areas(areas: &[AreaSpec]) -> Result<(), GatewayError> {
    if areas.is_empty() {
        return Err(GatewayError::invalid(
            "area",
            "at least one area is required",
        ));
    }
    if areas.len() > MAX_AREAS {
        return Err(GatewayError::invalid(
            "area",
            format!("at most {MAX_AREAS} areas, got {}", areas.len()),
        ));
    }
    for (i, spec) in areas.iter().enumerate() {
        let at = format!("area[{i}]");
        // Our own pass names the exact position; the core's check then has the last
        // word, so the API never accepts an area that intake would refuse later.
        check_area(&at, spec)?;
        spec.validate().map_err(|e| {
            let field = match e {
                AreaError::BadRadius { .. } => format!("{at}.radius_m"),
                _ => at,
            };
            GatewayError::invalid(field, e.to_string())
        })?;
    }
    Ok(())
}

fn check_area(at: &str, spec: &AreaSpec) -> Result<(), GatewayError> {
    match spec {
        AreaSpec::Polygon { coordinates } => {
            check_polygon(&format!("{at}.coordinates"), coordinates)
        }
        AreaSpec::MultiPolygon { coordinates } => {
            if coordinates.is_empty() {
                return Err(GatewayError::invalid(
                    format!("{at}.coordinates"),
                    "a MultiPolygon needs at least one polygon",
                ));
            }
            for (k, polygon) in coordinates.iter().enumerate() {
                check_polygon(&format!("{at}.coordinates[{k}]"), polygon)?;
            }
            Ok(())
        }
        AreaSpec::Circle { center, radius_m } => {
            check_position(&format!("{at}.center"), *center)?;
            if !radius_m.is_finite() || *radius_m <= 0.0 {
                return Err(GatewayError::invalid(
                    format!("{at}.radius_m"),
                    "must be a positive number of metres",
                ));
            }
            Ok(())
        }
        AreaSpec::Named { id } => {
            let id = id.as_str();
            if id.trim().is_empty() {
                return Err(GatewayError::invalid(
                    format!("{at}.id"),
                    "must not be empty",
                ));
            }
            if id.chars().count() > MAX_AREA_ID_CHARS || id.chars().any(char::is_control) {
                return Err(GatewayError::invalid(
                    format!("{at}.id"),
                    format!(
                        "must be at most {MAX_AREA_ID_CHARS} characters without control characters"
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// A GeoJSON polygon: at least one ring, each closed with at least four positions.
fn check_polygon(at: &str, rings: &[Vec<[f64; 2]>]) -> Result<(), GatewayError> {
    if rings.is_empty() {
        return Err(GatewayError::invalid(at, "a polygon needs an outer ring"));
    }
    for (r, ring) in rings.iter().enumerate() {
        let ring_at = format!("{at}[{r}]");
        for (p, pos) in ring.iter().enumerate() {
            check_position(&format!("{ring_at}[{p}]"), *pos)?;
        }
        if ring.len() < 4 {
            return Err(GatewayError::invalid(
                ring_at,
                format!("a ring needs at least 4 positions, got {}", ring.len()),
            ));
        }
        if ring.first() != ring.last() {
            return Err(GatewayError::invalid(
                ring_at,
                "a ring must be closed: its last position must equal its first",
            ));
        }
    }
    Ok(())
}

/// A `[lon, lat]` position in WGS84.
fn check_position(at: &str, [lon, lat]: [f64; 2]) -> Result<(), GatewayError> {
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Err(GatewayError::invalid(
            at,
            format!("longitude {lon} is outside -180..180 (positions are [lon, lat])"),
        ));
    }
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Err(GatewayError::invalid(
            at,
            format!("latitude {lat} is outside -90..90 (positions are [lon, lat])"),
        ));
    }
    Ok(())
}

/// Accepts one area object or an array of them, keeping serde's own error (and path) for
/// whatever is inside.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AreaSpec>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<AreaSpec>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an area object or an array of area objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // The size hint comes from the client; never pre-allocate from it.
            let mut areas = Vec::new();
            while let Some(spec) = seq.next_element()? {
                if areas.len() >= MAX_AREAS {
                    return Err(de::Error::custom(format!("at most {MAX_AREAS} areas")));
                }
                areas.push(spec);
            }
            Ok(areas)
        }

        fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
            AreaSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(|spec| vec![spec])
        }
    }

    d.deserialize_any(OneOrMany)
}

fn some_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<AreaSpec>>, D::Error> {
    one_or_many(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn square() -> serde_json::Value {
        json!({"type": "Polygon", "coordinates": [[[116.0, 40.0], [116.1, 40.0], [116.1, 40.1], [116.0, 40.0]]]})
    }

    fn alert_json(area: serde_json::Value) -> serde_json::Value {
        json!({"grade": "red", "kind": "flood", "headline": "山洪红色预警", "text": "立即转移", "area": area})
    }

    fn field_of(e: GatewayError) -> String {
        match e {
            GatewayError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn single_area_object_and_array_both_parse() {
        let one: NewAlert = serde_json::from_value(alert_json(square())).unwrap();
        let many: NewAlert = serde_json::from_value(alert_json(
            json!([square(), {"type": "Named", "id": "v-wjg"}]),
        ))
        .unwrap();
        assert_eq!(one.area.len(), 1);
        assert_eq!(many.area.len(), 2);
        assert!(
            !one.exercise,
            "exercise defaults to false: live unless said otherwise"
        );
        assert_eq!(one.area, many.area[..1]);
        assert!(one.validate().is_ok());
        assert!(many.validate().is_ok());
    }

    #[test]
    fn unknown_field_is_refused() {
        let mut v = alert_json(square());
        v["excercise"] = json!(true);
        let err = serde_json::from_value::<NewAlert>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `excercise`"), "{err}");
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let mut a: NewAlert = serde_json::from_value(alert_json(square())).unwrap();
        a.headline = "山".repeat(60); // 180 bytes, 60 characters
        assert!(a.validate().is_ok());
        a.headline = "山".repeat(61);
        assert_eq!(field_of(a.validate().unwrap_err()), "headline");
        a.headline = "ok".into();
        a.text = "x".repeat(501);
        assert_eq!(field_of(a.validate().unwrap_err()), "text");
        a.text = "第一行\n第二行".into();
        assert!(a.validate().is_ok());
        a.kind = "  ".into();
        assert_eq!(field_of(a.validate().unwrap_err()), "kind");
        a.kind = "k".repeat(33);
        assert_eq!(field_of(a.validate().unwrap_err()), "kind");
        a.kind = "flood\u{7}".into();
        assert_eq!(field_of(a.validate().unwrap_err()), "kind");
    }

    #[test]
    fn area_errors_name_the_exact_position() {
        let bad_pos = json!([square(), {"type": "Polygon", "coordinates": [[[116.0, 40.0], [200.0, 40.0], [116.1, 40.1], [116.0, 40.0]]]}]);
        let a: NewAlert = serde_json::from_value(alert_json(bad_pos)).unwrap();
        assert_eq!(
            field_of(a.validate().unwrap_err()),
            "area[1].coordinates[0][1]"
        );

        let open = json!({"type": "Polygon", "coordinates": [[[116.0, 40.0], [116.1, 40.0], [116.1, 40.1], [116.0, 40.2]]]});
        let a: NewAlert = serde_json::from_value(alert_json(open)).unwrap();
        assert_eq!(
            field_of(a.validate().unwrap_err()),
            "area[0].coordinates[0]"
        );

        let circle = json!({"type": "Circle", "center": [116.0, 40.0], "radius_m": 0.0});
        let a: NewAlert = serde_json::from_value(alert_json(circle)).unwrap();
        assert_eq!(field_of(a.validate().unwrap_err()), "area[0].radius_m");

        let multi = json!({"type": "MultiPolygon", "coordinates": [[[[116.0, 40.0], [116.0, 95.0], [116.1, 40.1], [116.0, 40.0]]]]});
        let a: NewAlert = serde_json::from_value(alert_json(multi)).unwrap();
        assert_eq!(
            field_of(a.validate().unwrap_err()),
            "area[0].coordinates[0][0][1]"
        );

        // The core's limits apply too: a 600 km circle is a units mistake, not a fence.
        let huge = json!({"type": "Circle", "center": [116.0, 40.0], "radius_m": 600_000.0});
        let a: NewAlert = serde_json::from_value(alert_json(huge)).unwrap();
        assert_eq!(field_of(a.validate().unwrap_err()), "area[0].radius_m");

        let a: NewAlert = serde_json::from_value(alert_json(json!([]))).unwrap();
        assert_eq!(field_of(a.validate().unwrap_err()), "area");

        let a: NewAlert =
            serde_json::from_value(alert_json(json!({"type": "Named", "id": ""}))).unwrap();
        assert_eq!(field_of(a.validate().unwrap_err()), "area[0].id");
    }

    #[test]
    fn too_many_areas_are_refused_while_parsing() {
        let many: Vec<_> = (0..=MAX_AREAS)
            .map(|i| json!({"type": "Named", "id": format!("v{i}")}))
            .collect();
        let err = serde_json::from_value::<NewAlert>(alert_json(json!(many)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 100 areas"), "{err}");
    }

    #[test]
    fn patch_needs_a_change_and_validates_what_it_has() {
        let empty: AlertPatch = serde_json::from_value(json!({})).unwrap();
        assert!(empty.validate().is_err());
        let p: AlertPatch = serde_json::from_value(json!({"grade": "orange"})).unwrap();
        assert_eq!(p.grade, Some(Grade::Orange));
        assert!(p.validate().is_ok());
        let p: AlertPatch =
            serde_json::from_value(json!({"area": {"type": "Named", "id": "v1"}})).unwrap();
        assert_eq!(p.area.as_ref().map(Vec::len), Some(1));
        let p: AlertPatch = serde_json::from_value(json!({"headline": ""})).unwrap();
        assert_eq!(field_of(p.validate().unwrap_err()), "headline");
        assert!(serde_json::from_value::<AlertPatch>(json!({"kind": "x"})).is_err());
        // Asking to tell everyone again is a change on its own; it is omitted when false.
        let p: AlertPatch = serde_json::from_value(json!({"re_notify": true})).unwrap();
        assert!(p.re_notify && p.validate().is_ok());
        assert!(
            serde_json::from_value::<AlertPatch>(json!({"re_notify": false}))
                .unwrap()
                .validate()
                .is_err()
        );
        // Serialized patches omit what they do not change, so a client can round-trip them.
        let p = AlertPatch {
            text: Some("新".into()),
            ..AlertPatch::default()
        };
        assert_eq!(serde_json::to_value(&p).unwrap(), json!({"text": "新"}));
    }

    #[test]
    fn a_reference_alone_is_a_patch_and_must_be_one_token() {
        let p: AlertPatch =
            serde_json::from_value(json!({"reference": "qx,U-1,2024-07-01T11:00:00+08:00"}))
                .unwrap();
        assert!(p.validate().is_ok());
        for bad in ["", "a b", "a\u{7}", &"x".repeat(MAX_REFERENCE_CHARS + 1)] {
            let p = AlertPatch {
                reference: Some(bad.to_owned()),
                ..AlertPatch::default()
            };
            assert_eq!(field_of(p.validate().unwrap_err()), "reference", "{bad:?}");
        }
        // A submitted alert's reference is one token too: a space would make it two.
        let mut a: NewAlert = serde_json::from_value(alert_json(square())).unwrap();
        a.reference = Some("qx,A-1,2024-07-01 10:30:00+08:00".into());
        assert_eq!(field_of(a.validate().unwrap_err()), "reference");
        a.reference = Some("x".repeat(MAX_REFERENCE_CHARS));
        assert!(a.validate().is_ok());
    }

    #[test]
    fn reference_lists_grow_without_duplicates() {
        assert!(is_known_as(Some("a,1,t"), "a,1,t"));
        assert!(!is_known_as(None, "a,1,t"));
        assert!(!is_known_as(Some("a,1,t"), ""));
        assert!(!is_known_as(Some("a,1,t b,2,t"), "a,1"));
        let two = add_reference(Some("a,1,t"), "b,2,t").unwrap();
        assert_eq!(two, "a,1,t b,2,t");
        assert!(is_known_as(Some(&two), "b,2,t"));
        assert_eq!(add_reference(Some(&two), "b,2,t"), None);
        assert_eq!(add_reference(Some(&two), "a,1,t"), None);
        assert_eq!(add_reference(None, "c,3,t").as_deref(), Some("c,3,t"));
        assert_eq!(add_reference(Some(&two), "c d"), None);
        assert_eq!(add_reference(Some(&two), "  "), None);
        assert_eq!(
            references_of(Some(" a,1,t\tb,2,t ")).collect::<Vec<_>>(),
            ["a,1,t", "b,2,t"]
        );
    }

    #[test]
    fn a_full_list_forgets_the_oldest_but_never_the_first() {
        let mut list = Some("first".to_owned());
        for i in 1..=MAX_REFERENCES + 5 {
            list = add_reference(list.as_deref(), &format!("u{i}"));
        }
        let all: Vec<&str> = references_of(list.as_deref()).collect();
        assert_eq!(all.len(), MAX_REFERENCES);
        assert_eq!(all[0], "first");
        // The first and 69 updates make 70: the 6 oldest updates went.
        assert_eq!(all[1], "u7");
        assert_eq!(all.last(), Some(&"u69"));
        assert!(!is_known_as(list.as_deref(), "u6"));
        // A re-push of the first message is still recognised.
        assert!(is_known_as(list.as_deref(), "first"));
    }
}
