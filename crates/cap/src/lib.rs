//! CAP 1.2 intake: upstream systems (weather bureau, hydrology, the national warning
//! release system) push warnings as OASIS CAP 1.2 or the Chinese profile GB/T 35965.1;
//! this crate reads them and says what Tocsin should do.
//!
//! - [`parse`] / [`parse_bytes`]: XML to a [`CapMessage`]. Untrusted input: bounded
//!   ([`MAX_MESSAGE_BYTES`], depth, element count), no DTD, no entity but the five
//!   predefined ones, never a panic; every error names the element at fault.
//! - [`to_alert`]: a message to a [`CapAction`] under a [`CapPolicy`]: a new alert, an
//!   update or cancel of the alert issued under a referenced message, or a refusal
//!   (tests, drafts, unknown severities, geocodes the district cannot place).
//!
//! A message's reference is `sender,identifier,sent`; Tocsin stores it on the alert so
//! a re-pushed message is accepted once and an Update or Cancel finds its alert.

#![warn(missing_docs)]

mod alert;
mod message;
mod time;
mod xml;

pub use alert::{
    AlertDraft, CapAction, CapPolicy, MAX_HEADLINE_CHARS, MAX_KIND_CHARS, MAX_TEXT_CHARS, to_alert,
};
pub use message::{
    Area, CAP_1_2_NAMESPACE, CapMessage, CapTime, Circle, Geocode, Info, LatLon, MsgType,
    NamedValue, Profile, Reference, Scope, Severity, Status,
};

/// Largest message accepted, in bytes: a warning with a detailed multi-village polygon
/// is a few kilobytes; anything near this is a mistake or an attack.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Why a CAP message was refused. Every variant but the size and XML ones names the
/// element at fault as a path, e.g. `alert/info[0]/area[1]/polygon[0]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("the message is {size} bytes, more than the {limit} accepted")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes are not text in an encoding Tocsin reads (UTF-8, or GB 18030/GBK/GB2312
    /// when the XML declaration says so).
    #[error("the message is not readable text: {0}")]
    Encoding(String),
    /// The text is not well-formed XML (or uses an undeclared prefix or unknown entity).
    #[error("not well-formed XML at byte {position}: {message}")]
    Xml {
        /// Byte offset where reading stopped.
        position: u64,
        /// What the reader found.
        message: String,
    },
    /// The message has a document type declaration; none is needed and entities defined
    /// there are how XML bombs work, so it is refused outright.
    #[error("a DOCTYPE (DTD) is not allowed in a CAP message")]
    Dtd,
    /// The message nests too deep or has too many elements.
    #[error("the message is too complex: {message}")]
    TooComplex {
        /// Which bound it crossed.
        message: String,
    },
    /// A required element is absent.
    #[error("{element}: required element is missing")]
    Missing {
        /// Path of the missing element.
        element: String,
    },
    /// An element that may appear once appears more often.
    #[error("{element}: may appear only once")]
    Repeated {
        /// Path of the repeated element.
        element: String,
    },
    /// An element's value is malformed.
    #[error("{element}: {message}")]
    Invalid {
        /// Path of the element.
        element: String,
        /// What is wrong with it.
        message: String,
    },
    /// A well-formed message that Tocsin will not act on (a test, an unknown severity
    /// without a configured grade, a geocode the district cannot place).
    #[error("{element}: {message}")]
    Refused {
        /// Path of the element that decided it.
        element: String,
        /// Why, for the upstream system's operator.
        message: String,
    },
}

impl CapError {
    /// The path of the element at fault, when there is one.
    pub fn element(&self) -> Option<&str> {
        match self {
            CapError::Missing { element }
            | CapError::Repeated { element }
            | CapError::Invalid { element, .. }
            | CapError::Refused { element, .. } => Some(element),
            CapError::TooLarge { .. }
            | CapError::Encoding(_)
            | CapError::Xml { .. }
            | CapError::Dtd
            | CapError::TooComplex { .. } => None,
        }
    }
}

/// Parses a CAP 1.2 or GB/T 35965.1 message.
pub fn parse(xml: &str) -> Result<CapMessage, CapError> {
    if xml.len() > MAX_MESSAGE_BYTES {
        return Err(CapError::TooLarge {
            size: xml.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let tree = xml::read_tree(xml)?;
    message::from_tree(&tree)
}

/// Parses a message as it arrives over HTTP: UTF-8 (with or without a byte-order mark),
/// or GB 18030 and its subsets GBK/GB2312 when the XML declaration names them, as older
/// Chinese release systems send.
pub fn parse_bytes(bytes: &[u8]) -> Result<CapMessage, CapError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CapError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match declared_encoding(bytes).as_deref() {
        None | Some("utf-8" | "utf8") => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| CapError::Encoding(format!("not UTF-8: {e}")))?;
            parse(text)
        }
        Some("gb18030" | "gbk" | "gb2312" | "gb_2312-80" | "cp936") => {
            let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(bytes);
            if had_errors {
                return Err(CapError::Encoding(
                    "not valid GB 18030 as its XML declaration says".into(),
                ));
            }
            parse(&text)
        }
        Some(other) => Err(CapError::Encoding(format!(
            "encoding {other:?} is not supported (use UTF-8)"
        ))),
    }
}

/// The `encoding` of an XML declaration at the very start, lowercased. The declaration
/// is ASCII in every encoding handled here.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = bytes.get(..bytes.len().min(200))?;
    let decl = head.strip_prefix(b"<?xml")?;
    let end = decl.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(decl.get(..end)?).ok()?;
    let rest = decl.get(decl.find("encoding")? + "encoding".len()..)?;
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let value = rest.get(1..)?.split(quote).next()?;
    Some(value.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_declared_encoding() {
        assert_eq!(
            declared_encoding(br#"<?xml version="1.0" encoding="GB2312"?><alert/>"#).as_deref(),
            Some("gb2312")
        );
        assert_eq!(
            declared_encoding(b"<?xml version='1.0' encoding = 'utf-8' ?>").as_deref(),
            Some("utf-8")
        );
        assert_eq!(declared_encoding(br#"<?xml version="1.0"?><alert/>"#), None);
        assert_eq!(declared_encoding(b"<alert/>"), None);
        assert_eq!(declared_encoding(br#"<?xml encoding="x"#), None);
    }

    #[test]
    fn size_is_checked_before_anything_is_read() {
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert_eq!(
            parse(&big),
            Err(CapError::TooLarge {
                size: MAX_MESSAGE_BYTES + 1,
                limit: MAX_MESSAGE_BYTES
            })
        );
        assert!(matches!(
            parse_bytes(big.as_bytes()),
            Err(CapError::TooLarge { .. })
        ));
    }

    #[test]
    fn undecodable_bytes_are_an_encoding_error() {
        assert!(matches!(
            parse_bytes(b"<alert>\xff</alert>"),
            Err(CapError::Encoding(_))
        ));
        assert!(matches!(
            parse_bytes(br#"<?xml version="1.0" encoding="ISO-8859-1"?><alert/>"#),
            Err(CapError::Encoding(m)) if m.contains("iso-8859-1")
        ));
    }
}
