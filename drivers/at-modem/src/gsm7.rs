//! GSM 03.38 (TS 23.038) default alphabet, its extension table, and septet packing.
//!
//! SMS text in the default alphabet is a sequence of 7-bit *septets*. Most ASCII letters
//! and digits keep their code, but several do not (`@` is 0x00, `$` is 0x02, `_` is 0x11)
//! and `^{}\[~]|€` plus form feed live in the extension table, costing two septets each
//! (ESC 0x1B, then the code). Septets travel packed LSB-first into octets, optionally after
//! a few zero *fill bits* that align text behind a user-data header to a septet boundary.
//!
//! Everything here is total: decoding never panics, whatever the bytes.

/// The escape septet that announces a character from the extension table.
pub const ESC: u8 = 0x1B;

/// The default alphabet, indexed by septet. Index 0x1B is the escape and never matches a
/// character when encoding; decoded alone it reads as a space (TS 23.038 §6.2.1).
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', ' ', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (code after ESC, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Appends the septets for one character (one, or ESC and a code) and returns `true`, or
/// returns `false` and appends nothing if the character is not in the alphabet.
pub fn encode_char(c: char, out: &mut Vec<u8>) -> bool {
    if let Some(code) = basic_code(c) {
        out.push(code);
        return true;
    }
    if let Some(&(code, _)) = EXTENSION.iter().find(|&&(_, e)| e == c) {
        out.push(ESC);
        out.push(code);
        return true;
    }
    false
}

/// The septet of `c` in the default alphabet proper (not the extension table).
fn basic_code(c: char) -> Option<u8> {
    // The space at index 0x1B stands for the escape and must not capture ' ' (0x20).
    BASIC
        .iter()
        .enumerate()
        .find(|&(i, &b)| b == c && i != usize::from(ESC))
        .and_then(|(i, _)| u8::try_from(i).ok())
}

/// How many septets `c` costs: 1, 2 for the extension table, `None` if unrepresentable.
pub fn char_septets(c: char) -> Option<usize> {
    if basic_code(c).is_some() {
        Some(1)
    } else if EXTENSION.iter().any(|&(_, e)| e == c) {
        Some(2)
    } else {
        None
    }
}

/// The text as septets, or `None` if any character is not representable (then the text
/// must go as UCS2).
pub fn to_septets(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if !encode_char(c, &mut out) {
            return None;
        }
    }
    Some(out)
}

/// How many septets the text costs, or `None` if it does not fit the alphabet.
pub fn septet_len(text: &str) -> Option<usize> {
    text.chars()
        .try_fold(0usize, |n, c| char_septets(c).map(|k| n + k))
}

/// Decodes septets to text. The top bit of each septet is ignored. An escape followed by a
/// code the extension table does not know reads as that code's default character (the
/// behaviour TS 23.038 asks of receivers); ESC ESC and a trailing ESC read as a space.
pub fn from_septets(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut it = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = it.next() {
        if s != ESC {
            out.push(basic_char(s));
            continue;
        }
        match it.next() {
            None | Some(ESC) => out.push(' '),
            Some(code) => match EXTENSION.iter().find(|&&(k, _)| k == code) {
                Some(&(_, c)) => out.push(c),
                None => out.push(basic_char(code)),
            },
        }
    }
    out
}

/// The default-alphabet character of a septet (a space for anything out of range).
fn basic_char(s: u8) -> char {
    BASIC.get(usize::from(s)).copied().unwrap_or(' ')
}

/// Packs septets LSB-first into octets, after `fill_bits` zero bits (0..=6; larger values
/// are taken modulo 8). The result has `ceil((fill_bits + 7 * n) / 8)` octets.
pub fn pack(septets: &[u8], fill_bits: u8) -> Vec<u8> {
    let fill = u32::from(fill_bits % 8);
    let total_bits = fill as usize + 7 * septets.len();
    let mut out = Vec::with_capacity(total_bits.div_ceil(8));
    let mut acc: u32 = 0;
    let mut nbits: u32 = fill;
    for &s in septets {
        acc |= u32::from(s & 0x7F) << nbits;
        nbits += 7;
        while nbits >= 8 {
            out.push((acc & 0xFF) as u8);
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        out.push((acc & 0xFF) as u8);
    }
    out
}

/// Unpacks up to `septet_count` septets from octets, skipping `fill_bits` leading bits
/// (taken modulo 8). Returns fewer septets if the octets run out; never panics.
pub fn unpack(octets: &[u8], septet_count: usize, fill_bits: u8) -> Vec<u8> {
    let fill = usize::from(fill_bits % 8);
    let available_bits = octets.len().saturating_mul(8);
    let possible = available_bits.saturating_sub(fill) / 7;
    let count = septet_count.min(possible);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let bit = fill + 7 * i;
        let byte = bit / 8;
        let shift = bit % 8;
        let lo = u16::from(octets.get(byte).copied().unwrap_or(0));
        let hi = u16::from(octets.get(byte + 1).copied().unwrap_or(0));
        let word = lo | (hi << 8);
        out.push(((word >> shift) & 0x7F) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }

    #[test]
    fn packs_protocol_vectors() {
        let hello = to_septets("hellohello").unwrap();
        assert_eq!(hex(&pack(&hello, 0)), "E8329BFD4697D9EC37");
        let ack = to_septets("ACK 1").unwrap();
        assert_eq!(hex(&pack(&ack, 0)), "C1E1121403");
    }

    #[test]
    fn unpacks_protocol_vectors() {
        let packed = [0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37];
        assert_eq!(from_septets(&unpack(&packed, 10, 0)), "hellohello");
        let ack = [0xC1, 0xE1, 0x12, 0x14, 0x03];
        assert_eq!(from_septets(&unpack(&ack, 5, 0)), "ACK 1");
    }

    #[test]
    fn ascii_is_not_mapped_one_to_one() {
        assert_eq!(to_septets("@").unwrap(), vec![0x00]);
        assert_eq!(to_septets("$").unwrap(), vec![0x02]);
        assert_eq!(to_septets("_").unwrap(), vec![0x11]);
        assert_eq!(to_septets(" ").unwrap(), vec![0x20]);
        assert_eq!(to_septets("`"), None);
        assert_eq!(to_septets("北"), None);
    }

    #[test]
    fn extension_table_costs_two_septets() {
        let text = "^{}\\[~]|€\u{0C}";
        let septets = to_septets(text).unwrap();
        assert_eq!(
            septets,
            vec![
                ESC, 0x14, ESC, 0x28, ESC, 0x29, ESC, 0x2F, ESC, 0x3C, ESC, 0x3D, ESC, 0x3E, ESC,
                0x40, ESC, 0x65, ESC, 0x0A
            ]
        );
        assert_eq!(septet_len(text), Some(20));
        assert_eq!(from_septets(&septets), text);
    }

    #[test]
    fn unknown_escapes_decode_without_panic() {
        // ESC 'A' is not in the extension table: the receiver shows 'A'.
        assert_eq!(from_septets(&[ESC, 0x41]), "A");
        assert_eq!(from_septets(&[0x41, ESC]), "A ");
        assert_eq!(from_septets(&[ESC, ESC, 0x41]), " A");
        assert_eq!(from_septets(&[0xFF]), "à");
    }

    #[test]
    fn fill_bits_shift_the_text() {
        // One fill bit, as after a 6-octet concatenation header.
        let septets = to_septets("ACK 1").unwrap();
        let packed = pack(&septets, 1);
        assert_eq!(packed.first().map(|b| b & 1), Some(0));
        assert_eq!(unpack(&packed, 5, 1), septets);
        assert_eq!(pack(&[], 1), vec![0]);
        assert_eq!(pack(&[], 0), Vec::<u8>::new());
    }

    #[test]
    fn short_octets_give_fewer_septets() {
        assert_eq!(unpack(&[0xC1, 0xE1], 5, 0), vec![0x41, 0x43]);
        assert_eq!(unpack(&[], 5, 3), Vec::<u8>::new());
        assert_eq!(unpack(&[0xFF], 3, 6), Vec::<u8>::new());
    }

    fn gsm_char() -> impl Strategy<Value = char> {
        proptest::sample::select(
            BASIC
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != usize::from(ESC))
                .map(|(_, &c)| c)
                .chain(EXTENSION.iter().map(|&(_, c)| c))
                .collect::<Vec<_>>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn gsm_text_round_trips(chars in proptest::collection::vec(gsm_char(), 0..200), fill in 0u8..7) {
            let text: String = chars.into_iter().collect();
            let septets = to_septets(&text).unwrap();
            prop_assert_eq!(Some(septets.len()), septet_len(&text));
            let packed = pack(&septets, fill);
            prop_assert_eq!(packed.len(), (usize::from(fill) + 7 * septets.len()).div_ceil(8));
            let back = unpack(&packed, septets.len(), fill);
            prop_assert_eq!(from_septets(&back), text);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..100, fill in any::<u8>()) {
            let septets = unpack(&bytes, n, fill);
            prop_assert!(septets.len() <= n);
            let _ = from_septets(&bytes);
        }
    }
}
