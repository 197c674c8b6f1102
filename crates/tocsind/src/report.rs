//! The 叫应 report: what operators read at the end of a campaign, per town, with the list
//! of people not woken.

use std::collections::BTreeMap;
use std::fmt::Write;
use tocsin_core::{Bearer, DeviceId};
use tocsin_router::{AlertSummary, Counts, DeliveryState, DeliveryView, TaskState};

/// The bearers the report has a column for, in order.
pub const REPORTED_BEARERS: [Bearer; 6] = [
    Bearer::Sms,
    Bearer::Voice,
    Bearer::Beidou,
    Bearer::Mesh,
    Bearer::Sbd,
    Bearer::App,
];

/// Which bearer each device serves, as seen in the attempts made through it.
pub fn device_bearers(deliveries: &[DeliveryView]) -> BTreeMap<DeviceId, Bearer> {
    deliveries
        .iter()
        .flat_map(|d| &d.attempts)
        .map(|a| (a.device.clone(), a.bearer))
        .collect()
}

/// The bearer an acknowledged record's counted ack came from.
///
/// The router records the ack's evidence as `{from} via {device}: {text}`, followed over a
/// sender-authenticated device by ` — {the driver's evidence}` (e.g. the DTMF notice and
/// its call); the device names the bearer (every device serves one). When no attempt went
/// through that device, the sender's address says it for the bearers whose addresses are
/// their own.
pub fn ack_bearer(d: &DeliveryView, devices: &BTreeMap<DeviceId, Bearer>) -> Option<Bearer> {
    if d.state != DeliveryState::Acknowledged {
        return None;
    }
    let evidence = d.ack_evidence.as_deref()?;
    let (from, rest) = evidence.split_once(" via ")?;
    let device = rest.split(':').next().unwrap_or(rest).trim();
    if let Some(b) = devices.get(&DeviceId(device.to_owned())) {
        return Some(*b);
    }
    let from = from.trim();
    [
        ("bd:", Bearer::Beidou),
        ("mesh:", Bearer::Mesh),
        ("sbd:", Bearer::Sbd),
        ("app:", Bearer::App),
    ]
    .into_iter()
    .find(|(prefix, _)| from.starts_with(prefix))
    .map(|(_, b)| b)
}

/// Whether a call to this person was answered and the warning played through (or they
/// pressed 1 before its end).
pub fn listened(d: &DeliveryView) -> bool {
    d.attempts
        .iter()
        .any(|a| a.bearer == Bearer::Voice && a.outcome.starts_with("delivered"))
}

/// Acks per bearer, and voice calls listened to and answered with key 1, for one group.
#[derive(Default)]
struct ByBearer {
    acks: BTreeMap<Bearer, u32>,
    listened: u32,
    pressed: u32,
}

impl ByBearer {
    fn add(&mut self, d: &DeliveryView, devices: &BTreeMap<DeviceId, Bearer>) {
        let bearer = ack_bearer(d, devices);
        if let Some(b) = bearer {
            *self.acks.entry(b).or_default() += 1;
        }
        if bearer == Some(Bearer::Voice) {
            self.pressed += 1;
        }
        if listened(d) {
            self.listened += 1;
        }
    }
}

fn n(c: &Counts, s: DeliveryState) -> u32 {
    c.by_state.get(&s).copied().unwrap_or(0)
}

/// Renders the final report as plain text.
pub fn render(summary: &AlertSummary, deliveries: &[DeliveryView]) -> String {
    let mut out = String::new();
    let a = &summary.alert;
    let _ = writeln!(
        out,
        "叫应 report — {} ({}{})",
        a.headline,
        a.grade,
        if a.exercise { ", exercise" } else { "" }
    );
    let _ = writeln!(out, "alert {}  state {:?}", a.id, summary.state);
    let _ = writeln!(
        out,
        "{:<14} {:>7} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9}",
        "town", "targets", "reached", "ack", "late", "escalated", "confirmed", "unreached"
    );
    let row = |out: &mut String, name: &str, c: &Counts| {
        let acked = n(c, DeliveryState::Acknowledged);
        // People the warning actually reached (delivered, or they answered): an escalated
        // or door-knock-confirmed record whose own message never arrived is not counted.
        let reached = c.reached;
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9}",
            truncate(name, 14),
            c.targets,
            reached,
            acked.saturating_sub(c.late),
            c.late,
            c.escalated,
            n(c, DeliveryState::Confirmed),
            n(c, DeliveryState::Unreached)
        );
    };
    for (town, c) in &summary.by_town {
        row(&mut out, town, c);
    }
    row(&mut out, "ALL", &summary.counts);
    let _ = writeln!(
        out,
        "attempts {}  rejected replies {}  late door-knock confirmations {}  (ack = in time; late acks counted separately)",
        summary.counts.attempts, summary.counts.rejected_replies, summary.counts.late_door_knocks
    );
    // Accepted is not confirmed: someone said they are going; the visit is still owed.
    let _ = writeln!(
        out,
        "door knocks accepted, visit not yet confirmed {}  (counted in escalated, not in confirmed)",
        summary.counts.door_knocks_accepted
    );
    render_by_bearer(&mut out, summary, deliveries);
    let not_woken: Vec<&DeliveryView> = deliveries
        .iter()
        .filter(|d| matches!(d.state, DeliveryState::Unreached | DeliveryState::Escalated))
        .collect();
    if !not_woken.is_empty() {
        let _ = writeln!(out, "未叫醒 — not woken ({}):", not_woken.len());
        for d in not_woken.iter().take(40) {
            let _ = writeln!(
                out,
                "  {:<10} {:<8} {:<16} {:?}{}",
                d.person,
                d.name,
                d.town,
                d.state,
                door_knock(d)
            );
        }
        if not_woken.len() > 40 {
            let _ = writeln!(
                out,
                "  … and {} more (GET /v1/alerts/{}/deliveries?state=unreached)",
                not_woken.len() - 40,
                a.id
            );
        }
    }
    out
}

/// Who is asked to knock on the door of a record not woken, and whether they accepted.
fn door_knock(d: &DeliveryView) -> String {
    let Some(to) = &d.escalated_to else {
        return String::new();
    };
    match &d.door_knock {
        Some(k) if k.state == TaskState::Accepted => format!(
            " → door-knock by {to}, accepted by {}{}, visit not yet confirmed",
            k.accepted_by.as_ref().unwrap_or(to),
            k.visit_due
                .map(|t| format!(" (due {t})"))
                .unwrap_or_default()
        ),
        _ => format!(" → door-knock by {to} (assigned)"),
    }
}

/// Acks by the bearer they came from, per town and in total; who listened to the call and
/// who pressed 1.
fn render_by_bearer(out: &mut String, summary: &AlertSummary, deliveries: &[DeliveryView]) {
    let devices = device_bearers(deliveries);
    let mut towns: BTreeMap<&str, ByBearer> = summary
        .by_town
        .keys()
        .map(|t| (t.as_str(), ByBearer::default()))
        .collect();
    let mut all = ByBearer::default();
    for d in deliveries {
        towns.entry(d.town.as_str()).or_default().add(d, &devices);
        all.add(d, &devices);
    }
    let _ = write!(out, "acks by bearer\n{:<14}", "town");
    for b in REPORTED_BEARERS {
        let _ = write!(out, " {:>7}", b.as_str());
    }
    let _ = writeln!(out, " {:>6} {:>9} {:>9}", "other", "listened", "pressed 1");
    let row = |out: &mut String, name: &str, g: &ByBearer| {
        let _ = write!(out, "{:<14}", truncate(name, 14));
        for b in REPORTED_BEARERS {
            let _ = write!(out, " {:>7}", g.acks.get(&b).copied().unwrap_or(0));
        }
        let other: u32 = g
            .acks
            .iter()
            .filter(|(b, _)| !REPORTED_BEARERS.contains(b))
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, " {:>6} {:>9} {:>9}", other, g.listened, g.pressed);
    };
    for (town, g) in &towns {
        row(out, town, g);
    }
    row(out, "ALL", &all);
    let _ = writeln!(
        out,
        "(listened: a call answered and the warning played through; pressed 1: the ack came from a key press in the call)"
    );
    let pressed: Vec<&DeliveryView> = deliveries
        .iter()
        .filter(|d| ack_bearer(d, &devices) == Some(Bearer::Voice))
        .collect();
    let only_listened: Vec<&DeliveryView> = deliveries
        .iter()
        .filter(|d| listened(d) && ack_bearer(d, &devices) != Some(Bearer::Voice))
        .collect();
    for (title, list) in [
        ("pressed 1 in the call", &pressed),
        ("listened to the call, did not press 1", &only_listened),
    ] {
        if list.is_empty() {
            continue;
        }
        let names: Vec<String> = list
            .iter()
            .take(24)
            .map(|d| format!("{} {}", d.person, d.name))
            .collect();
        let more = list.len().saturating_sub(names.len());
        let _ = writeln!(
            out,
            "{title} ({}): {}{}",
            list.len(),
            names.join(", "),
            if more > 0 {
                format!(" … and {more} more")
            } else {
                String::new()
            }
        );
    }
}

fn truncate(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

/// The loudspeakers of an alert, each with its reception evidence: "reached" means the
/// speaker itself reported receiving the stream (RTCP receiver report), not just that
/// Tocsin sent it.
pub fn render_speakers(speakers: &[tocsin_router::SpeakerView]) -> String {
    let mut out = String::new();
    if speakers.is_empty() {
        return out;
    }
    let reached = speakers
        .iter()
        .filter(|s| s.state == tocsin_router::SpeakerState::Reached)
        .count();
    let _ = writeln!(
        out,
        "loudspeakers: {} in the area, {reached} with reception evidence",
        speakers.len()
    );
    for s in speakers {
        let _ = writeln!(
            out,
            "  {:<12} {:<14} {:<8} {:<12} {}",
            s.id,
            truncate(&s.name, 14),
            truncate(&s.town, 8),
            format!("{:?}", s.state).to_lowercase(),
            s.evidence.as_deref().or(s.reason.as_deref()).unwrap_or("")
        );
    }
    out
}

/// The field kits an alert was relayed to: the frame each got, where it stands, and how
/// many of its people's acks came back through it (counted in the BeiDou or SBD column
/// above, the link they travelled on).
pub fn render_kits(relays: &[tocsin_router::RelayView]) -> String {
    let mut out = String::new();
    if relays.is_empty() {
        return out;
    }
    let _ = writeln!(out, "field kits: {}", relays.len());
    for r in relays {
        let _ = writeln!(
            out,
            "  {:<12} {:<16} {:<10} {} of {} people acked through it (counted under its link above), {} frame, {} tr{}{}",
            r.kit,
            r.address.to_string(),
            format!("{:?}", r.state).to_lowercase(),
            r.acks,
            r.people,
            format!("{:?}", r.frame).to_lowercase(),
            r.tries,
            if r.tries == 1 { "y" } else { "ies" },
            r.reason
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_core::{AckCode, PersonId, Role, Timestamp};

    fn acked(evidence: &str) -> DeliveryView {
        DeliveryView {
            person: PersonId::from("v1"),
            name: "v1".into(),
            role: Role::VillageHead,
            town: "town".into(),
            state: DeliveryState::Acknowledged,
            code: AckCode::try_from("K7XY".to_owned()).unwrap_or_else(|_| panic!("fixture")),
            attempts: Vec::new(),
            acked_at: Some(Timestamp(1)),
            ack_evidence: Some(evidence.to_owned()),
            late: false,
            escalated_to: None,
            since: Timestamp(1),
            door_knock: None,
        }
    }

    /// A red flood alert in one town with these counts.
    fn summary_of(counts: Counts, state: tocsin_router::AlertState) -> AlertSummary {
        AlertSummary {
            alert: tocsin_core::Alert {
                id: tocsin_core::AlertId::from("a1"),
                grade: tocsin_core::Grade::Red,
                kind: "flood".into(),
                headline: "山洪红色预警".into(),
                text: "转移".into(),
                area: vec![],
                exercise: false,
                issuer: "op".into(),
                accepted_at: Timestamp(0),
                reference: None,
            },
            state,
            counts: counts.clone(),
            by_town: BTreeMap::from([("town".to_owned(), counts)]),
            finished_at: None,
            speakers: Default::default(),
        }
    }

    #[test]
    fn a_late_door_knock_does_not_lower_the_in_time_acks() {
        // Three acknowledged (one late) and one door knock confirmed after the record had
        // closed unreached, as the router counts them.
        let mut counts = Counts {
            targets: 4,
            late: 1,
            late_door_knocks: 1,
            escalated: 1,
            ..Counts::default()
        };
        counts.by_state.insert(DeliveryState::Acknowledged, 3);
        counts.by_state.insert(DeliveryState::Confirmed, 1);
        let summary = summary_of(counts, tocsin_router::AlertState::Done);
        let text = render(&summary, &[]);
        let all = text
            .lines()
            .find(|l| l.starts_with("ALL"))
            .unwrap_or_else(|| panic!("no ALL row in {text}"));
        let cols: Vec<&str> = all.split_whitespace().collect();
        // town targets reached ack late escalated confirmed unreached
        assert_eq!(cols.get(3..7), Some(&["2", "1", "1", "1"][..]), "{all}");
        assert!(text.contains("late door-knock confirmations 1"), "{text}");
    }

    #[test]
    fn an_accepted_door_knock_is_shown_apart_from_a_confirmed_one() {
        let mut counts = Counts {
            targets: 2,
            escalated: 2,
            door_knocks_accepted: 1,
            ..Counts::default()
        };
        counts.by_state.insert(DeliveryState::Escalated, 2);
        let summary = summary_of(counts, tocsin_router::AlertState::Active);
        let escalated = |person: &str, state: TaskState| DeliveryView {
            person: PersonId::from(person),
            state: DeliveryState::Escalated,
            acked_at: None,
            ack_evidence: None,
            escalated_to: Some(PersonId::from("t1")),
            door_knock: Some(tocsin_router::DoorKnockView {
                assignee: PersonId::from("t1"),
                level: 0,
                state,
                accepted_by: (state == TaskState::Accepted).then(|| PersonId::from("t1")),
                accepted_at: (state == TaskState::Accepted).then_some(Timestamp(360_000)),
                visit_due: (state == TaskState::Accepted).then_some(Timestamp(2_160_000)),
            }),
            ..acked("")
        };
        let text = render(
            &summary,
            &[
                escalated("v1", TaskState::Accepted),
                escalated("v2", TaskState::Assigned),
            ],
        );
        assert!(
            text.contains("door knocks accepted, visit not yet confirmed 1"),
            "{text}"
        );
        let line = |p: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(p))
                .unwrap_or_else(|| panic!("no {p} in {text}"))
                .to_owned()
        };
        assert!(
            line("v1").contains("door-knock by t1, accepted by t1")
                && line("v1").contains("visit not yet confirmed"),
            "{text}"
        );
        assert!(line("v2").contains("door-knock by t1 (assigned)"), "{text}");
    }

    #[test]
    fn an_ack_from_the_app_has_its_own_column() {
        let mut counts = Counts {
            targets: 1,
            ..Counts::default()
        };
        counts.by_state.insert(DeliveryState::Acknowledged, 1);
        let summary = summary_of(counts, tocsin_router::AlertState::Done);
        let app = acked("app:syn-app-0001 via app-1: 1 K7XY (signed callback)");
        let text = render(&summary, &[app]);
        let section = text
            .split("acks by bearer")
            .nth(1)
            .unwrap_or_else(|| panic!("no acks by bearer in {text}"));
        let header: Vec<&str> = section
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let all: Vec<&str> = section
            .lines()
            .find(|l| l.starts_with("ALL"))
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| all.get(i))
        };
        assert_eq!(col("app"), Some(&"1"), "{section}");
        assert_eq!(col("sms"), Some(&"0"), "{section}");
        assert_eq!(col("other"), Some(&"0"), "{section}");
    }

    #[test]
    fn the_ack_bearer_is_read_with_or_without_the_drivers_evidence() {
        let devices = BTreeMap::from([
            (DeviceId::from("modem-0-voice"), Bearer::Voice),
            (DeviceId::from("modem-0"), Bearer::Sms),
        ]);
        let key = acked(
            "+8613800000001 via modem-0-voice: 1 — DTMF 1 (+QTONEDET: 49) in call-3 at +2.0 s",
        );
        assert_eq!(ack_bearer(&key, &devices), Some(Bearer::Voice));
        let sms = acked("+8613800000002 via modem-0: 1 K7XY");
        assert_eq!(ack_bearer(&sms, &devices), Some(Bearer::Sms));
        // A device no attempt went through: the card address says BeiDou.
        let card = acked("bd:0412345 via beidou-0: 收到1 — $BDTXR,1,0412345,2,,A4CAD5B5BD31*3A");
        assert_eq!(ack_bearer(&card, &devices), Some(Bearer::Beidou));
    }
}
