//! Alerts and their grades.

use crate::area::AreaSpec;
use crate::ids::AlertId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The warning grade. Ordered: `Blue < Yellow < Orange < Red`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// Level IV, CAP severity Minor.
    Blue,
    /// Level III, CAP severity Moderate.
    Yellow,
    /// Level II, CAP severity Severe.
    Orange,
    /// Level I, CAP severity Extreme.
    Red,
}

impl Grade {
    /// Every grade, lowest first.
    pub const ALL: [Grade; 4] = [Grade::Blue, Grade::Yellow, Grade::Orange, Grade::Red];

    /// The lowercase name used in config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Blue => "blue",
            Grade::Yellow => "yellow",
            Grade::Orange => "orange",
            Grade::Red => "red",
        }
    }

    /// The Chinese name as it appears in a warning text (e.g. 红色).
    pub fn chinese(self) -> &'static str {
        match self {
            Grade::Blue => "蓝色",
            Grade::Yellow => "黄色",
            Grade::Orange => "橙色",
            Grade::Red => "红色",
        }
    }

    /// CAP 1.2 `<severity>` for this grade.
    pub fn cap_severity(self) -> &'static str {
        match self {
            Grade::Blue => "Minor",
            Grade::Yellow => "Moderate",
            Grade::Orange => "Severe",
            Grade::Red => "Extreme",
        }
    }
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One warning as issued by a command center and accepted by Tocsin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Globally unique id (UUIDv7 text).
    pub id: AlertId,
    /// The grade; decides the policy (bearers, ack deadline, escalation).
    pub grade: Grade,
    /// The kind of hazard, e.g. `flood`, `landslide`, `rainstorm` (free text, short).
    pub kind: String,
    /// One short line, e.g. 山洪红色预警.
    pub headline: String,
    /// What people must do; carried on every bearer as far as it fits.
    pub text: String,
    /// Where it applies; the union of these areas.
    pub area: Vec<AreaSpec>,
    /// A drill: marked as an exercise on every bearer, never mixed with live traffic.
    pub exercise: bool,
    /// Who issued it (token name of the operator or upstream system).
    pub issuer: String,
    /// When Tocsin accepted it.
    pub accepted_at: Timestamp,
    /// The upstream messages this alert is known under, space-separated, oldest first —
    /// e.g. CAP `sender,identifier,sent` triplets, as in CAP's own `<references>`: the
    /// issuing message, then each Update and the Cancel accepted for it (at most 64, the
    /// first never dropped; see `tocsin_api::model::add_reference`). How a later CAP Update
    /// or Cancel finds this alert, and why a re-pushed message is accepted once. Absent for
    /// alerts issued without one (and in records stored before the field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_stored_before_the_reference_existed_still_load() {
        // A record body as the store wrote it before alerts carried a reference.
        let old = r#"{"id":"a1","grade":"red","kind":"flood","headline":"山洪红色预警",
            "text":"转移","area":[],"exercise":false,"issuer":"op","accepted_at":0}"#;
        let a: Alert = serde_json::from_str(old).expect("old record loads");
        assert_eq!(a.reference, None);
        // Written back without the field, so older readers are not surprised either.
        let v = serde_json::to_value(&a).expect("serializes");
        assert!(v.get("reference").is_none(), "{v}");

        let with = Alert {
            reference: Some("qx@bj,CN-1,2026-07-30T08:00:00+08:00".into()),
            ..a
        };
        let back: Alert = serde_json::from_str(&serde_json::to_string(&with).expect("serializes"))
            .expect("loads");
        assert_eq!(back, with);
    }
}
