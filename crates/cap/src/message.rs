//! A CAP 1.2 message (or a GB/T 35965.1 one) as Tocsin reads it, and the reading itself:
//! from the element tree to typed fields, each error naming its element by path
//! (`alert/info[0]/area[1]/polygon[0]`).
//!
//! Strict where Tocsin acts on a value (status, msgType, severity, geometry, times, the
//! identifiers that make up a reference); lenient where it does not (category, urgency,
//! certainty are kept as text), so an upstream system's harmless quirk never holds back a
//! warning.

use crate::CapError;
use crate::time::parse_time;
use crate::xml::Element;
use tocsin_core::area::MAX_RADIUS_M;
use tocsin_core::{Grade, Timestamp};

/// The CAP 1.2 namespace.
pub const CAP_1_2_NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// Which dialect a message is written in; it decides the unit of circle radii.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// OASIS CAP 1.2: `sent`, radii in kilometres.
    Cap12,
    /// The Chinese national profile GB/T 35965.1-2018: `sendTime`, radii in metres,
    /// colour severities, comma-separated geocode lists.
    GbT35965,
}

/// `status`: who the message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A real warning.
    Actual,
    /// A drill: delivered, marked as an exercise on every bearer.
    Exercise,
    /// Network or system messages; not for people.
    System,
    /// A technical test; not for people.
    Test,
    /// A draft; not for people.
    Draft,
}

/// `msgType`: what the message does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// A new warning.
    Alert,
    /// Changes the warning(s) it references.
    Update,
    /// Withdraws the warning(s) it references.
    Cancel,
    /// Acknowledges the message(s) it references.
    Ack,
    /// Rejects the message(s) it references.
    Error,
}

/// `scope`: who may see the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Anyone.
    Public,
    /// Users with a need to know (see `restriction`).
    Restricted,
    /// The listed addresses only.
    Private,
}

/// `severity`, in CAP's words or the GB profile's colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// CAP Extreme.
    Extreme,
    /// CAP Severe.
    Severe,
    /// CAP Moderate.
    Moderate,
    /// CAP Minor.
    Minor,
    /// GB/T 35965.1 Red (level I).
    Red,
    /// GB/T 35965.1 Orange (level II).
    Orange,
    /// GB/T 35965.1 Yellow (level III).
    Yellow,
    /// GB/T 35965.1 Blue (level IV).
    Blue,
    /// Unknown.
    Unknown,
}

impl Severity {
    /// The grade it stands for; `None` for `Unknown`.
    pub fn grade(self) -> Option<Grade> {
        match self {
            Severity::Extreme | Severity::Red => Some(Grade::Red),
            Severity::Severe | Severity::Orange => Some(Grade::Orange),
            Severity::Moderate | Severity::Yellow => Some(Grade::Yellow),
            Severity::Minor | Severity::Blue => Some(Grade::Blue),
            Severity::Unknown => None,
        }
    }
}

/// A date-time as written and as an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapTime {
    /// The text as written (part of a message's reference).
    pub text: String,
    /// The instant.
    pub at: Timestamp,
}

/// A WGS-84 position, named fields so latitude and longitude are never swapped: CAP
/// writes `lat,lon`, GeoJSON and Tocsin's areas `[lon, lat]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatLon {
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lon: f64,
}

impl LatLon {
    /// As a GeoJSON / [`tocsin_core::AreaSpec`] position `[lon, lat]`.
    pub fn lon_lat(self) -> [f64; 2] {
        [self.lon, self.lat]
    }
}

/// A `<circle>`, its radius already in metres whatever the profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Circle {
    /// Centre.
    pub center: LatLon,
    /// Radius in metres (CAP's kilometres converted; the GB profile's metres as given).
    pub radius_m: f64,
}

/// A `<geocode>`: a scheme and the codes it lists (GB: comma-separated admin codes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geocode {
    /// `valueName`, e.g. `GB/T2260`.
    pub scheme: String,
    /// The codes in `value`, split on commas.
    pub codes: Vec<String>,
}

/// A `valueName`/`value` pair (`eventCode`, `parameter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedValue {
    /// `valueName`.
    pub name: String,
    /// `value`.
    pub value: String,
}

/// One `<area>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Area {
    /// `areaDesc` (empty if absent).
    pub desc: String,
    /// Polygons, each a closed ring of at least four positions.
    pub polygons: Vec<Vec<LatLon>>,
    /// Circles.
    pub circles: Vec<Circle>,
    /// Geocodes.
    pub geocodes: Vec<Geocode>,
}

/// One `<info>` block: the warning in one language.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    /// `language` (default `en-US`, as CAP says).
    pub language: String,
    /// `category` values as written.
    pub categories: Vec<String>,
    /// `event`, e.g. 暴雨.
    pub event: String,
    /// `responseType` values as written.
    pub response_types: Vec<String>,
    /// `urgency` as written.
    pub urgency: Option<String>,
    /// `severity`.
    pub severity: Severity,
    /// `certainty` as written.
    pub certainty: Option<String>,
    /// `eventCode`s.
    pub event_codes: Vec<NamedValue>,
    /// `effective`.
    pub effective: Option<CapTime>,
    /// `onset`.
    pub onset: Option<CapTime>,
    /// `expires`.
    pub expires: Option<CapTime>,
    /// `senderName`.
    pub sender_name: Option<String>,
    /// `headline`.
    pub headline: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `instruction`.
    pub instruction: Option<String>,
    /// `parameter`s.
    pub parameters: Vec<NamedValue>,
    /// `area`s.
    pub areas: Vec<Area>,
}

/// One message's reference to an earlier one: `sender,identifier,sent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The earlier message's sender.
    pub sender: String,
    /// The earlier message's identifier.
    pub identifier: String,
    /// The earlier message's sent time, as written.
    pub sent: String,
}

impl Reference {
    /// The reference as Tocsin stores it on an alert: `sender,identifier,sent`, the time
    /// written with `T` (the GB profile writes a space there), so a GB message and a
    /// reference to it agree however the time was spelled.
    pub fn key(&self) -> String {
        reference_key(&self.sender, &self.identifier, &self.sent)
    }
}

/// A parsed CAP message.
#[derive(Clone, Debug, PartialEq)]
pub struct CapMessage {
    /// The dialect it was written in.
    pub profile: Profile,
    /// `identifier`.
    pub identifier: String,
    /// `sender`.
    pub sender: String,
    /// `sent` (GB: `sendTime`).
    pub sent: CapTime,
    /// `status`.
    pub status: Status,
    /// `msgType`.
    pub msg_type: MsgType,
    /// `scope` (`Public` if the GB profile leaves it out).
    pub scope: Scope,
    /// `source`.
    pub source: Option<String>,
    /// `note`.
    pub note: Option<String>,
    /// `references`, in the order written.
    pub references: Vec<Reference>,
    /// `info` blocks.
    pub info: Vec<Info>,
}

impl CapMessage {
    /// This message's own reference, `sender,identifier,sent` (see [`Reference::key`]).
    pub fn reference(&self) -> String {
        reference_key(&self.sender, &self.identifier, &self.sent.text)
    }
}

fn reference_key(sender: &str, identifier: &str, sent: &str) -> String {
    let sent = sent.trim();
    let sent = match sent.split_once(' ') {
        Some((date, time)) => format!("{date}T{time}"),
        None => sent.to_owned(),
    };
    format!("{sender},{identifier},{sent}")
}

/// An element and its path, for reading children with errors that say where.
struct Node<'a> {
    el: &'a Element,
    path: String,
}

impl<'a> Node<'a> {
    /// Children named `name` in the message's namespace (extensions in other namespaces
    /// are skipped), with their paths; indexed when the element may repeat.
    fn all(&self, name: &str) -> Vec<Node<'a>> {
        self.el
            .children
            .iter()
            .filter(|c| c.name == name && c.ns == self.el.ns)
            .enumerate()
            .map(|(i, el)| Node {
                el,
                path: format!("{}/{name}[{i}]", self.path),
            })
            .collect()
    }

    /// The one child named `name`, if present; two are an error.
    fn one(&self, name: &str) -> Result<Option<Node<'a>>, CapError> {
        let mut found = self
            .el
            .children
            .iter()
            .filter(|c| c.name == name && c.ns == self.el.ns);
        let first = found.next();
        if found.next().is_some() {
            return Err(CapError::Repeated {
                element: format!("{}/{name}", self.path),
            });
        }
        Ok(first.map(|el| Node {
            el,
            path: format!("{}/{name}", self.path),
        }))
    }

    /// The one child named `name`; absent is an error.
    fn required(&self, name: &str) -> Result<Node<'a>, CapError> {
        self.one(name)?.ok_or_else(|| CapError::Missing {
            element: format!("{}/{name}", self.path),
        })
    }

    /// Trimmed text of the one child `name`; absent or blank is `None`.
    fn text(&self, name: &str) -> Result<Option<String>, CapError> {
        Ok(self.one(name)?.and_then(|n| n.value()))
    }

    /// Trimmed text of the one child `name`, which must be there and not blank.
    fn required_text(&self, name: &str) -> Result<String, CapError> {
        let node = self.required(name)?;
        node.value().ok_or_else(|| CapError::Invalid {
            element: node.path.clone(),
            message: "must not be empty".into(),
        })
    }

    /// This element's trimmed text; blank is `None`.
    fn value(&self) -> Option<String> {
        let t = self.el.text.trim();
        (!t.is_empty()).then(|| t.to_owned())
    }

    fn invalid(&self, message: impl Into<String>) -> CapError {
        CapError::Invalid {
            element: self.path.clone(),
            message: message.into(),
        }
    }
}

/// Reads a message from its element tree.
pub(crate) fn from_tree(root: &Element) -> Result<CapMessage, CapError> {
    let alert = Node {
        el: root,
        path: "alert".into(),
    };
    if root.name != "alert" {
        return Err(CapError::Invalid {
            element: root.name.clone(),
            message: "the root element must be <alert>".into(),
        });
    }
    // CAP 1.2 proper, or no namespace at all (some GB/T 35965.1 producers leave it
    // out). CAP 1.1 and others differ in details Tocsin would misread.
    match root.ns.as_deref() {
        None | Some(CAP_1_2_NAMESPACE) => {}
        Some(other) => {
            return Err(alert.invalid(format!(
                "namespace {other:?} is not CAP 1.2 ({CAP_1_2_NAMESPACE})"
            )));
        }
    }
    let send_time = alert.one("sendTime")?;
    let (profile, sent_node) = match (alert.one("sent")?, send_time) {
        (Some(sent), _) => (Profile::Cap12, sent),
        (None, Some(send_time)) => (Profile::GbT35965, send_time),
        (None, None) => {
            return Err(CapError::Missing {
                element: "alert/sent".into(),
            });
        }
    };
    let identifier = alert.required_text("identifier")?;
    check_id("alert/identifier", &identifier)?;
    let sender = alert.required_text("sender")?;
    check_id("alert/sender", &sender)?;
    let sent = time(&sent_node)?.ok_or_else(|| sent_node.invalid("must not be empty"))?;
    let status = alert.required("status")?;
    let status = match status
        .value()
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("actual") => Status::Actual,
        Some("exercise") => Status::Exercise,
        Some("system") => Status::System,
        Some("test") => Status::Test,
        Some("draft") => Status::Draft,
        _ => return Err(status.invalid("must be Actual, Exercise, System, Test or Draft")),
    };
    let msg_type = alert.required("msgType")?;
    let msg_type = match msg_type
        .value()
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("alert") => MsgType::Alert,
        Some("update") => MsgType::Update,
        Some("cancel") => MsgType::Cancel,
        Some("ack") => MsgType::Ack,
        Some("error") => MsgType::Error,
        _ => return Err(msg_type.invalid("must be Alert, Update, Cancel, Ack or Error")),
    };
    let scope = match alert.one("scope")? {
        Some(node) => match node
            .value()
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("public") => Scope::Public,
            Some("restricted") => Scope::Restricted,
            Some("private") => Scope::Private,
            _ => return Err(node.invalid("must be Public, Restricted or Private")),
        },
        // CAP requires scope; the GB profile is always Public and some producers omit it.
        None if profile == Profile::GbT35965 => Scope::Public,
        None => {
            return Err(CapError::Missing {
                element: "alert/scope".into(),
            });
        }
    };
    let references = match alert.one("references")? {
        Some(node) => references(&node)?,
        None => Vec::new(),
    };
    if matches!(
        msg_type,
        MsgType::Update | MsgType::Cancel | MsgType::Ack | MsgType::Error
    ) && references.is_empty()
    {
        return Err(CapError::Missing {
            element: "alert/references".into(),
        });
    }
    let info = alert
        .all("info")
        .iter()
        .map(|n| info(n, profile))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CapMessage {
        profile,
        identifier,
        sender,
        sent,
        status,
        msg_type,
        scope,
        source: alert.text("source")?,
        note: alert.text("note")?,
        references,
        info,
    })
}

/// Identifiers and senders end up inside `sender,identifier,sent` references, so the
/// characters CAP forbids in them are refused here.
fn check_id(element: &str, value: &str) -> Result<(), CapError> {
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '<' | '&'))
    {
        return Err(CapError::Invalid {
            element: element.into(),
            message: format!("must not contain {c:?} (spaces, commas, < and & are not allowed)"),
        });
    }
    Ok(())
}

fn time(node: &Node<'_>) -> Result<Option<CapTime>, CapError> {
    let Some(text) = node.value() else {
        return Ok(None);
    };
    match parse_time(&text) {
        Some(at) => Ok(Some(CapTime { text, at })),
        None => Err(node.invalid(format!(
            "{text:?} is not a date-time like 2024-07-01T10:30:00+08:00"
        ))),
    }
}

fn optional_time(parent: &Node<'_>, name: &str) -> Result<Option<CapTime>, CapError> {
    match parent.one(name)? {
        Some(node) => time(&node),
        None => Ok(None),
    }
}

/// Space-separated `sender,identifier,sent` triplets. A GB time has a space inside
/// (`2024-07-01 10:30:00+08:00`), so a token without commas that follows a triplet whose
/// time is only a date is that time's second half.
fn references(node: &Node<'_>) -> Result<Vec<Reference>, CapError> {
    let text = node.el.text.as_str();
    let mut out: Vec<Reference> = Vec::new();
    for token in text.split_whitespace() {
        let parts: Vec<&str> = token.split(',').collect();
        match parts.as_slice() {
            [sender, identifier, sent] if !sender.is_empty() && !identifier.is_empty() => {
                out.push(Reference {
                    sender: (*sender).to_owned(),
                    identifier: (*identifier).to_owned(),
                    sent: (*sent).to_owned(),
                });
            }
            [time] => match out.last_mut() {
                Some(last) if last.sent.len() == 10 && !time.is_empty() => {
                    last.sent.push(' ');
                    last.sent.push_str(time);
                }
                _ => {
                    return Err(
                        node.invalid(format!("{token:?} is not a sender,identifier,sent triplet"))
                    );
                }
            },
            _ => {
                return Err(
                    node.invalid(format!("{token:?} is not a sender,identifier,sent triplet"))
                );
            }
        }
    }
    for r in &out {
        if parse_time(&r.sent).is_none() {
            return Err(node.invalid(format!(
                "the sent time {:?} of reference {},{} is not a date-time",
                r.sent, r.sender, r.identifier
            )));
        }
    }
    Ok(out)
}

fn info(node: &Node<'_>, profile: Profile) -> Result<Info, CapError> {
    let severity = node.required("severity")?;
    let severity = match severity
        .value()
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("extreme") => Severity::Extreme,
        Some("severe") => Severity::Severe,
        Some("moderate") => Severity::Moderate,
        Some("minor") => Severity::Minor,
        Some("red" | "红色") => Severity::Red,
        Some("orange" | "橙色") => Severity::Orange,
        Some("yellow" | "黄色") => Severity::Yellow,
        Some("blue" | "蓝色") => Severity::Blue,
        Some("unknown") => Severity::Unknown,
        _ => {
            return Err(severity.invalid(
                "must be Extreme, Severe, Moderate, Minor, Red, Orange, Yellow, Blue or Unknown",
            ));
        }
    };
    let texts =
        |name: &str| -> Vec<String> { node.all(name).iter().filter_map(Node::value).collect() };
    let pairs = |name: &str| -> Result<Vec<NamedValue>, CapError> {
        node.all(name)
            .iter()
            .map(|n| {
                Ok(NamedValue {
                    name: n.text("valueName")?.unwrap_or_default(),
                    value: n.text("value")?.unwrap_or_default(),
                })
            })
            .collect()
    };
    Ok(Info {
        language: node.text("language")?.unwrap_or_else(|| "en-US".into()),
        categories: texts("category"),
        event: node.required_text("event")?,
        response_types: texts("responseType"),
        urgency: node.text("urgency")?,
        severity,
        certainty: node.text("certainty")?,
        event_codes: pairs("eventCode")?,
        effective: optional_time(node, "effective")?,
        onset: optional_time(node, "onset")?,
        expires: optional_time(node, "expires")?,
        sender_name: node.text("senderName")?,
        headline: node.text("headline")?,
        description: node.text("description")?,
        instruction: node.text("instruction")?,
        parameters: pairs("parameter")?,
        areas: node
            .all("area")
            .iter()
            .map(|n| area(n, profile))
            .collect::<Result<_, _>>()?,
    })
}

fn area(node: &Node<'_>, profile: Profile) -> Result<Area, CapError> {
    let polygons = node
        .all("polygon")
        .iter()
        .map(polygon)
        .collect::<Result<_, _>>()?;
    let circles = node
        .all("circle")
        .iter()
        .map(|n| circle(n, profile))
        .collect::<Result<_, _>>()?;
    let geocodes = node
        .all("geocode")
        .iter()
        .map(|n| {
            let codes: Vec<String> = n
                .text("value")?
                .unwrap_or_default()
                .split([',', '，'])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            if codes.is_empty() {
                return Err(CapError::Invalid {
                    element: format!("{}/value", n.path),
                    message: "a geocode needs a value".into(),
                });
            }
            Ok(Geocode {
                scheme: n.text("valueName")?.unwrap_or_default(),
                codes,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Area {
        desc: node.text("areaDesc")?.unwrap_or_default(),
        polygons,
        circles,
        geocodes,
    })
}

/// `lat,lon` in WGS-84, range-checked.
fn position(node: &Node<'_>, pair: &str) -> Result<LatLon, CapError> {
    let (lat, lon) = pair
        .split_once(',')
        .ok_or_else(|| node.invalid(format!("{pair:?} is not a lat,lon pair")))?;
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let (Some(lat), Some(lon)) = (number(lat), number(lon)) else {
        return Err(node.invalid(format!("{pair:?} is not a lat,lon pair of numbers")));
    };
    if !(-90.0..=90.0).contains(&lat) {
        return Err(node.invalid(format!(
            "latitude {lat} in {pair:?} is outside -90..90 (CAP writes lat,lon)"
        )));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(node.invalid(format!(
            "longitude {lon} in {pair:?} is outside -180..180 (CAP writes lat,lon)"
        )));
    }
    Ok(LatLon { lat, lon })
}

fn polygon(node: &Node<'_>) -> Result<Vec<LatLon>, CapError> {
    let ring = node
        .el
        .text
        .split_whitespace()
        .map(|pair| position(node, pair))
        .collect::<Result<Vec<_>, _>>()?;
    if ring.len() < 4 {
        return Err(node.invalid(format!(
            "a polygon needs at least 4 lat,lon pairs, got {}",
            ring.len()
        )));
    }
    if ring.first() != ring.last() {
        return Err(node.invalid("a polygon must be closed: its last pair must equal its first"));
    }
    Ok(ring)
}

fn circle(node: &Node<'_>, profile: Profile) -> Result<Circle, CapError> {
    let text = node.el.text.trim();
    let (center, radius) = text
        .split_once(char::is_whitespace)
        .ok_or_else(|| node.invalid(format!("{text:?} is not \"lat,lon radius\"")))?;
    let center = position(node, center)?;
    let radius: f64 = radius
        .trim()
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r > 0.0)
        .ok_or_else(|| node.invalid(format!("radius {radius:?} is not a positive number")))?;
    let (radius_m, unit) = match profile {
        Profile::Cap12 => (radius * 1_000.0, "km"),
        Profile::GbT35965 => (radius, "m"),
    };
    if radius_m > MAX_RADIUS_M {
        return Err(node.invalid(format!(
            "radius {radius} {unit} is wider than {} km: a units mistake, not a warning area",
            MAX_RADIUS_M / 1_000.0
        )));
    }
    Ok(Circle { center, radius_m })
}
