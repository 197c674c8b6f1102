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

/// Sent to a door-knock assignee when the updated area no longer covers the person they
/// were sent to: the visit is no longer asked for.
pub fn task_withdrawn_message(alert: &Alert, name: &str, town: &str) -> String {
    drill(
        alert,
        format!(
            "【预警范围调整】{name}（{town}）已不在 {} 范围内，上门确认任务取消。",
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

/// Whether `text` goes in one attempt to a device that takes `max_chars` characters
/// (0: the device states no limit).
pub fn fits(text: &str, max_chars: usize) -> bool {
    max_chars == 0 || text.chars().count() <= max_chars
}

/// The warning for a device that cannot take the full text (a BDS-2 BeiDou card carries
/// about 38 Chinese characters): `【红色预警】{headline} 回复1 {CODE}`, the headline cut
/// short if even that is too long; without a code, `【红色预警】{headline}：{text}` cut
/// short. The code and the exercise mark are never cut.
pub fn short_alert(alert: &Alert, code: Option<AckCode>, max_chars: usize) -> String {
    let prefix = drill(alert, format!("【{}预警】", alert.grade.chinese()));
    match code {
        Some(code) => squeeze(
            &prefix,
            &alert.headline,
            &format!(" 回复1 {code}"),
            max_chars,
        ),
        None => squeeze(
            &prefix,
            &format!("{}：{}", alert.headline, alert.text),
            "",
            max_chars,
        ),
    }
}

/// The door-knock task for a device that cannot take the full text:
/// `【叫应升级】{name}未确认红色预警，请上门 回复1 {CODE}`.
pub fn short_escalation(alert: &Alert, name: &str, task_code: AckCode, max_chars: usize) -> String {
    squeeze(
        &drill(alert, "【叫应升级】".to_owned()),
        &format!("{name}未确认{}预警，请上门", alert.grade.chinese()),
        &format!(" 回复1 {task_code}"),
        max_chars,
    )
}

/// The cancellation notice, cut to fit: `【预警解除】{headline} 已取消`.
pub fn short_cancel(alert: &Alert, max_chars: usize) -> String {
    squeeze(
        &drill(alert, "【预警解除】".to_owned()),
        &alert.headline,
        " 已取消",
        max_chars,
    )
}

/// The withdrawal notice, cut to fit: `【预警范围调整】{headline} 不再含您所在区域`.
pub fn short_withdrawn(alert: &Alert, max_chars: usize) -> String {
    squeeze(
        &drill(alert, "【预警范围调整】".to_owned()),
        &alert.headline,
        " 不再含您所在区域",
        max_chars,
    )
}

/// The assignee's withdrawal notice, cut to fit:
/// `【预警范围调整】{name}已不在范围内 上门任务取消`.
pub fn short_task_withdrawn(alert: &Alert, name: &str, max_chars: usize) -> String {
    squeeze(
        &drill(alert, "【预警范围调整】".to_owned()),
        &format!("{name}已不在范围内"),
        " 上门任务取消",
        max_chars,
    )
}

/// `prefix + middle + suffix` in at most `max_chars` characters: the middle is cut (with
/// `…`) first; if prefix and suffix alone are too long, the suffix (which carries the code)
/// is kept with as much of the exercise mark as fits, and at worst only its end.
fn squeeze(prefix: &str, middle: &str, suffix: &str, max_chars: usize) -> String {
    let whole = format!("{prefix}{middle}{suffix}");
    if fits(&whole, max_chars) {
        return whole;
    }
    let len = |s: &str| s.chars().count();
    if let Some(room) = max_chars.checked_sub(len(prefix) + len(suffix))
        && room > 0
    {
        let cut: String = middle.chars().take(room - 1).collect();
        return format!("{prefix}{cut}…{suffix}");
    }
    let suffix = suffix.trim_start();
    let mark = if prefix.starts_with(EXERCISE) {
        EXERCISE
    } else {
        ""
    };
    if len(mark) + len(suffix) <= max_chars {
        return format!("{mark}{suffix}");
    }
    let skip = len(suffix).saturating_sub(max_chars);
    suffix.chars().skip(skip).collect()
}

/// The mark every exercise message starts with.
const EXERCISE: &str = "【演练】";

fn drill(alert: &Alert, s: String) -> String {
    if alert.exercise {
        format!("{EXERCISE}{s}")
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
            reference: None,
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

    #[test]
    fn short_forms_fit_small_devices_and_keep_the_code() {
        let code = AckCode::parse("K7XT").unwrap();
        let mut a = alert(false);
        a.text = "山洪已形成，沿河各村立即组织人员向高处转移，切勿涉水过河，".repeat(3);
        let full = alert_message(&a, Some(code));
        assert!(!fits(&full, 38) && fits(&full, 0) && fits(&full, 500));
        // A BDS-2 card: 38 characters.
        let short = short_alert(&a, Some(code), 38);
        assert_eq!(short, "【红色预警】山洪红色预警 回复1 K7XT");
        let drill_short = short_alert(&alert(true), Some(code), 38);
        assert_eq!(drill_short, "【演练】【红色预警】山洪红色预警 回复1 K7XT");
        // A headline too long for the short form is cut, never the code.
        a.headline = "门头沟区永定河沿线山洪灾害红色预警及群众紧急转移通知".into();
        let cut = short_alert(&a, Some(code), 24);
        assert_eq!(cut.chars().count(), 24, "{cut}");
        assert!(
            cut.starts_with("【红色预警】门头沟区") && cut.ends_with("… 回复1 K7XT"),
            "{cut}"
        );
        // Absurdly small devices still get the code.
        assert_eq!(short_alert(&a, Some(code), 8), "回复1 K7XT");
        assert_eq!(short_alert(&a, Some(code), 6), "1 K7XT");
        assert!(short_alert(&alert(true), Some(code), 12).starts_with("【演练】"));
        assert!(short_alert(&alert(true), Some(code), 12).ends_with("K7XT"));
        // Without a code the text is cut instead.
        let no_ack = short_alert(&a, None, 20);
        assert_eq!(no_ack.chars().count(), 20);
        assert!(no_ack.starts_with("【红色预警】门头沟区"));
        let esc = short_escalation(&alert(false), "王五", code, 38);
        assert_eq!(esc, "【叫应升级】王五未确认红色预警，请上门 回复1 K7XT");
        assert!(fits(&esc, 38));
        assert_eq!(
            short_cancel(&alert(true), 38),
            "【演练】【预警解除】山洪红色预警 已取消"
        );
        assert!(fits(&short_withdrawn(&a, 20), 20));
    }
}
