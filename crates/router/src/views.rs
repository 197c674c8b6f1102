//! Read-only views of the router's state for the API and reports.

use crate::plan::AlertPlan;
use crate::router::{Router, interval_us};
use crate::state::{AlertEntry, Delivery};
use crate::view::{
    AlertSummary, AttemptView, BearerLoad, Counts, DeliveryState, DeliveryView, DoorKnockView,
    Preview, TaskState,
};
use std::collections::{BTreeMap, BTreeSet};
use tocsin_channel::{Capabilities, Health};
use tocsin_core::{AlertId, Bearer, DeviceId};

const STATES: [DeliveryState; 9] = [
    DeliveryState::Planned,
    DeliveryState::Attempting,
    DeliveryState::Reached,
    DeliveryState::Acknowledged,
    DeliveryState::Escalated,
    DeliveryState::Confirmed,
    DeliveryState::Unreached,
    DeliveryState::Cancelled,
    DeliveryState::Withdrawn,
];

fn empty_counts() -> Counts {
    Counts {
        by_state: STATES.iter().map(|s| (*s, 0)).collect(),
        ..Counts::default()
    }
}

fn count(c: &mut Counts, d: &Delivery) {
    c.targets += 1;
    *c.by_state.entry(d.state).or_default() += 1;
    c.reached += u32::from(d.reached);
    // `late` is a fact of the ack that closed the record: the person's own (acknowledged)
    // or a door knock's (confirmed). Each goes in its own count, so that "acknowledged in
    // time = acknowledged − late" holds.
    c.late += u32::from(d.late && d.state == DeliveryState::Acknowledged);
    c.late_door_knocks += u32::from(d.late && d.state == DeliveryState::Confirmed);
    c.escalated += u32::from(d.escalated);
    c.door_knocks_accepted +=
        u32::from(d.state == DeliveryState::Escalated && d.task_accepted.is_some());
    c.attempts += u32::try_from(d.attempts.len()).unwrap_or(u32::MAX);
}

/// The record's current door-knock task, as operators see it.
fn door_knock(d: &Delivery) -> Option<DoorKnockView> {
    let task = d.chain().last()?;
    let state = if d.state == DeliveryState::Confirmed {
        TaskState::Confirmed
    } else if d.task_accepted.is_some() {
        TaskState::Accepted
    } else {
        TaskState::Assigned
    };
    let (accepted_at, accepted_by) = match &d.task_accepted {
        Some((at, by)) => (Some(*at), Some(by.clone())),
        None => (None, None),
    };
    let visit_due = d
        .timers
        .iter()
        .find(|(_, k)| matches!(k, crate::state::TimerKind::Visit(_)))
        .map(|(at, _)| *at);
    Some(DoorKnockView {
        assignee: task.assignee.clone(),
        level: task.level,
        state,
        accepted_by,
        accepted_at,
        visit_due,
    })
}

impl Router {
    fn summarize(&self, entry: &AlertEntry) -> AlertSummary {
        let mut counts = empty_counts();
        let mut by_town: BTreeMap<String, Counts> = BTreeMap::new();
        for d in &entry.deliveries {
            count(&mut counts, d);
            count(
                by_town.entry(d.town.clone()).or_insert_with(empty_counts),
                d,
            );
        }
        counts.rejected_replies = entry.rejected;
        let speakers = self
            .state
            .alert_ix
            .get(&entry.plan.alert.id)
            .map(|&a| self.speaker_counts(a))
            .unwrap_or_default();
        AlertSummary {
            alert: entry.plan.alert.clone(),
            state: entry.state,
            counts,
            by_town,
            finished_at: entry.finished_at,
            speakers,
        }
    }

    /// One alert with its counts, or `None` if unknown.
    pub fn summary(&self, alert: &AlertId) -> Option<AlertSummary> {
        let a = *self.state.alert_ix.get(alert)?;
        Some(self.summarize(self.state.alert(a)))
    }

    /// The plan an alert runs under now (as issued or last updated), or `None` if unknown.
    /// An update that changes nothing but the alert's references re-uses it whole, so it
    /// re-plans nobody.
    pub fn plan(&self, alert: &AlertId) -> Option<&AlertPlan> {
        let a = *self.state.alert_ix.get(alert)?;
        Some(&self.state.alert(a).plan)
    }

    /// Every alert, newest first.
    pub fn alerts(&self) -> Vec<AlertSummary> {
        let mut order: Vec<usize> = (0..self.state.alerts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse((self.state.alerts[i].plan.alert.accepted_at, i)));
        order
            .into_iter()
            .map(|i| self.summarize(&self.state.alerts[i]))
            .collect()
    }

    /// The records of one alert (optionally only those in one state), or `None` if unknown.
    pub fn deliveries(
        &self,
        alert: &AlertId,
        filter: Option<DeliveryState>,
    ) -> Option<Vec<DeliveryView>> {
        let a = *self.state.alert_ix.get(alert)?;
        let entry = self.state.alert(a);
        Some(
            entry
                .deliveries
                .iter()
                .filter(|d| filter.is_none_or(|f| d.state == f))
                .map(|d| DeliveryView {
                    person: d.person.clone(),
                    name: d.name.clone(),
                    role: d.role,
                    town: d.town.clone(),
                    state: d.state,
                    code: d.plan.code,
                    attempts: d
                        .attempts
                        .iter()
                        .filter_map(|id| {
                            let e = self.state.attempts.get(id)?;
                            Some(AttemptView {
                                attempt: *id,
                                bearer: e.bearer,
                                device: e.device.clone(),
                                to: e.to.clone(),
                                started_at: e.started_at,
                                outcome: e.outcome.clone(),
                                reference: e.reference.clone(),
                                possible_duplicate: e.possible_duplicate,
                            })
                        })
                        .collect(),
                    acked_at: d.acked_at,
                    ack_evidence: d.ack_evidence.clone(),
                    late: d.late,
                    escalated_to: d.tasks.last().map(|t| t.assignee.clone()),
                    since: d.since,
                    door_knock: door_knock(d),
                })
                .collect(),
        )
    }

    /// Every configured device with its capabilities and latest health. A device whose
    /// driver has not reported yet shows as up (the router sends to it).
    pub fn device_health(&self) -> Vec<(DeviceId, Capabilities, Health)> {
        self.config
            .devices
            .iter()
            .map(|d| {
                let health = self.health.get(&d.id).cloned().unwrap_or_else(|| Health {
                    up: self.state.is_up(&d.id),
                    ..Health::default()
                });
                (d.id.clone(), d.caps.clone(), health)
            })
            .collect()
    }

    /// What `plan` would do if issued now: people, responsible persons, first attempts per
    /// bearer and the seconds the devices' send budgets need for them (from idle devices,
    /// not counting other alerts' queued sends), and the loudspeakers in the area and
    /// whether they would sound. The population is left unknown: the router has no
    /// directory, so the caller that resolved the plan sets it.
    pub fn preview(&self, plan: &AlertPlan) -> Preview {
        let contacts: BTreeMap<_, _> = plan.contacts.iter().map(|c| (&c.person, c)).collect();
        let mut seen = BTreeSet::new();
        let (mut people, mut responsible, mut unreachable) = (0u32, 0u32, 0u32);
        let mut load: BTreeMap<Bearer, u32> = BTreeMap::new();
        for t in &plan.targets {
            if !seen.insert(&t.person) {
                continue;
            }
            people += 1;
            let contact = contacts.get(&t.person).copied();
            let role = contact.map_or(tocsin_core::Role::Resident, |c| c.role);
            responsible += u32::from(role.is_responsible());
            let pol = self
                .config
                .policies
                .resolve_for(plan.alert.grade, &plan.alert.kind, role);
            let (routes, _) = self.routes(contact, &pol);
            if routes.is_empty() {
                unreachable += 1;
            }
            for r in routes {
                *load.entry(r.bearer).or_default() += 1;
            }
        }
        let mut bearers = Vec::new();
        let mut all = 0.0f64;
        for (bearer, messages) in load {
            let intervals: Vec<i64> = self
                .config
                .devices
                .iter()
                .filter(|d| d.caps.bearer == bearer && self.state.is_up(&d.id))
                .map(|d| interval_us(d.caps.per_minute))
                .filter(|i| *i > 0)
                .collect();
            let seconds = seconds_for(messages, &intervals);
            all = all.max(seconds);
            bearers.push(BearerLoad {
                bearer,
                messages,
                devices: u32::try_from(intervals.len()).unwrap_or(u32::MAX),
                seconds,
            });
        }
        let speakers = plan
            .speakers
            .iter()
            .map(|s| &s.id)
            .collect::<BTreeSet<_>>()
            .len();
        Preview {
            people,
            responsible,
            bearers,
            unreachable,
            seconds_to_first_attempt_all: all,
            speakers: u32::try_from(speakers).unwrap_or(u32::MAX),
            speakers_sound: self
                .config
                .policies
                .speakers_for(plan.alert.grade, &plan.alert.kind),
            // The router holds no directory: whoever planned the alert fills these in.
            population: None,
            population_unknown_areas: 0,
        }
    }
}

/// When the last of `messages` sends starts on devices with these intervals, each sending
/// its first at 0 (token buckets of burst 1, idle): the smallest `t` with
/// `sum(floor(t / interval) + 1) >= messages`, found by bisection on whole microseconds.
fn seconds_for(messages: u32, intervals: &[i64]) -> f64 {
    if messages == 0 || intervals.is_empty() {
        return 0.0;
    }
    let need = i64::from(messages);
    let sent = |t: i64| intervals.iter().map(|i| t / i + 1).sum::<i64>();
    let (mut lo, mut hi) = (
        0i64,
        intervals
            .iter()
            .copied()
            .min()
            .unwrap_or(1)
            .saturating_mul(need),
    );
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if sent(mid) >= need {
            hi = mid
        } else {
            lo = mid + 1
        }
    }
    lo as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Contact, SpeakerTarget, Target, TargetReason};
    use crate::{Policies, RouterConfig};
    use tocsin_core::{
        AckKey, Address, Alert, AlertId, DeviceId, Grade, PersonId, PhoneNumber, Role, SpeakerId,
        Timestamp,
    };

    fn router() -> Router {
        Router::new(RouterConfig {
            policies: Policies::default(),
            ack_key: AckKey::new(b"preview-test".to_vec()),
            // No devices: the speaker and population counts do not depend on them (and
            // the preview must not need any to answer).
            devices: Vec::new(),
        })
    }

    /// Two people (a village head and a resident) and three speaker entries, one of them
    /// the same speaker twice.
    fn plan(grade: Grade) -> AlertPlan {
        let person = |id: &str, role, n: u32| Contact {
            person: PersonId::from(id),
            name: id.to_owned(),
            role,
            town: "大庄镇".into(),
            addresses: PhoneNumber::parse(&format!("+86138000{n:05}"), "86")
                .map(Address::Phone)
                .into_iter()
                .collect(),
            supervisor: None,
        };
        let speaker = |id: &str| SpeakerTarget {
            id: SpeakerId::from(id),
            name: format!("{id}广播"),
            town: "大庄镇".into(),
            device: DeviceId::from("spk-1"),
            address: Address::Speaker(id.into()),
        };
        AlertPlan {
            alert: Alert {
                id: AlertId::from("preview"),
                grade,
                kind: "flood".into(),
                headline: "山洪预警".into(),
                text: "请立即组织转移".into(),
                area: vec![],
                exercise: false,
                issuer: "district-ops".into(),
                accepted_at: Timestamp::ZERO,
                reference: None,
            },
            targets: ["h1", "r1"]
                .iter()
                .map(|p| Target {
                    person: PersonId::from(*p),
                    reason: TargetReason::Located,
                })
                .collect(),
            contacts: vec![
                person("h1", Role::VillageHead, 1),
                person("r1", Role::Resident, 2),
            ],
            areas: vec![],
            speakers: vec![speaker("s1"), speaker("s2"), speaker("s1")],
            kits: vec![],
            uplink: None,
        }
    }

    #[test]
    fn preview_counts_speakers_apart_from_people_and_leaves_population_unknown() {
        let r = router();
        let red = r.preview(&plan(Grade::Red));
        assert_eq!((red.people, red.responsible), (2, 1));
        assert_eq!(red.speakers, 2, "each speaker once");
        assert!(red.speakers_sound);
        assert_eq!(red.population, None);
        assert_eq!(red.population_unknown_areas, 0);
        // Yellow: the speakers are in the area but the grade's policy keeps them silent.
        let yellow = r.preview(&plan(Grade::Yellow));
        assert_eq!((yellow.people, yellow.speakers), (2, 2));
        assert!(!yellow.speakers_sound);
        let mut none = plan(Grade::Orange);
        none.speakers.clear();
        assert_eq!(r.preview(&none).speakers, 0);
        // Older previews without the new fields still parse, as 0 speakers and unknown
        // population.
        let old: Preview = serde_json::from_str(
            r#"{"people":3,"responsible":1,"bearers":[],"unreachable":0,"seconds_to_first_attempt_all":0.0}"#,
        )
        .unwrap();
        assert_eq!((old.speakers, old.population), (0, None));
    }

    #[test]
    fn seconds_follow_the_token_buckets() {
        // Two devices at 6/min: 100 sends, the last at floor(99/2) * 10 s.
        assert_eq!(seconds_for(100, &[10_000_000, 10_000_000]), 490.0);
        assert_eq!(seconds_for(1, &[10_000_000]), 0.0);
        assert_eq!(seconds_for(0, &[10_000_000]), 0.0);
        assert_eq!(seconds_for(5, &[]), 0.0);
        // 10/min and 5/min: sends at 0,0,6,12,12,18,24,24 → the 8th at 24 s.
        assert_eq!(seconds_for(8, &[6_000_000, 12_000_000]), 24.0);
    }
}
