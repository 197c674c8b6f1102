//! Reading a reply: which ack codes it carries, or whether it is a bare "received".

use tocsin_core::AckCode;
use tocsin_core::ackcode::fold_width;

/// What a reply says, before anyone checks who sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyForm {
    /// One or more ack codes, in the order they appear.
    Codes(Vec<AckCode>),
    /// A bare acknowledgement without a code: `1`, `收到`, `确认`, `ok`, `好`.
    Bare,
    /// Anything else.
    Other,
}

/// Bare acknowledgements, after trimming, width folding and lowercasing: what people type,
/// and the short forms set up as canned messages on Meshtastic handhelds and BeiDou
/// terminals (a lead picks one from a list instead of typing on a keypad in the rain).
/// Anything asking for help or saying something is wrong is never here: "我家进水了"
/// must reach an operator as text, not close a record.
const BARE: &[&str] = &[
    "1",
    "收到",
    "已收到",
    "收到了",
    "确认",
    "确认收到",
    "明白",
    "ok",
    "好",
    "好的",
    "received",
    "ack",
    "copy",
    "roger",
];

/// Reads a reply. A code is a run of exactly four letters/digits (full-width and
/// lowercase folded) that is a valid code; a run of five starting with `1` ("1K7QX",
/// the `1` typed without a space) counts too. Chinese characters and punctuation
/// separate runs, so "收到k7qx" carries `K7QX`.
pub fn read_reply(text: &str) -> ReplyForm {
    let folded: String = text.chars().map(fold_width).collect();
    let mut codes = Vec::new();
    for run in folded.split(|c: char| !c.is_ascii_alphanumeric()) {
        let code = match run.len() {
            4 => AckCode::parse(run),
            5 if run.starts_with('1') => run.get(1..).and_then(AckCode::parse),
            _ => None,
        };
        if let Some(code) = code
            && !codes.contains(&code)
        {
            codes.push(code);
        }
    }
    if !codes.is_empty() {
        return ReplyForm::Codes(codes);
    }
    let bare = folded
        .trim_matches(|c: char| {
            c.is_whitespace() || c.is_ascii_punctuation() || "。，！？、".contains(c)
        })
        .to_lowercase();
    if BARE.contains(&bare.as_str()) {
        ReplyForm::Bare
    } else {
        ReplyForm::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(s: &str) -> Vec<String> {
        match read_reply(s) {
            ReplyForm::Codes(c) => c.iter().map(|c| c.to_string()).collect(),
            other => panic!("{s:?} read as {other:?}"),
        }
    }

    #[test]
    fn codes_are_found_anywhere_as_four_char_tokens() {
        assert_eq!(codes("1 K7XT"), ["K7XT"]);
        assert_eq!(codes("K7XT"), ["K7XT"]);
        assert_eq!(codes("收到k7xt"), ["K7XT"]);
        assert_eq!(codes("１ Ｋ７ＸＴ"), ["K7XT"]);
        assert_eq!(codes("1k7xt"), ["K7XT"]);
        assert_eq!(codes("K7XT, 9HWA k7xt"), ["K7XT", "9HWA"]);
    }

    #[test]
    fn bare_acks_and_other_text() {
        for s in ["1", "１", " 收到 ", "确认。", "OK", "ok!", "好", "Ｏｋ"] {
            assert_eq!(read_reply(s), ReplyForm::Bare, "{s:?}");
        }
        // Canned-message forms from a handheld's preset list.
        for s in [
            "已收到",
            "收到了！",
            "确认收到",
            "明白",
            "好的",
            "Received",
            "ACK",
            "Copy.",
            "Roger",
        ] {
            assert_eq!(read_reply(s), ReplyForm::Bare, "{s:?}");
        }
        for s in [
            "",
            "hello",
            "K7X",
            "K7XTT",
            "我家进水了",
            "12",
            "K0XT",
            "需要救援",
            "not received",
        ] {
            assert_eq!(read_reply(s), ReplyForm::Other, "{s:?}");
        }
    }
}
