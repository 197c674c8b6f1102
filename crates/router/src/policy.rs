//! Grade policies: which bearers, how many attempts, whether an ack is required, when to
//! escalate. Defaults follow the grades table in the product brief; every grade can be
//! overridden per recipient role.
//!
//! "When nobody answers", by default:
//! - red: SMS, a voice call and the best off-grid bearer the person has (BeiDou, mesh,
//!   SBD) all go out at once, and are redialled twice within the 5 minutes (reminders);
//!   a missed deadline escalates at once — every bearer was already tried, and waiting
//!   would only delay the door knock;
//! - orange: SMS and a voice call; a missed 15-minute deadline first tries the next
//!   bearer the person has (BeiDou, mesh, SBD, app — `fallback`, in order) and gives
//!   them `silence_wait_s` (5 minutes) more on it (`silence_fallbacks`: one bearer), and
//!   only then escalates; a person with no further bearer is escalated at the deadline;
//! - yellow: SMS or app, one reminder, then the record closes unreached (no escalation);
//! - blue: no ack.
//!
//! A door-knock task (red and orange) escalates one level further when nobody answers it
//! within `door_knock_deadline_s` (15 minutes). Once its assignee accepts it (key 1 in the
//! task's call, a bare 收到), that clock stops and the visit window starts:
//! `door_knock_visit_s` (30 minutes) to confirm the visit with the task's code, after
//! which the task goes one level further too.
//!
//! Independently of silence, a bearer that fails for good (a permanent error, every retry
//! spent) opens the next fallback bearer at once, whatever the grade.
//!
//! In the daemon's TOML a grade table, when given, must be complete (lists and `roles`
//! may be left out); a missing grade table keeps its default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tocsin_core::{Bearer, Grade, Role};

/// The policy of every grade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Blue (IV): SMS or app, no ack required.
    #[serde(default = "GradePolicy::default_blue")]
    pub blue: GradePolicy,
    /// Yellow (III): SMS or app, ack within 30 min, one reminder, no escalation.
    #[serde(default = "GradePolicy::default_yellow")]
    pub yellow: GradePolicy,
    /// Orange (II): SMS + voice, ack within 15 min; silence tries the next bearer for 5 min
    /// more, then escalates.
    #[serde(default = "GradePolicy::default_orange")]
    pub orange: GradePolicy,
    /// Red (I): SMS + voice + the best off-grid bearer, ack within 5 min, 3 dials, escalate.
    #[serde(default = "GradePolicy::default_red")]
    pub red: GradePolicy,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            blue: GradePolicy::default_blue(),
            yellow: GradePolicy::default_yellow(),
            orange: GradePolicy::default_orange(),
            red: GradePolicy::default_red(),
        }
    }
}

/// What to do for one grade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradePolicy {
    /// Bearers used in parallel on the first round (each where the person has an address
    /// and the gateway a device).
    #[serde(default)]
    pub parallel: Vec<Bearer>,
    /// Also on the first round: the first of these the person has an address and the
    /// gateway a device for (the "best off-grid bearer"; for yellow/blue: "SMS or app").
    #[serde(default)]
    pub best_of: Vec<Bearer>,
    /// Bearers opened one at a time when a first-round bearer fails for good.
    #[serde(default)]
    pub fallback: Vec<Bearer>,
    /// Attempts per bearer, the first one included (failure retries and reminders count).
    pub attempts_per_bearer: u32,
    /// Wait after a retryable failure before trying the same bearer again, in seconds.
    pub retry_backoff_s: u64,
    /// Whether the person must acknowledge.
    pub ack_required: bool,
    /// Ack deadline in seconds; for records that need no ack, how long to wait for a
    /// delivery report before the record is closed as unreached.
    pub ack_deadline_s: u64,
    /// Resends on every bearer while no ack has come, spread evenly within the deadline.
    pub reminders: u32,
    /// Whether a missed deadline escalates to the supervisor with a door-knock task.
    pub escalate: bool,
    /// Deadline of a door-knock task before it goes one further up the chain, in seconds.
    pub door_knock_deadline_s: u64,
    /// Once the assignee accepted a door-knock task (key 1 in the task's call, a bare
    /// 收到), how long they have to confirm the visit with the task's code before the task
    /// goes one further up the chain, in seconds (30 minutes by default: a walk to a
    /// mountain hamlet). Accepting stops `door_knock_deadline_s`.
    #[serde(default = "default_door_knock_visit_s")]
    pub door_knock_visit_s: u64,
    /// When nobody answers by the ack deadline: how many `fallback` bearers (the next one
    /// the person has an address and the gateway a device for, one after another) are
    /// tried before the record escalates (or closes unreached), each with
    /// `silence_wait_s` more to answer. 0: act at the deadline. An ack during the wait
    /// still counts as late.
    #[serde(default)]
    pub silence_fallbacks: u32,
    /// How long each silence fallback waits for an answer, in seconds.
    #[serde(default = "default_silence_wait_s")]
    pub silence_wait_s: u64,
    /// Per-role overrides (role name → fields to change).
    #[serde(default)]
    pub roles: BTreeMap<Role, RoleOverride>,
    /// Whether the loudspeakers in the area announce the alert. Absent: yes for red and
    /// orange, no for yellow and blue (see [`Policies::speakers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speakers: Option<bool>,
    /// How long after a programme starts (or is handed to the driver, while it waits
    /// behind a higher grade) a speaker without a receiver report is closed as "no
    /// evidence", in seconds: the programme's length plus a grace. Absent:
    /// [`DEFAULT_SPEAKER_WINDOW_S`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_window_s: Option<u64>,
}

/// Default [`GradePolicy::silence_wait_s`]: five minutes on the next bearer (a BeiDou card
/// sends once a minute; a mesh message takes seconds) before escalating.
pub const DEFAULT_SILENCE_WAIT_S: u64 = 300;

fn default_silence_wait_s() -> u64 {
    DEFAULT_SILENCE_WAIT_S
}

/// Default [`GradePolicy::door_knock_visit_s`]: thirty minutes from accepting a door-knock
/// task to confirming the visit.
pub const DEFAULT_DOOR_KNOCK_VISIT_S: u64 = 1800;

fn default_door_knock_visit_s() -> u64 {
    DEFAULT_DOOR_KNOCK_VISIT_S
}

/// Default [`GradePolicy::speaker_window_s`]: a siren and the spoken warning three times
/// with pauses last about two minutes; the rest is grace for late receiver reports.
pub const DEFAULT_SPEAKER_WINDOW_S: u64 = 300;

/// Fields of a [`GradePolicy`] that one role changes; absent fields keep the grade's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOverride {
    /// Replaces `parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Vec<Bearer>>,
    /// Replaces `best_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<Vec<Bearer>>,
    /// Replaces `fallback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Vec<Bearer>>,
    /// Replaces `attempts_per_bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_per_bearer: Option<u32>,
    /// Replaces `ack_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_required: Option<bool>,
    /// Replaces `ack_deadline_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_deadline_s: Option<u64>,
    /// Replaces `reminders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<u32>,
    /// Replaces `escalate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate: Option<bool>,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `attempts_per_bearer` must be at least 1.
    #[error("policies.{grade}: attempts_per_bearer must be at least 1")]
    NoAttempts {
        /// The grade (with `.roles.<role>` when an override is at fault).
        grade: String,
    },
    /// A deadline of zero would escalate or close every record at once.
    #[error("policies.{grade}: ack_deadline_s and door_knock_deadline_s must be greater than 0")]
    ZeroDeadline {
        /// The grade (with `.roles.<role>` when an override is at fault).
        grade: String,
    },
}

/// Residents are reached but need not answer and are never escalated.
fn resident_roles() -> BTreeMap<Role, RoleOverride> {
    let mut roles = BTreeMap::new();
    roles.insert(
        Role::Resident,
        RoleOverride {
            ack_required: Some(false),
            escalate: Some(false),
            ..RoleOverride::default()
        },
    );
    roles
}

impl GradePolicy {
    /// Default red: SMS + voice + best off-grid bearer, 3 dials in 5 min, escalate.
    pub fn default_red() -> Self {
        GradePolicy {
            parallel: vec![Bearer::Sms, Bearer::Voice],
            best_of: vec![Bearer::Beidou, Bearer::Mesh, Bearer::Sbd],
            fallback: vec![Bearer::App],
            attempts_per_bearer: 3,
            retry_backoff_s: 30,
            ack_required: true,
            ack_deadline_s: 300,
            reminders: 2,
            escalate: true,
            door_knock_deadline_s: 900,
            door_knock_visit_s: DEFAULT_DOOR_KNOCK_VISIT_S,
            silence_fallbacks: 0,
            silence_wait_s: DEFAULT_SILENCE_WAIT_S,
            roles: resident_roles(),
            speakers: Some(true),
            speaker_window_s: None,
        }
    }

    /// Default orange: SMS + voice, 15 min, the next bearer on failure, escalate.
    pub fn default_orange() -> Self {
        GradePolicy {
            parallel: vec![Bearer::Sms, Bearer::Voice],
            best_of: vec![],
            fallback: vec![Bearer::Beidou, Bearer::Mesh, Bearer::Sbd, Bearer::App],
            attempts_per_bearer: 2,
            retry_backoff_s: 60,
            ack_required: true,
            ack_deadline_s: 900,
            reminders: 0,
            escalate: true,
            door_knock_deadline_s: 900,
            door_knock_visit_s: DEFAULT_DOOR_KNOCK_VISIT_S,
            silence_fallbacks: 1,
            silence_wait_s: DEFAULT_SILENCE_WAIT_S,
            roles: resident_roles(),
            speakers: Some(true),
            speaker_window_s: None,
        }
    }

    /// Default yellow: SMS or app, 30 min, one reminder, no escalation.
    pub fn default_yellow() -> Self {
        GradePolicy {
            parallel: vec![],
            best_of: vec![Bearer::Sms, Bearer::App],
            fallback: vec![],
            attempts_per_bearer: 2,
            retry_backoff_s: 60,
            ack_required: true,
            ack_deadline_s: 1800,
            reminders: 1,
            escalate: false,
            door_knock_deadline_s: 900,
            door_knock_visit_s: DEFAULT_DOOR_KNOCK_VISIT_S,
            silence_fallbacks: 0,
            silence_wait_s: DEFAULT_SILENCE_WAIT_S,
            roles: resident_roles(),
            speakers: Some(false),
            speaker_window_s: None,
        }
    }

    /// Default blue: SMS or app, no ack; final when delivered or attempts are exhausted.
    pub fn default_blue() -> Self {
        GradePolicy {
            parallel: vec![],
            best_of: vec![Bearer::Sms, Bearer::App],
            fallback: vec![],
            attempts_per_bearer: 2,
            retry_backoff_s: 60,
            ack_required: false,
            ack_deadline_s: 1800,
            reminders: 0,
            escalate: false,
            door_knock_deadline_s: 900,
            door_knock_visit_s: DEFAULT_DOOR_KNOCK_VISIT_S,
            silence_fallbacks: 0,
            silence_wait_s: DEFAULT_SILENCE_WAIT_S,
            roles: resident_roles(),
            speakers: Some(false),
            speaker_window_s: None,
        }
    }
}

/// A grade policy with one role's overrides applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPolicy {
    /// See [`GradePolicy::parallel`].
    pub parallel: Vec<Bearer>,
    /// See [`GradePolicy::best_of`].
    pub best_of: Vec<Bearer>,
    /// See [`GradePolicy::fallback`].
    pub fallback: Vec<Bearer>,
    /// See [`GradePolicy::attempts_per_bearer`].
    pub attempts_per_bearer: u32,
    /// See [`GradePolicy::retry_backoff_s`].
    pub retry_backoff_s: u64,
    /// See [`GradePolicy::ack_required`].
    pub ack_required: bool,
    /// See [`GradePolicy::ack_deadline_s`].
    pub ack_deadline_s: u64,
    /// See [`GradePolicy::reminders`].
    pub reminders: u32,
    /// See [`GradePolicy::escalate`]; never true when no ack is required.
    pub escalate: bool,
    /// See [`GradePolicy::door_knock_deadline_s`].
    pub door_knock_deadline_s: u64,
    /// See [`GradePolicy::door_knock_visit_s`] (at least 1).
    pub door_knock_visit_s: u64,
    /// See [`GradePolicy::silence_fallbacks`]; 0 when no ack is required.
    pub silence_fallbacks: u32,
    /// See [`GradePolicy::silence_wait_s`] (at least 1).
    pub silence_wait_s: u64,
}

impl Policies {
    /// The policy of one grade.
    pub fn grade(&self, grade: Grade) -> &GradePolicy {
        match grade {
            Grade::Blue => &self.blue,
            Grade::Yellow => &self.yellow,
            Grade::Orange => &self.orange,
            Grade::Red => &self.red,
        }
    }

    /// Whether the loudspeakers in the area announce an alert of this grade: the grade's
    /// `speakers`, else yes for red ("loudspeakers in the area") and orange ("loudspeakers
    /// optional": on unless turned off), no for yellow and blue.
    pub fn speakers(&self, grade: Grade) -> bool {
        self.grade(grade)
            .speakers
            .unwrap_or(matches!(grade, Grade::Red | Grade::Orange))
    }

    /// The "no evidence" window of a speaker announcement of this grade, in milliseconds.
    pub fn speaker_window_ms(&self, grade: Grade) -> u64 {
        self.grade(grade)
            .speaker_window_s
            .unwrap_or(DEFAULT_SPEAKER_WINDOW_S)
            .max(1)
            .saturating_mul(1000)
    }

    /// The policy for one grade and role, overrides applied.
    pub fn resolve(&self, grade: Grade, role: Role) -> ResolvedPolicy {
        let g = self.grade(grade);
        let o = g.roles.get(&role).cloned().unwrap_or_default();
        let ack_required = o.ack_required.unwrap_or(g.ack_required);
        ResolvedPolicy {
            parallel: o.parallel.unwrap_or_else(|| g.parallel.clone()),
            best_of: o.best_of.unwrap_or_else(|| g.best_of.clone()),
            fallback: o.fallback.unwrap_or_else(|| g.fallback.clone()),
            // A zero would mean "never try"; nobody is silently dropped.
            attempts_per_bearer: o
                .attempts_per_bearer
                .unwrap_or(g.attempts_per_bearer)
                .max(1),
            retry_backoff_s: g.retry_backoff_s,
            ack_required,
            ack_deadline_s: o.ack_deadline_s.unwrap_or(g.ack_deadline_s).max(1),
            reminders: if ack_required {
                o.reminders.unwrap_or(g.reminders)
            } else {
                0
            },
            escalate: ack_required && o.escalate.unwrap_or(g.escalate),
            door_knock_deadline_s: g.door_knock_deadline_s.max(1),
            door_knock_visit_s: g.door_knock_visit_s.max(1),
            silence_fallbacks: if ack_required { g.silence_fallbacks } else { 0 },
            silence_wait_s: g.silence_wait_s.max(1),
        }
    }

    /// Checks every grade and override; the daemon calls this before starting.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for grade in Grade::ALL {
            let g = self.grade(grade);
            let name = grade.as_str().to_owned();
            if g.attempts_per_bearer == 0 {
                return Err(PolicyError::NoAttempts { grade: name });
            }
            if g.ack_deadline_s == 0 || g.door_knock_deadline_s == 0 {
                return Err(PolicyError::ZeroDeadline { grade: name });
            }
            for (role, o) in &g.roles {
                let at = format!("{name}.roles.{role}");
                if o.attempts_per_bearer == Some(0) {
                    return Err(PolicyError::NoAttempts { grade: at });
                }
                if o.ack_deadline_s == Some(0) {
                    return Err(PolicyError::ZeroDeadline { grade: at });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_grades_table() {
        let p = Policies::default();
        p.validate().unwrap();
        let red = p.resolve(Grade::Red, Role::VillageHead);
        assert_eq!(red.parallel, vec![Bearer::Sms, Bearer::Voice]);
        assert_eq!(red.ack_deadline_s, 300);
        assert_eq!(red.attempts_per_bearer, 3);
        assert!(red.escalate);
        // Orange tries one more bearer on silence; red has sent on every bearer already.
        let orange = p.resolve(Grade::Orange, Role::GridLead);
        assert_eq!((orange.silence_fallbacks, orange.silence_wait_s), (1, 300));
        assert_eq!(red.silence_fallbacks, 0);
        assert_eq!(
            p.resolve(Grade::Orange, Role::Resident).silence_fallbacks,
            0
        );
        // A grade table written before silence fallbacks reads as none.
        let mut old = serde_json::to_value(GradePolicy::default_orange()).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("silence_fallbacks");
        o.remove("silence_wait_s");
        let old: GradePolicy = serde_json::from_value(old).unwrap();
        assert_eq!((old.silence_fallbacks, old.silence_wait_s), (0, 300));
        let resident = p.resolve(Grade::Red, Role::Resident);
        assert!(!resident.ack_required && !resident.escalate);
        assert_eq!(resident.reminders, 0);
        let yellow = p.resolve(Grade::Yellow, Role::GridLead);
        assert!(yellow.ack_required && !yellow.escalate);
        assert_eq!((yellow.ack_deadline_s, yellow.reminders), (1800, 1));
        assert!(!p.resolve(Grade::Blue, Role::GridLead).ack_required);
        let speak: Vec<bool> = Grade::ALL.iter().map(|g| p.speakers(*g)).collect();
        assert_eq!(
            speak,
            vec![false, false, true, true],
            "blue, yellow, orange, red"
        );
        assert_eq!(p.speaker_window_ms(Grade::Red), 300_000);
        // A grade table from a config written before speakers keeps the grade's default.
        let mut red = serde_json::to_value(GradePolicy::default_red()).unwrap();
        red.as_object_mut().unwrap().remove("speakers");
        let mut v = serde_json::to_value(&p).unwrap();
        v["red"] = red;
        v["orange"]["speakers"] = serde_json::json!(false);
        let q: Policies = serde_json::from_value(v).unwrap();
        assert!(q.speakers(Grade::Red) && !q.speakers(Grade::Orange));
    }

    #[test]
    fn policies_round_trip_and_refuse_unknown_keys() {
        let p = Policies::default();
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policies>(&j).unwrap(), p);
        // A missing grade keeps its default.
        let partial: Policies = serde_json::from_str("{}").unwrap();
        assert_eq!(partial, p);
        let err = serde_json::from_str::<Policies>(r#"{"purple": {}}"#).unwrap_err();
        assert!(err.to_string().contains("purple"), "{err}");
        let mut bad = serde_json::to_value(&p).unwrap();
        bad["red"]["roles"]["grid_lead"] = serde_json::json!({"ack_deadline": 5});
        let err = serde_json::from_value::<Policies>(bad).unwrap_err();
        assert!(err.to_string().contains("ack_deadline"), "{err}");
    }

    #[test]
    fn overrides_apply_per_role_and_are_validated() {
        let mut p = Policies::default();
        p.orange.roles.insert(
            Role::HazardWarden,
            RoleOverride {
                ack_deadline_s: Some(120),
                parallel: Some(vec![Bearer::Voice]),
                ..Default::default()
            },
        );
        let w = p.resolve(Grade::Orange, Role::HazardWarden);
        assert_eq!(
            (w.ack_deadline_s, w.parallel.clone()),
            (120, vec![Bearer::Voice])
        );
        assert_eq!(p.resolve(Grade::Orange, Role::GridLead).ack_deadline_s, 900);
        p.red.roles.insert(
            Role::FieldCrew,
            RoleOverride {
                attempts_per_bearer: Some(0),
                ..Default::default()
            },
        );
        assert_eq!(
            p.validate(),
            Err(PolicyError::NoAttempts {
                grade: "red.roles.field_crew".into()
            })
        );
    }
}
