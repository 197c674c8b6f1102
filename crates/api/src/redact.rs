//! Ack codes kept from viewer tokens.
//!
//! A person's one-time code is what makes their "received" impossible to forge: whoever
//! knows it can acknowledge in their name. A wall display or an integrator reading the
//! records must therefore never see one, neither in a record's `code` nor inside the
//! texts that carry it (the SMS text `… 回复 1 K7QX 确认`, a door-knock task, a reply's raw
//! text, a relay frame's bytes). Issuer tokens see everything.
//!
//! Redaction works on the JSON about to be sent, so it covers every record shape the
//! router has or will have: fields that are codes or encoded frames are dropped, and in
//! every other string each run of letters and digits that the router would read as a
//! code is masked, how eagerly depending on the field ([`Field`]).

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use tocsin_core::AckCode;
use tocsin_core::ackcode::fold_width;

/// What a masked code reads as.
pub(crate) const MASK: &str = "****";

/// Fields dropped outright: codes, code lists, and frames in hex (which carry codes).
const DROPPED: &[&str] = &["code", "codes", "task_code", "bytes"];

/// Fields holding messages as sent or replies as typed: a code there is masked in any
/// letter case, since people type codes in lowercase.
const MESSAGES: &[&str] = &["text", "message", "evidence", "ack_evidence", "raw"];

/// Fields holding identifiers, names or fixed vocabularies rather than free text.
const IDENTIFIERS: &[&str] = &[
    "id",
    "seq",
    "alert",
    "person",
    "attempt",
    "device",
    "assignee",
    "escalated_to",
    "kind",
    "state",
    "town",
    "name",
    "issuer",
    "bearer",
    "role",
    "kit",
    "speaker",
    "grade",
    "reference",
    "value",
];

/// How eagerly codes are looked for in a string, by the field that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    /// A message or reply text: every run that reads as a code, in any case.
    Message,
    /// Other free text (reasons, outcomes, often English): runs in capitals or with a
    /// digit, as codes are sent, so words like "were" or "near" stay readable.
    Text,
    /// Identifiers and names: only the codes seen elsewhere in the same value, so an id
    /// that happens to look like a code stays readable.
    Identifier,
}

impl Field {
    fn of(key: Option<&str>) -> Field {
        match key {
            Some(k) if MESSAGES.contains(&k) => Field::Message,
            Some(k) if IDENTIFIERS.contains(&k) => Field::Identifier,
            _ => Field::Text,
        }
    }
}

/// Removes ack codes from `value` in place, for a viewer.
pub(crate) fn redact(value: &mut Value) {
    let mut known = BTreeSet::new();
    collect_codes(value, &mut known);
    scrub(value, None, &known);
}

/// Every code named in a dropped field, anywhere in `value`, upper-cased.
fn collect_codes(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if DROPPED.contains(&key.as_str()) {
                    add_codes(v, out);
                } else {
                    collect_codes(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_codes(v, out)),
        _ => {}
    }
}

fn add_codes(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            if let Some(code) = AckCode::parse(s) {
                out.insert(code.as_str().to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| add_codes(v, out)),
        Value::Object(map) => map.values().for_each(|v| add_codes(v, out)),
        _ => {}
    }
}

fn scrub(value: &mut Value, key: Option<&str>, known: &BTreeSet<String>) {
    match value {
        Value::Object(map) => scrub_map(map, known),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, key, known)),
        Value::String(s) => {
            if let Some(masked) = mask_codes(s, Field::of(key), known) {
                *s = masked;
            }
        }
        _ => {}
    }
}

fn scrub_map(map: &mut Map<String, Value>, known: &BTreeSet<String>) {
    map.retain(|key, _| !DROPPED.contains(&key.as_str()));
    for (key, v) in map.iter_mut() {
        scrub(v, Some(key), known);
    }
}

/// `text` with codes masked, or `None` if it holds none. Runs of ASCII letters and
/// digits (full-width folded) are read the way the router reads a reply: four that make
/// a code, or five starting with `1` (`1K7QX`); `field` says which of those are masked
/// besides the `known` codes.
pub(crate) fn mask_codes(text: &str, field: Field, known: &BTreeSet<String>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let mut changed = false;
    let mut flush = |run: &mut String, out: &mut String| {
        if !run.is_empty() {
            match masked_run(run, field, known) {
                Some(m) => {
                    out.push_str(&m);
                    changed = true;
                }
                None => out.push_str(run),
            }
            run.clear();
        }
    };
    for c in text.chars() {
        if fold_width(c).is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    changed.then_some(out)
}

fn masked_run(run: &str, field: Field, known: &BTreeSet<String>) -> Option<String> {
    let folded: String = run.chars().map(fold_width).collect();
    // Codes are sent in capitals: outside messages and replies, a lowercase word of code
    // letters ("were", "near") is English unless it has a digit.
    let is_code = |s: &str| {
        let looks_sent = s.chars().any(|ch| ch.is_ascii_digit())
            || s.chars()
                .all(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase());
        AckCode::parse(s).is_some_and(|c| {
            known.contains(c.as_str())
                || field == Field::Message
                || (field == Field::Text && looks_sent)
        })
    };
    match folded.len() {
        4 if is_code(&folded) => Some(MASK.to_owned()),
        5 if folded.starts_with('1') && folded.get(1..).is_some_and(is_code) => {
            Some(format!("1{MASK}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_in_texts_are_masked_as_the_router_would_read_them() {
        let none = BTreeSet::new();
        let m = |s: &str| mask_codes(s, Field::Message, &none);
        assert_eq!(
            m("【红色预警】山洪：转移 回复 1 K7XY 确认").as_deref(),
            Some("【红色预警】山洪：转移 回复 1 **** 确认")
        );
        assert_eq!(m("回复1 K7XY").as_deref(), Some("回复1 ****"));
        assert_eq!(m("1k7xy").as_deref(), Some("1****"));
        assert_eq!(
            m("1wxya").as_deref(),
            Some("1****"),
            "replies come in any case"
        );
        // Outside messages, lowercase words of code letters are words...
        let t = |s: &str| mask_codes(s, Field::Text, &none);
        assert_eq!(t("the modem went away near here"), None);
        assert_eq!(t("failed: WXYA k7xy").as_deref(), Some("failed: **** ****"));
        // ...and identifiers lose only the codes seen in the same value.
        let known = BTreeSet::from(["WXYA".to_owned()]);
        assert_eq!(mask_codes("AC34", Field::Identifier, &known), None);
        assert_eq!(
            mask_codes("wxya", Field::Identifier, &known).as_deref(),
            Some(MASK)
        );
        assert_eq!(m("收到ｋ７ｘｙ").as_deref(), Some("收到****"));
        // Not codes: wrong letters (O, S, B are not in the alphabet), other lengths.
        assert_eq!(m("HOST 12345 K7XYZ ABS"), None);
        assert_eq!(m("沿河各村立即组织人员向高处转移"), None);
    }

    proptest::proptest! {
        /// Whatever surrounds it, a code in a message text never reaches a viewer.
        #[test]
        fn a_code_in_a_message_is_always_masked(
            before in "[\\p{Han}，。 a-z]{0,20}",
            after in "[\\p{Han}，。 a-z]{0,20}",
            code in "[ACEFHJKMNPRTWXY3479]{4}",
            glue in proptest::sample::select(vec![" ", "：", "1", " 1 ", "\n"]),
        ) {
            let text = format!("{before} {glue}{code} {after}");
            let mut v = json!({"kind": "attempt_started", "data": {"text": text, "code": code}});
            redact(&mut v);
            let out = v["data"]["text"].as_str().unwrap_or_default().to_owned();
            proptest::prop_assert!(!out.contains(&code), "{text:?} -> {out:?}");
            proptest::prop_assert!(v["data"].get("code").is_none());
        }
    }

    #[test]
    fn identifiers_lose_only_the_codes_seen_in_the_same_value() {
        let mut v = json!({
            "person": "AC34", "alert": "K7XY", "code": "K7XY",
            "attempts": [{"outcome": "delivered", "device": "gsm-1"}],
        });
        redact(&mut v);
        assert_eq!(
            v,
            json!({
                "person": "AC34", "alert": MASK,
                "attempts": [{"outcome": "delivered", "device": "gsm-1"}],
            })
        );
    }

    #[test]
    fn nested_code_fields_and_frames_are_dropped_and_their_codes_masked_everywhere() {
        let mut v = json!({
            "seq": 7, "kind": "reply_rejected",
            "data": {
                "reason": {"reason": "others_code", "code": "WXYA", "person": "p2"},
                "text": "1wxya",
                "task": {"code": "HJKM", "text": "【叫应升级】张三未确认，请上门。回复 1 HJKM 确认已上门。"},
                "relay": {"bytes": "0a0b0c", "kit": "upper"},
                "codes": ["ACEF", "3479"],
                "note": "ACEF and 3479 were sent"
            }
        });
        redact(&mut v);
        let text = v.to_string();
        for code in ["WXYA", "wxya", "HJKM", "ACEF", "3479", "0a0b0c"] {
            assert!(!text.contains(code), "{code} left in {text}");
        }
        assert_eq!(v["data"]["text"], "1****");
        assert_eq!(v["data"]["relay"], json!({"kit": "upper"}));
        assert_eq!(v["data"]["note"], "**** and **** were sent");
        assert_eq!(
            v["data"]["reason"],
            json!({"reason": "others_code", "person": "p2"})
        );
    }
}
