//! The JSON bodies both ways: the push the gateway sends to the app backend, the callback
//! the app sends back, and the small answers to each.
//!
//! HTTP frames the bodies, so unlike a serial protocol there is never a partial body
//! here: `parse` takes a whole body and either reads it or says why not. `emit` writes
//! the fields in a fixed order, so the bytes (and their signature) are stable and the
//! two mirror each other on the same bytes.
//!
//! The push (`POST <url>`, `Content-Type: application/json`, signed):
//!
//! ```json
//! {"token":"42.752d31303031.5da8…","subscriber":"u-1001",
//!  "text":"【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认","kind":"warning",
//!  "grade":"red","exercise":false,"sent_at":1700000000000,
//!  "ack_url":"http://gw:8091/ack/42.752d31303031.5da8…","callback_url":"http://gw:8091/callback"}
//! ```
//!
//! `grade`, `kind` and `exercise` are read from the text's marks (`【演练】`,
//! `【红色预警】`, ...) for the app to style the notification; the text itself is what
//! the person must see. `sent_at` is Unix milliseconds.
//!
//! The callback (`POST /callback`, signed the same way):
//! `{"subscriber":"u-1001","text":"1 K7XT"}`, optionally with `"token"` (the push it
//! answers) and `"sent_at"` (Unix milliseconds, when the person answered).

use serde::{Deserialize, Serialize};
use tocsin_core::Grade;

/// What kind of message a push carries, read from the text's leading mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A warning (`【红色预警】...`).
    Warning,
    /// A door-knock task for a supervisor (`【叫应升级】...`).
    Escalation,
    /// A warning was cancelled (`【预警解除】...`).
    Cancel,
    /// The person is no longer in the warning's area (`【预警范围调整】...`).
    Withdrawn,
    /// Any other text.
    Other,
}

/// One push to the app backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// The attempt's signed token: opaque to the app, given back in callbacks.
    pub token: String,
    /// The app's subscriber id (the person's `Address::App`).
    pub subscriber: String,
    /// The complete text to show.
    pub text: String,
    /// What the text is.
    pub kind: MessageKind,
    /// The warning's grade, when the text names one.
    pub grade: Option<Grade>,
    /// A drill: the app must show it as one.
    pub exercise: bool,
    /// When the gateway sent it, Unix milliseconds.
    pub sent_at: i64,
    /// A link that acknowledges this push when the person taps it and confirms.
    pub ack_url: String,
    /// Where the app posts replies (signed).
    pub callback_url: String,
}

/// A reply from the app: what a person answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// The app's subscriber id of the person who answered.
    pub subscriber: String,
    /// What they answered (`1 K7XT`, `收到`); `1` when absent and a token is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The token of the push this answers, when the app knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the person answered, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
}

/// What the app backend may answer a push with (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PushAnswer {
    /// The backend's own id for the notification, kept as the attempt's reference.
    #[serde(default)]
    pub id: Option<String>,
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not JSON of the expected shape (the parser's message, which names the field).
    #[error("bad JSON: {0}")]
    Json(String),
    /// A field is present but empty or too long.
    #[error("{field}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Longest reply text taken from a callback, in characters.
pub const MAX_REPLY_CHARS: usize = 1000;

impl Push {
    /// Reads a push body.
    pub fn parse(body: &[u8]) -> Result<Push, WireError> {
        serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))
    }

    /// Appends the push's JSON to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        // Serializing plain strings, numbers and enums into a Vec cannot fail.
        if let Err(e) = serde_json::to_writer(out, self) {
            tracing::error!(%e, "push did not serialize");
        }
    }
}

impl Callback {
    /// Reads a callback body and checks its fields: a subscriber of 1 to
    /// [`MAX_SUBSCRIBER_CHARS`](crate::config::MAX_SUBSCRIBER_CHARS) characters, a text of at
    /// most [`MAX_REPLY_CHARS`], and a text or a token.
    pub fn parse(body: &[u8]) -> Result<Callback, WireError> {
        let c: Callback =
            serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        if c.subscriber.trim().is_empty() {
            return Err(WireError::Field {
                field: "subscriber",
                problem: "is empty",
            });
        }
        if c.subscriber.chars().count() > crate::config::MAX_SUBSCRIBER_CHARS {
            return Err(WireError::Field {
                field: "subscriber",
                problem: "is longer than 128 characters",
            });
        }
        if c.text
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_REPLY_CHARS)
        {
            return Err(WireError::Field {
                field: "text",
                problem: "is longer than 1000 characters",
            });
        }
        let no_text = c.text.as_ref().is_none_or(|t| t.trim().is_empty());
        if no_text && c.token.is_none() {
            return Err(WireError::Field {
                field: "text",
                problem: "is needed when there is no token",
            });
        }
        Ok(c)
    }

    /// Appends the callback's JSON to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        if let Err(e) = serde_json::to_writer(out, self) {
            tracing::error!(%e, "callback did not serialize");
        }
    }
}

impl PushAnswer {
    /// Reads what a backend answered; anything that is not this JSON is no answer.
    pub fn parse(body: &[u8]) -> PushAnswer {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

/// The kind, grade and drill mark of a text, from the marks the router puts in front
/// (`【演练】【红色预警】...`, `【叫应升级】王五未确认橙色预警...`).
pub fn classify(text: &str) -> (MessageKind, Option<Grade>, bool) {
    let exercise = text.starts_with("【演练】");
    let rest = text.strip_prefix("【演练】").unwrap_or(text);
    let grade = [
        ("红色预警", Grade::Red),
        ("橙色预警", Grade::Orange),
        ("黄色预警", Grade::Yellow),
        ("蓝色预警", Grade::Blue),
    ]
    .into_iter()
    .filter_map(|(mark, g)| rest.find(mark).map(|at| (at, g)))
    .min_by_key(|(at, _)| *at)
    .map(|(_, g)| g);
    let kind = if rest.starts_with("【叫应升级】") {
        MessageKind::Escalation
    } else if rest.starts_with("【预警解除】") {
        MessageKind::Cancel
    } else if rest.starts_with("【预警范围调整】") {
        MessageKind::Withdrawn
    } else if rest.starts_with('【') && grade.is_some() {
        MessageKind::Warning
    } else {
        MessageKind::Other
    };
    // A cancellation or withdrawal names the warning's headline, whose own words may
    // include a grade; it is still no warning.
    let grade = match kind {
        MessageKind::Warning | MessageKind::Escalation => grade,
        _ => None,
    };
    (kind, grade, exercise)
}

/// The JSON body of an answer to a callback: `{"status":"..."}` or `{"error":"..."}`.
pub fn answer_body(ok: bool, message: &str) -> Vec<u8> {
    let v = if ok {
        serde_json::json!({ "status": message })
    } else {
        serde_json::json!({ "error": message })
    };
    v.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PUSH: &str = r#"{"token":"42.752d31303031.5da85a7bceb5ff6b4e423454a15027a4","subscriber":"u-1001","text":"【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认","kind":"warning","grade":"red","exercise":false,"sent_at":1700000000000,"ack_url":"http://127.0.0.1:8091/ack/42.752d31303031.5da85a7bceb5ff6b4e423454a15027a4","callback_url":"http://127.0.0.1:8091/callback"}"#;

    fn push() -> Push {
        Push {
            token: "42.752d31303031.5da85a7bceb5ff6b4e423454a15027a4".into(),
            subscriber: "u-1001".into(),
            text: "【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认".into(),
            kind: MessageKind::Warning,
            grade: Some(Grade::Red),
            exercise: false,
            sent_at: 1_700_000_000_000,
            ack_url: "http://127.0.0.1:8091/ack/42.752d31303031.5da85a7bceb5ff6b4e423454a15027a4"
                .into(),
            callback_url: "http://127.0.0.1:8091/callback".into(),
        }
    }

    #[test]
    fn a_push_mirrors_its_bytes() {
        let mut out = Vec::new();
        push().emit(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), PUSH);
        assert_eq!(Push::parse(PUSH.as_bytes()).unwrap(), push());
    }

    #[test]
    fn a_callback_mirrors_its_bytes() {
        let bytes = br#"{"subscriber":"u-1001","text":"1 K7XT"}"#;
        let c = Callback::parse(bytes).unwrap();
        assert_eq!(c.text.as_deref(), Some("1 K7XT"));
        assert_eq!((c.token.as_ref(), c.sent_at), (None, None));
        let mut out = Vec::new();
        c.emit(&mut out);
        assert_eq!(out, bytes);
        let with = br#"{"subscriber":"u-1001","token":"42.aa.bb","sent_at":1700000000123}"#;
        let c = Callback::parse(with).unwrap();
        let mut out = Vec::new();
        c.emit(&mut out);
        assert_eq!(out, with);
    }

    #[test]
    fn bad_callbacks_say_why() {
        for (body, says) in [
            (&b"not json"[..], "bad JSON"),
            (br#"{"text":"1"}"#, "subscriber"),
            (br#"{"subscriber":"  ","text":"1"}"#, "subscriber: is empty"),
            (br#"{"subscriber":"u"}"#, "text: is needed"),
            (br#"{"subscriber":"u","text":" "}"#, "text: is needed"),
            (br#"{"subscriber":7,"text":"1"}"#, "bad JSON"),
            (&[0xff, 0xfe, 0x00][..], "bad JSON"),
        ] {
            let err = Callback::parse(body).unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
        let long = format!(r#"{{"subscriber":"{}","text":"1"}}"#, "u".repeat(129));
        assert!(Callback::parse(long.as_bytes()).is_err());
        let long = format!(r#"{{"subscriber":"u","text":"{}"}}"#, "字".repeat(1001));
        assert!(Callback::parse(long.as_bytes()).is_err());
    }

    #[test]
    fn texts_are_classified_by_their_marks() {
        assert_eq!(
            classify("【演练】【橙色预警】暴雨：转移 回复 1 K7XT 确认"),
            (MessageKind::Warning, Some(Grade::Orange), true)
        );
        assert_eq!(
            classify("【叫应升级】王五（大庄镇）未确认红色预警“山洪红色预警”，请上门确认。"),
            (MessageKind::Escalation, Some(Grade::Red), false)
        );
        assert_eq!(
            classify("【预警解除】山洪红色预警 已取消。"),
            (MessageKind::Cancel, None, false)
        );
        assert_eq!(
            classify("【演练】【预警范围调整】您所在区域已不在 黄色预警 范围内。"),
            (MessageKind::Withdrawn, None, true)
        );
        assert_eq!(classify("hello"), (MessageKind::Other, None, false));
    }

    #[test]
    fn backend_answers_are_read_leniently() {
        assert_eq!(
            PushAnswer::parse(br#"{"id":"n-7","extra":1}"#)
                .id
                .as_deref(),
            Some("n-7")
        );
        assert_eq!(PushAnswer::parse(b"OK"), PushAnswer::default());
        assert_eq!(
            String::from_utf8(answer_body(false, "bad \"sig\"")).unwrap(),
            r#"{"error":"bad \"sig\""}"#
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Push::parse(&bytes);
            let _ = Callback::parse(&bytes);
            let _ = PushAnswer::parse(&bytes);
            let _ = classify(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn callbacks_round_trip(sub in "[a-z0-9-]{1,40}", text in "\\PC{1,60}", sent in any::<Option<i64>>()) {
            prop_assume!(!text.trim().is_empty());
            let c = Callback { subscriber: sub, text: Some(text), token: None, sent_at: sent };
            let mut out = Vec::new();
            c.emit(&mut out);
            prop_assert_eq!(Callback::parse(&out).unwrap(), c);
        }
    }
}
