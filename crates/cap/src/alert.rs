//! From a CAP message to what Tocsin does with it: issue a new alert, change or cancel
//! the alert it references, or refuse it with a reason that names the element.

use crate::CapError;
use crate::message::{Area, CapMessage, Info, MsgType, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tocsin_core::{AreaId, AreaSpec, Grade, Timestamp};

/// Longest headline kept, in characters (the API's limit for a headline).
pub const MAX_HEADLINE_CHARS: usize = 60;
/// Longest text kept, in characters (the API's limit for a warning text).
pub const MAX_TEXT_CHARS: usize = 500;
/// Longest hazard kind kept, in characters (the API's limit for a kind).
pub const MAX_KIND_CHARS: usize = 32;

/// How CAP messages map onto this district. Deserializable so the daemon can read it
/// from its config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapPolicy {
    /// The grade for severity `Unknown`; without one such messages are refused, since
    /// guessing a grade decides who is woken at night.
    #[serde(default)]
    pub unknown_severity: Option<Grade>,
    /// Geocode value (e.g. a GB/T 2260 admin code such as `110116`) → the named areas of
    /// the directory it covers. Used for areas given only by geocodes.
    #[serde(default)]
    pub geocodes: BTreeMap<String, Vec<AreaId>>,
    /// Languages preferred when a message carries several `<info>` blocks, best first.
    /// Empty means `zh-CN` (then `zh`, then the first block).
    #[serde(default)]
    pub languages: Vec<String>,
}

/// An alert drawn from a CAP message, in Tocsin's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertDraft {
    /// Grade from the severity.
    pub grade: Grade,
    /// Hazard kind: the `event` (cut to [`MAX_KIND_CHARS`]).
    pub kind: String,
    /// The `headline`, or `{event}{颜色}预警` without one (cut to [`MAX_HEADLINE_CHARS`]).
    pub headline: String,
    /// `description` then `instruction` (cut to [`MAX_TEXT_CHARS`], ending in `…`).
    pub text: String,
    /// The union of the chosen info blocks' areas, `[lon, lat]`.
    pub area: Vec<AreaSpec>,
    /// `status` was Exercise.
    pub exercise: bool,
    /// This message's reference, `sender,identifier,sent`.
    pub reference: String,
    /// The earliest `expires` of the chosen info blocks; Tocsin's alerts have no expiry
    /// yet, so this is for the caller to log or act on.
    pub expires: Option<Timestamp>,
}

/// What a CAP message asks of Tocsin.
#[derive(Clone, Debug, PartialEq)]
pub enum CapAction {
    /// Issue a new alert (msgType Alert).
    Issue(AlertDraft),
    /// Change the alert issued under one of `references` (msgType Update) to match
    /// `draft`.
    Update {
        /// The referenced messages' keys, `sender,identifier,sent`, in message order.
        references: Vec<String>,
        /// The alert as it should now be.
        draft: AlertDraft,
    },
    /// Cancel the alert issued under one of `references` (msgType Cancel).
    Cancel {
        /// The referenced messages' keys, in message order.
        references: Vec<String>,
        /// This message's own reference.
        reference: String,
    },
}

/// Decides what `msg` asks for under `policy`: checks that it is meant for people, and
/// maps severity, texts and areas.
pub fn to_alert(msg: &CapMessage, policy: &CapPolicy) -> Result<CapAction, CapError> {
    let exercise = match msg.status {
        Status::Actual => false,
        Status::Exercise => true,
        Status::System => return Err(not_delivered("System", "a system message is for machines")),
        Status::Test => return Err(not_delivered("Test", "a technical test reaches no one")),
        Status::Draft => return Err(not_delivered("Draft", "a draft is not issued")),
    };
    let references = || msg.references.iter().map(|r| r.key()).collect::<Vec<_>>();
    match msg.msg_type {
        MsgType::Alert => draft(msg, policy, exercise).map(CapAction::Issue),
        MsgType::Update => Ok(CapAction::Update {
            references: references(),
            draft: draft(msg, policy, exercise)?,
        }),
        MsgType::Cancel => Ok(CapAction::Cancel {
            references: references(),
            reference: msg.reference(),
        }),
        MsgType::Ack | MsgType::Error => Err(CapError::Refused {
            element: "alert/msgType".into(),
            message: format!(
                "msgType {:?} is a reply to an earlier message; Tocsin does not record CAP replies yet",
                msg.msg_type
            ),
        }),
    }
}

fn not_delivered(status: &str, why: &str) -> CapError {
    CapError::Refused {
        element: "alert/status".into(),
        message: format!("status {status}: {why}, so Tocsin delivers nothing"),
    }
}

fn draft(msg: &CapMessage, policy: &CapPolicy, exercise: bool) -> Result<AlertDraft, CapError> {
    let chosen = choose_info(msg, policy);
    if chosen.is_empty() {
        return Err(CapError::Missing {
            element: "alert/info".into(),
        });
    }
    // Several blocks in one language cover several areas (say red upstream, orange
    // downstream). One alert has one grade: the highest, so nobody is warned less than
    // their block says.
    let mut graded = Vec::with_capacity(chosen.len());
    for &(i, info) in &chosen {
        let grade = match (info.severity.grade(), policy.unknown_severity) {
            (Some(g), _) | (None, Some(g)) => g,
            (None, None) => {
                return Err(CapError::Refused {
                    element: format!("alert/info[{i}]/severity"),
                    message: "severity Unknown: no grade is configured for it, so the warning cannot be graded".into(),
                });
            }
        };
        graded.push((i, info, grade));
    }
    let Some(&(_, lead, grade)) = graded
        .iter()
        .max_by_key(|(i, _, g)| (*g, std::cmp::Reverse(*i)))
    else {
        return Err(CapError::Missing {
            element: "alert/info".into(),
        });
    };
    let mut area = Vec::new();
    for &(i, info, _) in &graded {
        if info.areas.is_empty() {
            return Err(CapError::Missing {
                element: format!("alert/info[{i}]/area"),
            });
        }
        for (k, a) in info.areas.iter().enumerate() {
            area_specs(&format!("alert/info[{i}]/area[{k}]"), a, policy, &mut area)?;
        }
    }
    let headline = match &lead.headline {
        Some(h) => h.clone(),
        None => format!("{}{}预警", lead.event, grade.chinese()),
    };
    let text = [lead.description.as_deref(), lead.instruction.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
    let text = if text.trim().is_empty() {
        headline.clone()
    } else {
        text
    };
    Ok(AlertDraft {
        grade,
        kind: cut(&one_line(&lead.event), MAX_KIND_CHARS),
        headline: cut(&one_line(&headline), MAX_HEADLINE_CHARS),
        text: cut(&clean_text(&text), MAX_TEXT_CHARS),
        area,
        exercise,
        reference: msg.reference(),
        expires: graded
            .iter()
            .filter_map(|(_, info, _)| info.expires.as_ref().map(|e| e.at))
            .min(),
    })
}

/// The info blocks in the most preferred language present, with their indexes.
fn choose_info<'a>(msg: &'a CapMessage, policy: &CapPolicy) -> Vec<(usize, &'a Info)> {
    let defaults = ["zh-CN".to_owned(), "zh".to_owned()];
    let preferred: &[String] = if policy.languages.is_empty() {
        &defaults
    } else {
        &policy.languages
    };
    let all = || msg.info.iter().enumerate();
    for want in preferred {
        let exact: Vec<_> = all()
            .filter(|(_, i)| i.language.eq_ignore_ascii_case(want))
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        // `zh` matches `zh-CN`, `zh-Hans`...
        let prefix: Vec<_> = all()
            .filter(|(_, i)| {
                i.language
                    .split('-')
                    .next()
                    .is_some_and(|l| l.eq_ignore_ascii_case(want))
            })
            .collect();
        if !prefix.is_empty() {
            return prefix;
        }
    }
    // None preferred: the first block's language.
    let Some(first) = msg.info.first() else {
        return Vec::new();
    };
    all()
        .filter(|(_, i)| i.language == first.language)
        .collect()
}

/// An `<area>`'s pieces as Tocsin areas. Geometry wins: when an area has polygons or
/// circles, its geocodes only describe where that geometry lies (a whole county around a
/// valley's polygon) and are not added, or the warning would wake the whole county.
/// An area given by geocodes alone needs each code in the policy's table.
fn area_specs(
    at: &str,
    area: &Area,
    policy: &CapPolicy,
    out: &mut Vec<AreaSpec>,
) -> Result<(), CapError> {
    for ring in &area.polygons {
        out.push(AreaSpec::Polygon {
            coordinates: vec![ring.iter().map(|p| p.lon_lat()).collect()],
        });
    }
    for c in &area.circles {
        out.push(AreaSpec::Circle {
            center: c.center.lon_lat(),
            radius_m: c.radius_m,
        });
    }
    if !area.polygons.is_empty() || !area.circles.is_empty() {
        return Ok(());
    }
    if area.geocodes.is_empty() {
        return Err(CapError::Missing {
            element: format!("{at}/polygon"),
        });
    }
    for (g, geocode) in area.geocodes.iter().enumerate() {
        for code in &geocode.codes {
            match policy.geocodes.get(code) {
                Some(ids) if !ids.is_empty() => {
                    out.extend(ids.iter().map(|id| AreaSpec::Named { id: id.clone() }));
                }
                _ => {
                    return Err(CapError::Refused {
                        element: format!("{at}/geocode[{g}]"),
                        message: format!(
                            "geocode {code:?} ({}) maps to no named area of this district; add it to the CAP geocode table or send a polygon",
                            if geocode.scheme.is_empty() {
                                "no valueName"
                            } else {
                                geocode.scheme.as_str()
                            }
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// One line: line breaks and other control characters become spaces.
fn one_line(s: &str) -> String {
    s.split(char::is_control)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A multi-line text: control characters other than line breaks and tabs dropped, lines
/// trimmed (CAP texts are usually indented with the XML).
fn clean_text(s: &str) -> String {
    s.lines()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most `max` characters; a cut text ends in `…` so readers know there was more.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
