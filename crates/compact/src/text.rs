//! Text inside compact frames: GB2312 (GBK in practice, as BeiDou terminals use it) when
//! every character has a GBK code, otherwise UCS2 (UTF-16 big-endian, so characters beyond
//! the BMP survive as surrogate pairs). GBK is never longer than UCS2 — one byte for ASCII,
//! two for Chinese — so "the smaller of the two" is GBK whenever it can carry the text.

use encoding_rs::GBK;

/// How the text of a frame is encoded (one flag bit in the frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    /// GB2312/GBK: ASCII in one byte, Chinese in two.
    Gbk,
    /// UCS2 as UTF-16 big-endian: two bytes per BMP character.
    Ucs2,
}

/// Encodes `text` in the smaller encoding that carries it exactly.
pub fn encode_text(text: &str) -> (TextEncoding, Vec<u8>) {
    let (bytes, _, had_errors) = GBK.encode(text);
    if !had_errors {
        // Only take GBK if it decodes back to the very same text (a few code points are
        // mapped one-way by the Encoding Standard).
        let back = GBK.decode_without_bom_handling_and_without_replacement(&bytes);
        if back.as_deref() == Some(text) {
            return (TextEncoding::Gbk, bytes.into_owned());
        }
    }
    let mut out = Vec::with_capacity(text.len() * 2);
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    (TextEncoding::Ucs2, out)
}

/// Decodes text bytes; `None` if they are not valid in the given encoding.
pub fn decode_text(encoding: TextEncoding, bytes: &[u8]) -> Option<String> {
    match encoding {
        TextEncoding::Gbk => {
            let text = GBK.decode_without_bom_handling_and_without_replacement(bytes)?;
            // The decoder also takes GB18030 four-byte codes (90 30 81 30 is U+10000), which
            // the GBK encoder cannot write: such text would go back out as UCS2, up to twice
            // as long, and a full frame would no longer re-encode. Only the bytes
            // `encode_text` itself would write are accepted.
            let (again, _, had_errors) = GBK.encode(&text);
            (!had_errors && again.as_ref() == bytes).then(|| text.into_owned())
        }
        TextEncoding::Ucs2 => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_goes_as_gbk_two_bytes_a_character() {
        let (enc, bytes) = encode_text("山洪");
        assert_eq!(enc, TextEncoding::Gbk);
        // 山 = C9BD, 洪 = BAE9 in GB2312.
        assert_eq!(bytes, vec![0xC9, 0xBD, 0xBA, 0xE9]);
        assert_eq!(decode_text(enc, &bytes).as_deref(), Some("山洪"));
    }

    #[test]
    fn ascii_is_one_byte_and_the_unmappable_falls_back_to_ucs2() {
        assert_eq!(
            encode_text("1 K7QX"),
            (TextEncoding::Gbk, b"1 K7QX".to_vec())
        );
        // Hangul and emoji have no GBK code.
        let (enc, bytes) = encode_text("물🌊");
        assert_eq!(enc, TextEncoding::Ucs2);
        assert_eq!(bytes, vec![0xBB, 0x3C, 0xD8, 0x3C, 0xDF, 0x0A]);
        assert_eq!(decode_text(enc, &bytes).as_deref(), Some("물🌊"));
    }

    #[test]
    fn invalid_bytes_are_refused() {
        assert_eq!(decode_text(TextEncoding::Ucs2, &[0x00]), None);
        assert_eq!(decode_text(TextEncoding::Ucs2, &[0xD8, 0x00]), None);
        assert_eq!(decode_text(TextEncoding::Gbk, &[0xC9]), None);
    }
}
