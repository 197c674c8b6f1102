//! The text form: what a plain handset (an SMS phone, a BeiDou terminal with a screen)
//! shows a person when it cannot decode frames, e.g. `【红色预警】… 回复1 K7XT`.

use crate::frame::{AlertFrame, CancelFrame, Frame, UpdateFrame};

/// The tag in front of a warning: `【红色预警】`, or `【演习】【红色预警】` for a drill.
pub fn tag(alert: &AlertFrame) -> String {
    let drill = if alert.exercise { "【演习】" } else { "" };
    format!("{drill}【{}预警】", alert.grade.chinese())
}

/// The text a person reads for an alert: tag, text, and the reply instruction when the
/// frame carries their code. A text that already starts with the tag is not tagged twice.
pub fn alert_text(alert: &AlertFrame) -> String {
    let tag = tag(alert);
    let body = alert.text.trim();
    let mut s = if body.starts_with(&tag) {
        body.to_owned()
    } else {
        format!("{tag}{body}")
    };
    if let Some(code) = alert.code {
        s.push_str(&format!(" 回复1 {code}"));
    }
    s
}

/// The text a person reads when an alert is withdrawn.
pub fn cancel_text(cancel: &CancelFrame) -> String {
    let drill = if cancel.exercise { "【演习】" } else { "" };
    format!("{drill}【预警解除】{}", cancel.text.trim())
        .trim_end()
        .to_owned()
}

/// The text a person reads when an alert is revised.
pub fn update_text(update: &UpdateFrame) -> String {
    format!("【更新】{}", alert_text(&update.alert))
}

/// The text form of any frame; `None` for ack batches, which are not for people.
pub fn text_form(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Alert(a) => Some(alert_text(a)),
        Frame::Update(u) => Some(update_text(u)),
        Frame::Cancel(c) => Some(cancel_text(c)),
        Frame::Text(t) => Some(t.text.clone()),
        Frame::Acks(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{AreaRef, ShortAlertId};
    use tocsin_core::{AckCode, Grade};

    fn alert(exercise: bool, text: &str) -> AlertFrame {
        AlertFrame {
            id: ShortAlertId::new(7).unwrap(),
            grade: Grade::Red,
            kind: "flash_flood".into(),
            exercise,
            expires: None,
            area: AreaRef::Unspecified,
            code: AckCode::parse("K7XT"),
            text: text.into(),
        }
    }

    #[test]
    fn warning_reads_with_tag_and_reply_instruction() {
        assert_eq!(
            alert_text(&alert(false, "沿河村庄立即转移")),
            "【红色预警】沿河村庄立即转移 回复1 K7XT"
        );
        assert_eq!(
            alert_text(&alert(false, "【红色预警】沿河村庄立即转移")),
            "【红色预警】沿河村庄立即转移 回复1 K7XT"
        );
        assert_eq!(
            alert_text(&alert(true, "演练转移")),
            "【演习】【红色预警】演练转移 回复1 K7XT"
        );
        let c = CancelFrame {
            id: ShortAlertId::new(7).unwrap(),
            exercise: false,
            text: String::new(),
        };
        assert_eq!(cancel_text(&c), "【预警解除】");
    }
}
