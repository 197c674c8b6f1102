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
//!
//! Per alert kind: `[policies.kinds.<kind>.<grade>]` changes a grade's policy for alerts
//! of that kind only (e.g. `reservoir`, `flash_flood`, `checkin`), every key optional, with
//! role overrides inside like a grade's (`[policies.kinds.<kind>.<grade>.roles.<role>]`).
//! The kind is matched exactly as the alert carries it (the API's `kind`, a CAP alert's
//! `event`); an alert of a kind without a table runs under its grade's policy. Each key
//! is taken from the first of: the kind's role override, the kind's grade table, the
//! grade's role override, the grade. So a kind that sets `ack_required = true` also asks
//! residents for an answer unless it gives `roles.resident` its own `ack_required = false`.

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
    /// Per-kind overrides (alert kind → grade → keys to change); see the module docs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, KindPolicies>,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            blue: GradePolicy::default_blue(),
            yellow: GradePolicy::default_yellow(),
            orange: GradePolicy::default_orange(),
            red: GradePolicy::default_red(),
            kinds: BTreeMap::new(),
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

/// The overrides of one alert kind, by grade; a grade left out keeps the grade's policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindPolicies {
    /// Changes to the blue policy for this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue: Option<KindOverride>,
    /// Changes to the yellow policy for this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yellow: Option<KindOverride>,
    /// Changes to the orange policy for this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orange: Option<KindOverride>,
    /// Changes to the red policy for this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub red: Option<KindOverride>,
}

impl KindPolicies {
    /// This kind's changes to one grade, if any.
    pub fn grade(&self, grade: Grade) -> Option<&KindOverride> {
        match grade {
            Grade::Blue => self.blue.as_ref(),
            Grade::Yellow => self.yellow.as_ref(),
            Grade::Orange => self.orange.as_ref(),
            Grade::Red => self.red.as_ref(),
        }
    }
}

/// Fields of a [`GradePolicy`] that one alert kind changes for one grade; absent fields
/// keep the grade's value (or its role override's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindOverride {
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
    /// Replaces `retry_backoff_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_s: Option<u64>,
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
    /// Replaces `door_knock_deadline_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door_knock_deadline_s: Option<u64>,
    /// Replaces `door_knock_visit_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door_knock_visit_s: Option<u64>,
    /// Replaces `silence_fallbacks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_fallbacks: Option<u32>,
    /// Replaces `silence_wait_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_wait_s: Option<u64>,
    /// Replaces `speakers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speakers: Option<bool>,
    /// Replaces `speaker_window_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_window_s: Option<u64>,
    /// Per-role overrides for this kind and grade; they win over the grade's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<Role, RoleOverride>,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `attempts_per_bearer` must be at least 1.
    #[error("policies.{grade}: attempts_per_bearer must be at least 1")]
    NoAttempts {
        /// The grade (with `.roles.<role>` when an override is at fault; `kinds.<kind>.`
        /// before it when a kind's table is).
        grade: String,
    },
    /// A deadline of zero would escalate or close every record at once.
    #[error("policies.{grade}: ack_deadline_s and door_knock_deadline_s must be greater than 0")]
    ZeroDeadline {
        /// The grade (with `.roles.<role>` when an override is at fault; `kinds.<kind>.`
        /// before it when a kind's table is).
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

    /// This kind's changes to one grade, if the kind has a table for it.
    pub fn kind(&self, grade: Grade, kind: &str) -> Option<&KindOverride> {
        self.kinds.get(kind).and_then(|k| k.grade(grade))
    }

    /// Whether the loudspeakers in the area announce an alert of this grade: the grade's
    /// `speakers`, else yes for red ("loudspeakers in the area") and orange ("loudspeakers
    /// optional": on unless turned off), no for yellow and blue. Ignores kind overrides;
    /// see [`Policies::speakers_for`].
    pub fn speakers(&self, grade: Grade) -> bool {
        self.speakers_with(grade, None)
    }

    /// Whether the loudspeakers announce an alert of this grade and kind: the kind's
    /// `speakers` for the grade, else as [`Policies::speakers`].
    pub fn speakers_for(&self, grade: Grade, kind: &str) -> bool {
        self.speakers_with(grade, self.kind(grade, kind))
    }

    fn speakers_with(&self, grade: Grade, k: Option<&KindOverride>) -> bool {
        k.and_then(|k| k.speakers)
            .or(self.grade(grade).speakers)
            .unwrap_or(matches!(grade, Grade::Red | Grade::Orange))
    }

    /// The "no evidence" window of a speaker announcement of this grade, in milliseconds.
    /// Ignores kind overrides; see [`Policies::speaker_window_ms_for`].
    pub fn speaker_window_ms(&self, grade: Grade) -> u64 {
        self.speaker_window_ms_with(grade, None)
    }

    /// The "no evidence" window of a speaker announcement of this grade and kind, in
    /// milliseconds.
    pub fn speaker_window_ms_for(&self, grade: Grade, kind: &str) -> u64 {
        self.speaker_window_ms_with(grade, self.kind(grade, kind))
    }

    fn speaker_window_ms_with(&self, grade: Grade, k: Option<&KindOverride>) -> u64 {
        k.and_then(|k| k.speaker_window_s)
            .or(self.grade(grade).speaker_window_s)
            .unwrap_or(DEFAULT_SPEAKER_WINDOW_S)
            .max(1)
            .saturating_mul(1000)
    }

    /// The policy for one grade and role, the grade's role overrides applied, no kind's.
    /// The router plans with [`Policies::resolve_for`].
    pub fn resolve(&self, grade: Grade, role: Role) -> ResolvedPolicy {
        self.resolve_with(grade, None, role)
    }

    /// The policy for an alert of this grade and kind, sent to one role: each key from the
    /// kind's role override, else the kind's grade table, else the grade's role override,
    /// else the grade. A kind without a table for the grade gets [`Policies::resolve`].
    pub fn resolve_for(&self, grade: Grade, kind: &str, role: Role) -> ResolvedPolicy {
        self.resolve_with(grade, self.kind(grade, kind), role)
    }

    fn resolve_with(&self, grade: Grade, k: Option<&KindOverride>, role: Role) -> ResolvedPolicy {
        let g = self.grade(grade);
        let ro = g.roles.get(&role);
        let kro = k.and_then(|k| k.roles.get(&role));
        // A key any of the four layers may set.
        macro_rules! by_role {
            ($f:ident) => {
                kro.and_then(|o| o.$f.clone())
                    .or_else(|| k.and_then(|k| k.$f.clone()))
                    .or_else(|| ro.and_then(|o| o.$f.clone()))
                    .unwrap_or_else(|| g.$f.clone())
            };
        }
        // A key roles do not override.
        macro_rules! by_kind {
            ($f:ident) => {
                k.and_then(|k| k.$f).unwrap_or(g.$f)
            };
        }
        let ack_required = by_role!(ack_required);
        ResolvedPolicy {
            parallel: by_role!(parallel),
            best_of: by_role!(best_of),
            fallback: by_role!(fallback),
            // A zero would mean "never try"; nobody is silently dropped.
            attempts_per_bearer: by_role!(attempts_per_bearer).max(1),
            retry_backoff_s: by_kind!(retry_backoff_s),
            ack_required,
            ack_deadline_s: by_role!(ack_deadline_s).max(1),
            reminders: if ack_required { by_role!(reminders) } else { 0 },
            escalate: ack_required && by_role!(escalate),
            door_knock_deadline_s: by_kind!(door_knock_deadline_s).max(1),
            door_knock_visit_s: by_kind!(door_knock_visit_s).max(1),
            silence_fallbacks: if ack_required {
                by_kind!(silence_fallbacks)
            } else {
                0
            },
            silence_wait_s: by_kind!(silence_wait_s).max(1),
        }
    }

    /// Checks every grade, kind and override; the daemon calls this before starting.
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
            check_roles(&name, &g.roles)?;
        }
        for (kind, kp) in &self.kinds {
            for grade in Grade::ALL {
                let Some(k) = kp.grade(grade) else {
                    continue;
                };
                let name = format!("kinds.{kind}.{}", grade.as_str());
                if k.attempts_per_bearer == Some(0) {
                    return Err(PolicyError::NoAttempts { grade: name });
                }
                if k.ack_deadline_s == Some(0) || k.door_knock_deadline_s == Some(0) {
                    return Err(PolicyError::ZeroDeadline { grade: name });
                }
                check_roles(&name, &k.roles)?;
            }
        }
        Ok(())
    }
}

/// Checks the role overrides of a grade (or of a kind's grade) named `at`.
fn check_roles(at: &str, roles: &BTreeMap<Role, RoleOverride>) -> Result<(), PolicyError> {
    for (role, o) in roles {
        let at = format!("{at}.roles.{role}");
        if o.attempts_per_bearer == Some(0) {
            return Err(PolicyError::NoAttempts { grade: at });
        }
        if o.ack_deadline_s == Some(0) {
            return Err(PolicyError::ZeroDeadline { grade: at });
        }
    }
    Ok(())
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

    /// A district's policies as the daemon's `[policies]` table holds them.
    fn from_toml(text: &str) -> Result<Policies, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn kind_overrides_resolve_in_order() {
        let mut p = from_toml(
            r#"
            [kinds.reservoir.red]
            ack_deadline_s = 120
            retry_backoff_s = 10
            speakers = false

            [kinds.reservoir.red.roles.grid_lead]
            ack_deadline_s = 90

            [kinds.checkin.orange]
            parallel = ["mesh", "sms"]
            ack_required = true
            "#,
        )
        .unwrap();
        // (A grade table in TOML must be complete; the grade's role override is set here.)
        p.red.roles.insert(
            Role::GridLead,
            RoleOverride {
                ack_deadline_s: Some(240),
                reminders: Some(0),
                ..Default::default()
            },
        );
        p.validate().unwrap();
        // kind + grade + role beats everything.
        let lead = p.resolve_for(Grade::Red, "reservoir", Role::GridLead);
        assert_eq!(lead.ack_deadline_s, 90);
        // kind + grade beats grade + role (reminders are not set by the kind: the grade's
        // role override still holds).
        assert_eq!((lead.reminders, lead.retry_backoff_s), (0, 10));
        let head = p.resolve_for(Grade::Red, "reservoir", Role::VillageHead);
        assert_eq!((head.ack_deadline_s, head.reminders), (120, 2));
        assert_eq!(head.parallel, vec![Bearer::Sms, Bearer::Voice]);
        // grade + role beats grade, for a kind without a table and without a kind.
        for kind in ["flash_flood", "Reservoir", ""] {
            let lead = p.resolve_for(Grade::Red, kind, Role::GridLead);
            assert_eq!(
                (lead.ack_deadline_s, lead.retry_backoff_s),
                (240, 30),
                "{kind}"
            );
            assert_eq!(lead, p.resolve(Grade::Red, Role::GridLead));
        }
        // The kind's table for red says nothing of orange.
        assert_eq!(
            p.resolve_for(Grade::Orange, "reservoir", Role::GridLead),
            p.resolve(Grade::Orange, Role::GridLead)
        );
        // A kind's ack_required beats the residents' override of the grade.
        let resident = p.resolve_for(Grade::Orange, "checkin", Role::Resident);
        // ... while the residents' escalate = false, which the kind leaves alone, holds.
        assert!(resident.ack_required && !resident.escalate);
        assert_eq!(resident.parallel, vec![Bearer::Mesh, Bearer::Sms]);
        assert_eq!(resident.silence_fallbacks, 1);
        // Speakers: the kind turns red's off, other kinds keep them.
        assert!(!p.speakers_for(Grade::Red, "reservoir"));
        assert!(p.speakers_for(Grade::Red, "flash_flood") && p.speakers(Grade::Red));
        assert_eq!(p.speaker_window_ms_for(Grade::Red, "reservoir"), 300_000);
    }

    #[test]
    fn a_kind_that_needs_no_answer_escalates_nobody() {
        let p = from_toml(
            r#"
            [kinds.drill_notice.red]
            ack_required = false
            [kinds.drill_notice.red.roles.village_head]
            attempts_per_bearer = 1
            "#,
        )
        .unwrap();
        let head = p.resolve_for(Grade::Red, "drill_notice", Role::VillageHead);
        assert!(!head.ack_required && !head.escalate);
        assert_eq!((head.reminders, head.silence_fallbacks), (0, 0));
        assert_eq!(head.attempts_per_bearer, 1);
        assert_eq!(
            p.resolve_for(Grade::Red, "drill_notice", Role::GridLead)
                .attempts_per_bearer,
            3
        );
    }

    #[test]
    fn old_tables_read_unchanged_and_kinds_round_trip() {
        // A [policies] table written before kinds: a complete grade table.
        let mut want = Policies::default();
        want.orange.ack_deadline_s = 600;
        let old = toml::to_string(&BTreeMap::from([("orange", &want.orange)])).unwrap();
        assert!(old.contains("[orange.roles.resident]"), "{old}");
        let p = from_toml(&old).unwrap();
        assert!(p.kinds.is_empty());
        assert_eq!(p, want);
        // Without kinds the JSON form is the one from before.
        assert!(!serde_json::to_string(&p).unwrap().contains("kinds"));
        let k = from_toml(
            r#"
            [kinds.reservoir.red]
            ack_deadline_s = 120
            [kinds.reservoir.red.roles.resident]
            fallback = ["app"]
            "#,
        )
        .unwrap();
        let j = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<Policies>(&j).unwrap(), k);
        assert_eq!(
            toml::from_str::<Policies>(&toml::to_string(&k).unwrap()).unwrap(),
            k
        );
    }

    #[test]
    fn bad_kind_tables_are_refused_by_key() {
        for (text, needle) in [
            ("[kinds.reservoir.purple]\nack_deadline_s = 1", "purple"),
            ("[kinds.reservoir.red]\nack_deadline = 1", "ack_deadline"),
            ("[kinds.reservoir.red.roles.mayor]\nreminders = 1", "mayor"),
            (
                "[kinds.reservoir.red.roles.grid_lead]\nretry_backoff_s = 1",
                "retry_backoff_s",
            ),
            (
                "[kinds.reservoir.red]\nack_deadline_s = \"soon\"",
                "ack_deadline_s",
            ),
        ] {
            let err = from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        for (text, want) in [
            (
                "[kinds.reservoir.red]\nattempts_per_bearer = 0",
                PolicyError::NoAttempts {
                    grade: "kinds.reservoir.red".into(),
                },
            ),
            (
                "[kinds.reservoir.orange]\ndoor_knock_deadline_s = 0",
                PolicyError::ZeroDeadline {
                    grade: "kinds.reservoir.orange".into(),
                },
            ),
            (
                "[kinds.checkin.red.roles.field_crew]\nack_deadline_s = 0",
                PolicyError::ZeroDeadline {
                    grade: "kinds.checkin.red.roles.field_crew".into(),
                },
            ),
        ] {
            let p = from_toml(text).unwrap();
            assert_eq!(p.validate(), Err(want.clone()), "{text}");
            assert!(
                want.to_string().starts_with(&format!(
                    "policies.{}:",
                    match &want {
                        PolicyError::NoAttempts { grade } | PolicyError::ZeroDeadline { grade } =>
                            grade,
                    }
                )),
                "{want}"
            );
        }
    }
}
