//! HMAC-SHA256 signatures on requests both ways, and the signed token of an attempt.
//!
//! A request (a push from the gateway, a callback from the app) carries two headers:
//!
//! ```text
//! X-Tocsin-Timestamp: 1700000000
//! X-Tocsin-Signature: sha256=<hex HMAC-SHA256(key, "1700000000" "." body)>
//! ```
//!
//! The timestamp (Unix seconds) is inside the signed bytes: a signature over the body
//! alone would let anyone who saw one callback replay it later with a fresh timestamp.
//! The receiver refuses timestamps outside its replay window.
//!
//! A token names one attempt to one subscriber and cannot be forged without the key:
//! `<attempt>.<hex subscriber>.<hex first 16 bytes of HMAC(key, "tocsin-webhook-token-v1"
//! 0 attempt 0 subscriber)>`. It rides in every push, in the ack link a person taps
//! (`/ack/<token>`), and in callbacks that answer a given push.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tocsin_core::AttemptId;

/// The header with the request's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "x-tocsin-timestamp";
/// The header with `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-tocsin-signature";
/// Bytes of HMAC kept in a token (128 bits).
const TOKEN_TAG_BYTES: usize = 16;
/// Domain separation: a token's MAC can never be a request signature.
const TOKEN_CONTEXT: &[u8] = b"tocsin-webhook-token-v1\0";

/// The key shared with the app backend. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps key bytes.
    pub fn new(key: Vec<u8>) -> Self {
        Secret(key)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The timestamp header is absent.
    #[error("no X-Tocsin-Timestamp header")]
    NoTimestamp,
    /// The timestamp header is not a number of seconds.
    #[error("X-Tocsin-Timestamp is not Unix seconds")]
    BadTimestamp,
    /// The timestamp is outside the replay window.
    #[error("timestamp {skew_secs} s away from the gateway's clock (window {window_secs} s)")]
    Stale {
        /// Signed seconds from the gateway's clock to the request's timestamp.
        skew_secs: i64,
        /// The window allowed either way.
        window_secs: u64,
    },
    /// The signature header is absent.
    #[error("no X-Tocsin-Signature header")]
    NoSignature,
    /// The signature header is not `sha256=` and 64 hex digits.
    #[error("X-Tocsin-Signature is not sha256=<64 hex digits>")]
    BadSignatureFormat,
    /// The signature does not match the body and timestamp under the shared key.
    #[error("signature does not match")]
    Mismatch,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three dot-separated parts of the right form.
    #[error("not a Tocsin token")]
    Malformed,
    /// The tag does not match the attempt and subscriber under the shared key.
    #[error("token signature does not match")]
    Mismatch,
}

/// `sha256=<hex>` for a request with this timestamp and body.
pub fn sign(secret: &Secret, timestamp_secs: i64, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Checks a request's timestamp against `now_secs` (± `window_secs`) and its signature
/// against the body, in constant time. Returns the timestamp.
pub fn verify(
    secret: &Secret,
    now_secs: i64,
    window_secs: u64,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<i64, SignatureError> {
    let ts_text = timestamp.ok_or(SignatureError::NoTimestamp)?.trim();
    if ts_text.is_empty() || ts_text.len() > 12 || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp);
    }
    let ts: i64 = ts_text.parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = ts.saturating_sub(now_secs);
    if skew.unsigned_abs() > window_secs {
        return Err(SignatureError::Stale {
            skew_secs: skew,
            window_secs,
        });
    }
    let sig = signature.ok_or(SignatureError::NoSignature)?.trim();
    let tag = sig
        .strip_prefix("sha256=")
        .and_then(unhex)
        .filter(|t| t.len() == 32)
        .ok_or(SignatureError::BadSignatureFormat)?;
    let mut mac = secret.mac();
    mac.update(ts_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(ts)
}

/// The token of one attempt to one subscriber.
pub fn token(secret: &Secret, attempt: AttemptId, subscriber: &str) -> String {
    let tag = token_mac(secret, attempt, subscriber)
        .finalize()
        .into_bytes();
    format!(
        "{}.{}.{}",
        attempt.0,
        hex(subscriber.as_bytes()),
        hex(tag.get(..TOKEN_TAG_BYTES).unwrap_or(&[]))
    )
}

/// The attempt and subscriber a token names, once its tag is checked in constant time.
pub fn open_token(secret: &Secret, token: &str) -> Result<(AttemptId, String), TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(a), Some(s), Some(t), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if a.is_empty() || a.len() > 20 || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let attempt = AttemptId(a.parse().map_err(|_| TokenError::Malformed)?);
    let subscriber = unhex(s)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty() && s.chars().count() <= crate::config::MAX_SUBSCRIBER_CHARS)
        .ok_or(TokenError::Malformed)?;
    let tag = unhex(t)
        .filter(|t| t.len() == TOKEN_TAG_BYTES)
        .ok_or(TokenError::Malformed)?;
    token_mac(secret, attempt, &subscriber)
        .verify_truncated_left(&tag)
        .map_err(|_| TokenError::Mismatch)?;
    Ok((attempt, subscriber))
}

fn token_mac(secret: &Secret, attempt: AttemptId, subscriber: &str) -> Hmac<Sha256> {
    let mut mac = secret.mac();
    mac.update(TOKEN_CONTEXT);
    mac.update(attempt.0.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(subscriber.as_bytes());
    mac
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Hex (either case) to bytes; `None` for an odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [h, l] => Some(digit(*h)? << 4 | digit(*l)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::new(b"tocsin-test-secret-0001".to_vec())
    }
    const BODY: &[u8] = br#"{"subscriber":"u-1001","text":"1 K7XY"}"#;
    // Computed independently: python3 hmac.new(key, b"1700000000." + BODY, sha256).
    const VECTOR: &str = "sha256=6337b8d7e70785b18f66c8ea0eafc82fa1298cfdfc73ff2282c5cb68b98099c4";

    #[test]
    fn a_fixed_key_and_body_give_the_known_signature() {
        assert_eq!(sign(&key(), 1_700_000_000, BODY), VECTOR);
        assert_eq!(
            verify(
                &key(),
                1_700_000_100,
                300,
                Some("1700000000"),
                Some(VECTOR),
                BODY
            ),
            Ok(1_700_000_000)
        );
    }

    #[test]
    fn verification_refuses_what_it_must() {
        let v = |ts: Option<&str>, sig: Option<&str>, body: &[u8]| {
            verify(&key(), 1_700_000_000, 300, ts, sig, body)
        };
        assert_eq!(
            v(None, Some(VECTOR), BODY),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            v(Some("17e8"), Some(VECTOR), BODY),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            v(Some("1699999000"), Some(VECTOR), BODY),
            Err(SignatureError::Stale {
                skew_secs: -1000,
                window_secs: 300
            })
        );
        assert_eq!(
            v(Some("1700000000"), None, BODY),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            v(Some("1700000000"), Some("sha1=abcd"), BODY),
            Err(SignatureError::BadSignatureFormat)
        );
        // A different body, another key, or the timestamp moved: no match.
        assert_eq!(
            v(
                Some("1700000000"),
                Some(VECTOR),
                br#"{"subscriber":"u-1002","text":"1 K7XY"}"#
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(Some("1700000001"), Some(VECTOR), BODY),
            Err(SignatureError::Mismatch)
        );
        let other = Secret::new(b"another-secret-0000000".to_vec());
        assert_eq!(
            verify(
                &other,
                1_700_000_000,
                300,
                Some("1700000000"),
                Some(VECTOR),
                BODY
            ),
            Err(SignatureError::Mismatch)
        );
        // Uppercase hex is the same signature.
        let upper = format!("sha256={}", VECTOR[7..].to_uppercase());
        assert!(v(Some("1700000000"), Some(&upper), BODY).is_ok());
    }

    #[test]
    fn tokens_have_the_known_form_and_cannot_be_forged() {
        // Tag computed independently: python3 hmac over b"tocsin-webhook-token-v1\0" b"42\0u-1001".
        let t = token(&key(), AttemptId(42), "u-1001");
        assert_eq!(t, "42.752d31303031.5da85a7bceb5ff6b4e423454a15027a4");
        assert_eq!(open_token(&key(), &t), Ok((AttemptId(42), "u-1001".into())));
        // Any subscriber id the directory takes (128 characters, any script) round trips.
        let long = "张".repeat(128);
        let t2 = token(&key(), AttemptId(u64::MAX), &long);
        assert_eq!(open_token(&key(), &t2), Ok((AttemptId(u64::MAX), long)));
        // Someone else's subscriber, another attempt, a flipped tag bit: refused.
        for forged in [
            "42.752d31303032.5da85a7bceb5ff6b4e423454a15027a4",
            "43.752d31303031.5da85a7bceb5ff6b4e423454a15027a4",
            "42.752d31303031.5da85a7bceb5ff6b4e423454a15027a5",
        ] {
            assert_eq!(
                open_token(&key(), forged),
                Err(TokenError::Mismatch),
                "{forged}"
            );
        }
        for garbage in [
            "",
            "42",
            "42..",
            "x.752d.5d",
            "42.752d31303031.5da8",
            "1.2.3.4",
            "42.zz.5da85a7bceb5ff6b4e423454a15027a4",
        ] {
            assert_eq!(
                open_token(&key(), garbage),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("é1"), None);
    }
}
