//! Bearers and the addresses a person can be reached at on each.

use serde::{Deserialize, Serialize};

/// A way of reaching people. Drivers serve one bearer each; policies name bearers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bearer {
    /// SMS through GSM/LTE modems or satellite handsets.
    Sms,
    /// A voice call that plays the spoken warning and takes DTMF 1 as the ack.
    Voice,
    /// BeiDou RDSS short message.
    Beidou,
    /// Iridium short burst data.
    Sbd,
    /// Meshtastic mesh radio.
    Mesh,
    /// Village loudspeakers (no acks; play confirmation only).
    Speaker,
    /// HTTP push to an app backend.
    App,
}

impl Bearer {
    /// Every bearer, in a stable order for reports and metrics.
    pub const ALL: [Bearer; 7] = [
        Bearer::Sms,
        Bearer::Voice,
        Bearer::Beidou,
        Bearer::Sbd,
        Bearer::Mesh,
        Bearer::Speaker,
        Bearer::App,
    ];

    /// The lowercase name used in config, the API and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Bearer::Sms => "sms",
            Bearer::Voice => "voice",
            Bearer::Beidou => "beidou",
            Bearer::Sbd => "sbd",
            Bearer::Mesh => "mesh",
            Bearer::Speaker => "speaker",
            Bearer::App => "app",
        }
    }

    /// Whether the sender of an inbound message on this bearer can be forged (SMS caller
    /// id can be); such acks must carry the person's code. An app's answer is not: the
    /// app backend signs each callback (HMAC over timestamp and body) and so vouches for
    /// which subscriber answered — the webhook driver says `sender_authenticated` for it.
    pub fn sender_spoofable(self) -> bool {
        matches!(self, Bearer::Sms | Bearer::Voice)
    }
}

impl std::fmt::Display for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phone number in international form: `+` and 7 to 15 digits (E.164).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing but spaces or separators.
    #[error("phone number is empty")]
    Empty,
    /// A character that is not a digit, a leading `+` or a separator (space, `-`).
    #[error("phone number {0:?} contains a character that is not a digit")]
    BadCharacter(String),
    /// Fewer than 7 or more than 15 digits after normalisation.
    #[error("phone number {0:?} must have 7 to 15 digits in international form")]
    BadLength(String),
}

impl PhoneNumber {
    /// Normalises a number as people write it. `+8613800138000`, `008613800138000` and,
    /// with `default_country = "86"`, `13800138000` all become `+8613800138000`.
    pub fn parse(s: &str, default_country: &str) -> Result<Self, PhoneError> {
        let trimmed: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let (intl, digits) = if let Some(rest) = trimmed.strip_prefix('+') {
            (true, rest.to_owned())
        } else if let Some(rest) = trimmed.strip_prefix("00") {
            (true, rest.to_owned())
        } else {
            (false, trimmed.clone())
        };
        if !digits.chars().all(|c| c.is_ascii_digit()) || digits.is_empty() {
            return Err(PhoneError::BadCharacter(s.to_owned()));
        }
        let full = if intl {
            digits
        } else {
            let national = digits.strip_prefix('0').unwrap_or(&digits);
            format!("{default_country}{national}")
        };
        if !(7..=15).contains(&full.len()) {
            return Err(PhoneError::BadLength(s.to_owned()));
        }
        Ok(PhoneNumber(format!("+{full}")))
    }

    /// The number as `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// The number in 8 bytes for the directory's columns: the digit count above bit 50,
    /// the digits as a number below (15 digits need 50 bits). Never 0. `None` for a
    /// number that is not `+` and 7 to 15 ASCII digits (a default country code with
    /// other characters could make one), which the directory keeps as it is.
    pub(crate) fn pack(&self) -> Option<u64> {
        let digits = self.0.strip_prefix('+')?;
        if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: u64 = digits.parse().ok()?;
        Some(((digits.len() as u64) << PACK_SHIFT) | value)
    }

    /// `PhoneNumber::parse(s, default_country)` then [`PhoneNumber::pack`], without
    /// allocating: the loader's path for a million rows. `None` whenever that would give
    /// `None` (a bad number, or one that does not pack); the caller then parses the
    /// slow way for the error or the unpacked number.
    pub(crate) fn parse_packed(s: &str, default_country: &str) -> Option<u64> {
        // What `parse` keeps after dropping separators; a packable number has at most
        // 17 such bytes ("00" and 15 digits), so anything longer is refused anyway.
        let mut kept = [0u8; 17];
        let mut n = 0;
        for b in s.bytes() {
            if matches!(b, b' ' | b'-' | b'(' | b')') {
                continue;
            }
            *kept.get_mut(n)? = b;
            n += 1;
        }
        let kept = kept.get(..n)?;
        let (intl, digits) = if let Some(rest) = kept.strip_prefix(b"+") {
            (true, rest)
        } else if let Some(rest) = kept.strip_prefix(b"00") {
            (true, rest)
        } else {
            (false, kept)
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let (country, national): (&[u8], &[u8]) = if intl {
            (&[], digits)
        } else {
            (
                default_country.as_bytes(),
                digits.strip_prefix(b"0").unwrap_or(digits),
            )
        };
        let len = country.len() + national.len();
        if !(7..=15).contains(&len) || !country.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = country
            .iter()
            .chain(national)
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        Some(((len as u64) << PACK_SHIFT) | value)
    }

    /// The number [`PhoneNumber::pack`] packed; `None` for 0 or anything it never makes.
    pub(crate) fn unpack(packed: u64) -> Option<PhoneNumber> {
        let len = usize::try_from(packed >> PACK_SHIFT).ok()?;
        let value = packed & ((1 << PACK_SHIFT) - 1);
        if !(7..=15).contains(&len) || value >= 10u64.pow(len as u32) {
            return None;
        }
        Some(PhoneNumber(format!("+{value:0len$}")))
    }
}

/// Bits of a packed phone number that hold its digits (10^15 < 2^50).
const PACK_SHIFT: u32 = 50;

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneError;
    fn try_from(s: String) -> Result<Self, PhoneError> {
        // Stored and API forms are already international; a bare national number is
        // refused here rather than guessed.
        if !s.starts_with('+') {
            return Err(PhoneError::BadCharacter(s));
        }
        PhoneNumber::parse(&s, "")
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one person can be reached on one bearer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Address {
    /// A mobile or satellite phone number: SMS and voice.
    Phone(PhoneNumber),
    /// A BeiDou RDSS card number.
    BeidouCard(String),
    /// An Iridium SBD modem IMEI.
    SbdImei(String),
    /// A Meshtastic node number.
    MeshNode(u32),
    /// An app push target (an opaque subscriber id at the app backend).
    App(String),
    /// A loudspeaker group as the speaker driver names it (`[devices.X] groups[].name`):
    /// a multicast group many speakers join, or one unicast speaker.
    Speaker(String),
}

impl Address {
    /// The bearers this address can be used on.
    pub fn bearers(&self) -> &'static [Bearer] {
        match self {
            Address::Phone(_) => &[Bearer::Sms, Bearer::Voice],
            Address::BeidouCard(_) => &[Bearer::Beidou],
            Address::SbdImei(_) => &[Bearer::Sbd],
            Address::MeshNode(_) => &[Bearer::Mesh],
            Address::App(_) => &[Bearer::App],
            Address::Speaker(_) => &[Bearer::Speaker],
        }
    }

    /// Whether this address can be used on `bearer`.
    pub fn serves(&self, bearer: Bearer) -> bool {
        self.bearers().contains(&bearer)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Phone(p) => write!(f, "{p}"),
            Address::BeidouCard(c) => write!(f, "bd:{c}"),
            Address::SbdImei(i) => write!(f, "sbd:{i}"),
            Address::MeshNode(n) => write!(f, "mesh:!{n:08x}"),
            Address::App(a) => write!(f, "app:{a}"),
            Address::Speaker(g) => write!(f, "speaker:{g}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_normalise_to_international_form() {
        for s in [
            "+8613800138000",
            "008613800138000",
            "13800138000",
            "138-0013-8000",
        ] {
            assert_eq!(
                PhoneNumber::parse(s, "86").unwrap().as_str(),
                "+8613800138000",
                "{s}"
            );
        }
        assert_eq!(
            PhoneNumber::parse("010 6512 3456", "86").unwrap().as_str(),
            "+861065123456"
        );
        assert!(matches!(
            PhoneNumber::parse("", "86"),
            Err(PhoneError::Empty)
        ));
        assert!(matches!(
            PhoneNumber::parse("13x", "86"),
            Err(PhoneError::BadCharacter(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("+12", "86"),
            Err(PhoneError::BadLength(_))
        ));
    }

    #[test]
    fn phone_numbers_pack_into_eight_bytes_and_back() {
        for s in [
            "+8613800138000",
            "+0000000",
            "+1234567",
            "+999999999999999",
            "+000000000000001",
            "+8618800000000",
        ] {
            let p = PhoneNumber(s.to_owned());
            let packed = p.pack().unwrap();
            assert_ne!(packed, 0);
            assert_eq!(PhoneNumber::unpack(packed), Some(p), "{s}");
        }
        // Leading zeros are kept apart by the digit count.
        let a = PhoneNumber("+0012345".to_owned()).pack();
        let b = PhoneNumber("+00012345".to_owned()).pack();
        assert_ne!(a, b);
        // What parse could never make does not pack.
        assert_eq!(PhoneNumber("+86a1234567".to_owned()).pack(), None);
        assert_eq!(PhoneNumber("8613800138000".to_owned()).pack(), None);
        assert_eq!(PhoneNumber::unpack(0), None);
        assert_eq!(PhoneNumber::unpack(7 << PACK_SHIFT | 10_000_000), None);
        assert_eq!(PhoneNumber::unpack(16 << PACK_SHIFT), None);
        assert_eq!(PhoneNumber::unpack(u64::MAX), None);
    }

    proptest::proptest! {
        /// The loader's allocation-free parse is `parse` then `pack`, for any text
        /// made of the characters phone numbers are written with, and any country.
        #[test]
        fn packed_parse_is_parse_then_pack(
            s in "[0-9+() -]{0,22}|(\\+|00)?[0-9]{5,16}|[0-9a+]{0,18}",
            country in "[0-9]{0,4}|8a",
        ) {
            let slow = PhoneNumber::parse(&s, &country).ok().and_then(|p| p.pack());
            proptest::prop_assert_eq!(PhoneNumber::parse_packed(&s, &country), slow);
            if let Some(packed) = slow {
                proptest::prop_assert_eq!(
                    PhoneNumber::unpack(packed),
                    PhoneNumber::parse(&s, &country).ok()
                );
            }
        }
    }

    #[test]
    fn packed_parse_agrees_on_everyday_and_odd_numbers() {
        for (s, c) in [
            ("13800138000", "86"),
            ("+86 138-0013-8000", "86"),
            ("0086(138)00138000", "86"),
            ("010 6512 3456", "86"),
            ("0", "86"),
            ("+", "86"),
            ("00", "86"),
            ("+1234567890123456", "86"),
            ("1380013800０", "86"),
            ("13800138000", "8a"),
            ("1234567", ""),
            ("01234567", ""),
            ("  ", "86"),
        ] {
            assert_eq!(
                PhoneNumber::parse_packed(s, c),
                PhoneNumber::parse(s, c).ok().and_then(|p| p.pack()),
                "{s:?} {c:?}"
            );
        }
    }

    #[test]
    fn addresses_serialise_tagged() {
        let a = Address::Phone(PhoneNumber::parse("+8613800138000", "86").unwrap());
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(j, r#"{"kind":"phone","value":"+8613800138000"}"#);
        assert_eq!(serde_json::from_str::<Address>(&j).unwrap(), a);
        assert!(serde_json::from_str::<Address>(r#"{"kind":"phone","value":"138"}"#).is_err());
        let g = Address::Speaker("village0".into());
        let j = serde_json::to_string(&g).unwrap();
        assert_eq!(j, r#"{"kind":"speaker","value":"village0"}"#);
        assert_eq!(serde_json::from_str::<Address>(&j).unwrap(), g);
        assert_eq!(g.bearers(), &[Bearer::Speaker]);
        assert!(g.serves(Bearer::Speaker) && !g.serves(Bearer::Sms));
        assert_eq!(g.to_string(), "speaker:village0");
    }
}
