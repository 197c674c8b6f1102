//! Chinese text on BeiDou: GB2312 bytes, sent in mixed mode as `A4` + uppercase hex.
//!
//! Encoding uses `encoding_rs`'s GBK encoder and then keeps only what lies in GB2312
//! (two-byte codes with both bytes in 0xA1–0xFE, lead byte up to 0xF7) unless the device
//! is configured to allow GBK. **Fallback:** every character that cannot be sent is
//! replaced by the full-width question mark `？` (GB2312 0xA3BF), never dropped, and the
//! number of replacements is returned so the driver can put it on the record. Rare
//! characters in people's names (堃, 喆) and emoji are the usual cases.
//!
//! Decoding accepts GBK/GB18030 (what terminals send in practice); undecodable bytes
//! become U+FFFD rather than an error, so a reply is never lost to a stray byte.

use encoding_rs::GBK;

/// What replaces a character that is not in the allowed character set: `？`.
pub const FALLBACK: char = '？';
/// `？` in GB2312.
const FALLBACK_BYTES: [u8; 2] = [0xA3, 0xBF];

/// The marker byte that starts mixed-mode content.
pub const MIXED_MARKER: u8 = 0xA4;

/// Text encoded for the terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// GB2312 (or GBK) bytes.
    pub bytes: Vec<u8>,
    /// How many characters were replaced by [`FALLBACK`].
    pub replaced: usize,
}

/// Whether a two-byte GBK code lies in GB2312's area.
fn in_gb2312(b: &[u8]) -> bool {
    matches!(b, [lead, trail] if (0xA1..=0xF7).contains(lead) && (0xA1..=0xFE).contains(trail))
}

/// Encodes `text` as GB2312 bytes (GBK when `allow_gbk`), replacing what cannot be sent.
/// ASCII control characters other than newline are replaced too: terminals show them as
/// garbage.
pub fn encode(text: &str, allow_gbk: bool) -> Encoded {
    let mut bytes = Vec::with_capacity(text.len());
    let mut replaced = 0;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_control() && c != '\n' {
                bytes.extend_from_slice(&FALLBACK_BYTES);
                replaced += 1;
            } else {
                bytes.push(c as u8);
            }
            continue;
        }
        let (enc, _, unmappable) = GBK.encode(c.encode_utf8(&mut buf));
        let ok = !unmappable && (in_gb2312(&enc) || (allow_gbk && enc.len() == 2));
        if ok {
            bytes.extend_from_slice(&enc);
        } else {
            bytes.extend_from_slice(&FALLBACK_BYTES);
            replaced += 1;
        }
    }
    Encoded { bytes, replaced }
}

/// Decodes GB2312/GBK bytes, lossily.
pub fn decode(bytes: &[u8]) -> String {
    let (text, _, _) = GBK.decode(bytes);
    text.into_owned()
}

/// Uppercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

/// Bytes from hex (either case); `None` if odd-length or not hex.
pub fn from_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// Mixed-mode content: `A4` + hex of the GB2312 bytes.
pub fn mixed(bytes: &[u8]) -> String {
    format!("{:02X}{}", MIXED_MARKER, to_hex(bytes))
}

/// Decodes mixed-mode content (`A4` + hex). Content without the marker is decoded as
/// plain GB hex, which some terminals send. `None` when it is not hex at all.
pub fn decode_mixed(content: &[u8]) -> Option<String> {
    let bytes = from_hex(content)?;
    let body = bytes.strip_prefix(&[MIXED_MARKER]).unwrap_or(&bytes);
    Some(decode(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brief_vectors_encode_and_decode() {
        let e = encode("hello北斗", false);
        assert_eq!(e.replaced, 0);
        assert_eq!(mixed(&e.bytes), "A468656C6C6FB1B1B6B7");
        assert_eq!(mixed(&encode("收到1", false).bytes), "A4CAD5B5BD31");
        assert_eq!(decode_mixed(b"A4CAD5B5BD31").as_deref(), Some("收到1"));
        assert_eq!(decode_mixed(b"a4cad5b5bd31").as_deref(), Some("收到1"));
        assert_eq!(decode_mixed(b"CAD5B5BD31").as_deref(), Some("收到1"));
        assert_eq!(decode_mixed(b"A4CAD"), None);
        assert_eq!(decode_mixed(b"ZZ"), None);
    }

    #[test]
    fn characters_outside_gb2312_are_replaced_and_counted_never_dropped() {
        // 堃 is GBK-only; 🙂 is in neither; € is a GBK single byte (0x80).
        let e = encode("张堃🙂€1", false);
        assert_eq!(e.replaced, 3);
        assert_eq!(decode(&e.bytes), "张？？？1");
        let g = encode("张堃", true);
        assert_eq!(g.replaced, 0);
        assert_eq!(decode(&g.bytes), "张堃");
        let c = encode("a\u{7}b\nc", false);
        assert_eq!((decode(&c.bytes).as_str(), c.replaced), ("a？b\nc", 1));
    }

    #[test]
    fn the_red_warning_text_survives_a_round_trip() {
        let text = "【红色预警】山洪灾害，请立即向高处转移。回复 1 K7XT 确认";
        let e = encode(text, false);
        assert_eq!(e.replaced, 0);
        assert_eq!(
            decode_mixed(mixed(&e.bytes).as_bytes()).as_deref(),
            Some(text)
        );
    }

    #[test]
    fn undecodable_bytes_become_replacement_characters() {
        assert_eq!(decode(&[0x31, 0xFF]), "1\u{FFFD}");
    }
}
