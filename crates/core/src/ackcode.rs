//! One-time ack codes: a keyed hash of (alert, person), four characters from an alphabet
//! without look-alikes, short enough for any packet and easy to type on a keypad.

use crate::ids::{AlertId, PersonId};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Letters and digits no one confuses when reading a small screen or typing in a hurry:
/// no 0/O/D/Q, 1/I/L, 2/Z, 5/S, 8/B, U/V, G/6.
pub const ALPHABET: &[u8] = b"ACEFHJKMNPRTWXY3479";

/// Length of a code in characters.
pub const CODE_LEN: usize = 4;

/// The secret that codes are derived from (from config; never logged).
#[derive(Clone)]
pub struct AckKey(Vec<u8>);

impl AckKey {
    /// Wraps a secret. An empty secret is allowed in tests only by the caller's choice.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        AckKey(secret.into())
    }
}

impl std::fmt::Debug for AckKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckKey(..)")
    }
}

/// A four-character ack code such as `K7QX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AckCode([u8; CODE_LEN]);

impl AckCode {
    /// Derives the code of one person for one alert.
    pub fn derive(key: &AckKey, alert: &AlertId, person: &PersonId) -> AckCode {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0)
            .expect("HMAC accepts keys of any length");
        mac.update(b"tocsin-ack-v1\0");
        mac.update(alert.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(person.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut n = u64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]);
        let mut out = [0u8; CODE_LEN];
        for slot in &mut out {
            let radix = ALPHABET.len() as u64;
            *slot = ALPHABET[(n % radix) as usize];
            n /= radix;
        }
        AckCode(out)
    }

    /// Reads a code as typed: case-insensitive, full-width forms folded to ASCII.
    /// Returns `None` unless it is exactly four characters of the alphabet.
    pub fn parse(s: &str) -> Option<AckCode> {
        let mut out = [0u8; CODE_LEN];
        let mut n = 0;
        for c in s.chars().map(fold_width) {
            let c = c.to_ascii_uppercase();
            if n == CODE_LEN || !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
                return None;
            }
            out[n] = c as u8;
            n += 1;
        }
        (n == CODE_LEN).then_some(AckCode(out))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("????")
    }
}

/// Folds a full-width ASCII form (as Chinese input methods type it) to ASCII.
pub fn fold_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

impl TryFrom<String> for AckCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        AckCode::parse(&s).ok_or_else(|| format!("{s:?} is not an ack code"))
    }
}

impl From<AckCode> for String {
    fn from(c: AckCode) -> String {
        c.as_str().to_owned()
    }
}

impl std::fmt::Display for AckCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_keyed_and_distinct() {
        let k = AckKey::new(b"district-secret".to_vec());
        let a = AlertId::from("alert-1");
        let c1 = AckCode::derive(&k, &a, &PersonId::from("p1"));
        assert_eq!(c1, AckCode::derive(&k, &a, &PersonId::from("p1")));
        assert_ne!(
            c1,
            AckCode::derive(&AckKey::new(b"other".to_vec()), &a, &PersonId::from("p1"))
        );
        let distinct: std::collections::HashSet<_> = (0..200)
            .map(|i| AckCode::derive(&k, &a, &PersonId(format!("p{i}"))))
            .collect();
        assert!(
            distinct.len() > 190,
            "codes collide too often: {}",
            distinct.len()
        );
        assert!(c1.as_str().bytes().all(|b| ALPHABET.contains(&b)));
    }

    #[test]
    fn parse_folds_case_and_full_width() {
        let c = AckCode::parse("K7XT").unwrap();
        assert_eq!(AckCode::parse("k7xt"), Some(c));
        assert_eq!(AckCode::parse("Ｋ７ＸＴ"), Some(c));
        assert_eq!(AckCode::parse("K7X"), None);
        assert_eq!(AckCode::parse("K7XTT"), None);
        assert_eq!(AckCode::parse("K0XT"), None, "0 is not in the alphabet");
    }
}
