//! The texts people receive. Exercises carry `【演练】` on every message, so a drill can
//! never be mistaken for a live warning.

use tocsin_core::{AckCode, Alert};

/// The warning itself; with a code when the record needs an ack:
/// `【红色预警】{headline}：{text} 回复 1 {CODE} 确认`.
pub fn alert_message(alert: &Alert, code: Option<AckCode>) -> String {
    let mut s = format!(
        "【{}预警】{}：{}",
        alert.grade.chinese(),
        alert.headline,
        alert.text
    );
    if let Some(code) = code {
        s.push_str(&format!(" 回复 1 {code} 确认"));
    }
    drill(alert, s)
}

/// The cancellation notice: `【预警解除】{headline} 已取消。`
pub fn cancel_message(alert: &Alert) -> String {
    drill(alert, format!("【预警解除】{} 已取消。", alert.headline))
}

/// Sent to someone the updated area no longer covers.
pub fn withdrawn_message(alert: &Alert) -> String {
    drill(
        alert,
        format!(
            "【预警范围调整】您所在区域已不在 {} 范围内。",
            alert.headline
        ),
    )
}

/// The door-knock task sent to a supervisor, with the task's own code.
pub fn escalation_message(alert: &Alert, name: &str, town: &str, task_code: AckCode) -> String {
    drill(
        alert,
        format!(
            "【叫应升级】{name}（{town}）未确认{}预警“{}”，请上门确认。回复 1 {task_code} 确认已上门。",
            alert.grade.chinese(),
            alert.headline
        ),
    )
}

fn drill(alert: &Alert, s: String) -> String {
    if alert.exercise {
        format!("【演练】{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_core::{AlertId, Grade, Timestamp};

    fn alert(exercise: bool) -> Alert {
        Alert {
            id: AlertId::from("a1"),
            grade: Grade::Red,
            kind: "flood".into(),
            headline: "山洪红色预警".into(),
            text: "立即转移".into(),
            area: vec![],
            exercise,
            issuer: "op".into(),
            accepted_at: Timestamp::ZERO,
        }
    }

    #[test]
    fn texts_follow_the_templates() {
        let code = AckCode::parse("K7XT").unwrap();
        assert_eq!(
            alert_message(&alert(false), Some(code)),
            "【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认"
        );
        assert_eq!(
            alert_message(&alert(false), None),
            "【红色预警】山洪红色预警：立即转移"
        );
        assert_eq!(
            cancel_message(&alert(true)),
            "【演练】【预警解除】山洪红色预警 已取消。"
        );
        assert_eq!(
            withdrawn_message(&alert(false)),
            "【预警范围调整】您所在区域已不在 山洪红色预警 范围内。"
        );
        assert_eq!(
            escalation_message(&alert(true), "王五", "大庄镇", code),
            "【演练】【叫应升级】王五（大庄镇）未确认红色预警“山洪红色预警”，请上门确认。回复 1 K7XT 确认已上门。"
        );
    }
}
