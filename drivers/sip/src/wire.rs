//! SIP messages (RFC 3261 §7): a parsed form with [`parse`] and [`emit`] that mirror each
//! other.
//!
//! Over UDP one datagram holds one message, but the parser follows the workspace rule
//! anyway: `Ok(None)` means "not enough bytes yet" (no blank line after the headers, or a
//! body shorter than its `Content-Length`), and it returns how many bytes it consumed.
//! Folded header lines (a line starting with space or tab continues the previous one) are
//! joined, compact header names (`i`, `v`, `f`, `t`, `m`, `l`, `c`, ...) are expanded to
//! their full names, and everything a trunk can get wrong is a [`ParseError`] naming what.

use std::fmt;

/// Longest header section accepted; a UDP datagram is at most 64 KiB anyway.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted (an SDP is a few hundred bytes).
pub const MAX_BODY: usize = 16 * 1024;

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The header section is longer than [`MAX_HEAD`] without a blank line.
    #[error("header section longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// The header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// The first line is neither `METHOD uri SIP/2.0` nor `SIP/2.0 code reason`.
    #[error("bad start line {0:?}")]
    BadStartLine(String),
    /// The status code is not a number from 100 to 699.
    #[error("bad status code {0:?}")]
    BadStatus(String),
    /// A header line has no colon or an empty or invalid name.
    #[error("bad header line {0:?}")]
    BadHeader(String),
    /// A continuation line comes before any header.
    #[error("folded line {0:?} continues no header")]
    OrphanFold(String),
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// `Content-Length` is not a number or is larger than [`MAX_BODY`].
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// `CSeq` is not `<number> <method>`.
    #[error("bad CSeq {0:?}")]
    BadCSeq(String),
}

/// A SIP method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Start a call.
    Invite,
    /// Confirm a final response to an INVITE.
    Ack,
    /// End a call.
    Bye,
    /// Stop a pending INVITE.
    Cancel,
    /// Bind an address of record to a contact.
    Register,
    /// Ask for capabilities (also used as a keep-alive).
    Options,
    /// Mid-call information, here DTMF relay (`application/dtmf-relay`).
    Info,
    /// Any other token.
    Other(String),
}

impl Method {
    /// The method of a token (case-sensitive, as RFC 3261 says).
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The token on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`.
    Request {
        /// The method.
        method: Method,
        /// The Request-URI, as written.
        uri: String,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code, 100–699.
        code: u16,
        /// Reason phrase, as written.
        reason: String,
    },
}

/// One header; `name` is the full canonical form even when the wire used a compact one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Canonical name, e.g. `Call-ID`.
    pub name: String,
    /// Value with folding undone and surrounding whitespace trimmed.
    pub value: String,
}

/// A SIP request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in wire order, except `Content-Length`, which [`emit`] derives from the body.
    pub headers: Vec<Header>,
    /// The body (an SDP, a DTMF relay), possibly empty.
    pub body: Vec<u8>,
}

/// Compact forms (RFC 3261 §7.3.3 and the IANA registry) and canonical spellings.
const NAMES: &[(&str, Option<&str>)] = &[
    ("Accept", None),
    ("Allow", None),
    ("Authorization", None),
    ("Call-ID", Some("i")),
    ("Contact", Some("m")),
    ("Content-Encoding", Some("e")),
    ("Content-Length", Some("l")),
    ("Content-Type", Some("c")),
    ("CSeq", None),
    ("Event", Some("o")),
    ("Expires", None),
    ("From", Some("f")),
    ("Max-Forwards", None),
    ("Proxy-Authenticate", None),
    ("Proxy-Authorization", None),
    ("Record-Route", None),
    ("Refer-To", Some("r")),
    ("Route", None),
    ("Subject", Some("s")),
    ("Supported", Some("k")),
    ("To", Some("t")),
    ("User-Agent", None),
    ("Via", Some("v")),
    ("WWW-Authenticate", None),
];

/// The canonical spelling of a header name (compact forms expanded, case fixed).
pub fn canonical_name(name: &str) -> String {
    for (full, compact) in NAMES {
        if full.eq_ignore_ascii_case(name) || compact.is_some_and(|c| c.eq_ignore_ascii_case(name))
        {
            return (*full).to_owned();
        }
    }
    name.to_owned()
}

/// `token` characters of RFC 3261 §25.1.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Finds the end of the header section: the index just past the blank line.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf.get(i) == Some(&b'\n') {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Parses one message from the front of `buf`. See the module documentation.
pub fn parse(buf: &[u8]) -> Result<Option<(Message, usize)>, ParseError> {
    // RFC 3261 §7.5: CRLFs before the start line are keep-alives and are ignored.
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let rest = buf.get(skip..).unwrap_or(&[]);
    let Some((head_len, body_start)) = head_end(rest) else {
        if rest.len() > MAX_HEAD {
            return Err(ParseError::HeadTooLong);
        }
        return Ok(None);
    };
    if head_len > MAX_HEAD {
        return Err(ParseError::HeadTooLong);
    }
    let head = std::str::from_utf8(rest.get(..head_len).unwrap_or(&[]))
        .map_err(|_| ParseError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let start = parse_start_line(first)?;

    let mut headers: Vec<Header> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::OrphanFold(line.to_owned()));
            };
            let more = line.trim();
            if !more.is_empty() {
                if !last.value.is_empty() {
                    last.value.push(' ');
                }
                last.value.push_str(more);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError::BadHeader(line.to_owned()));
        };
        let name = name.trim_end();
        if !is_token(name) {
            return Err(ParseError::BadHeader(line.to_owned()));
        }
        headers.push(Header {
            name: canonical_name(name),
            value: value.trim().to_owned(),
        });
    }

    let body_avail = rest.get(body_start..).unwrap_or(&[]);
    let body_len = match headers.iter().position(|h| h.name == "Content-Length") {
        Some(i) => {
            let v = headers.remove(i).value;
            let n: usize = v
                .parse()
                .map_err(|_| ParseError::BadContentLength(v.clone()))?;
            if n > MAX_BODY {
                return Err(ParseError::BadContentLength(v));
            }
            // Duplicates must agree or the message is ambiguous.
            if let Some(j) = headers.iter().position(|h| h.name == "Content-Length") {
                let dup = headers.remove(j).value;
                if dup != v {
                    return Err(ParseError::BadContentLength(format!("{v} and {dup}")));
                }
            }
            n
        }
        // Without Content-Length a datagram's body runs to its end (RFC 3261 §18.3).
        None => body_avail.len().min(MAX_BODY),
    };
    let Some(body) = body_avail.get(..body_len) else {
        return Ok(None);
    };
    let msg = Message {
        start,
        headers,
        body: body.to_vec(),
    };
    for required in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if msg.header(required).is_none() {
            return Err(ParseError::Missing(required));
        }
    }
    msg.cseq()?;
    Ok(Some((msg, skip + body_start + body_len)))
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::BadStartLine(line.chars().take(120).collect());
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let n: u16 = code
            .parse()
            .map_err(|_| ParseError::BadStatus(code.to_owned()))?;
        if !(100..=699).contains(&n) || code.len() != 3 {
            return Err(ParseError::BadStatus(code.to_owned()));
        }
        return Ok(StartLine::Response {
            code: n,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if version != "SIP/2.0" || !is_token(method) || uri.is_empty() {
        return Err(bad());
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri.to_owned(),
    })
}

/// Writes `msg` in canonical form, with a `Content-Length` computed from the body.
pub fn emit(msg: &Message, out: &mut Vec<u8>) {
    match &msg.start {
        StartLine::Request { method, uri } => {
            out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes());
        }
        StartLine::Response { code, reason } => {
            out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
        }
    }
    for h in msg.headers.iter().filter(|h| h.name != "Content-Length") {
        out.extend_from_slice(format!("{}: {}\r\n", h.name, h.value).as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", msg.body.len()).as_bytes());
    out.extend_from_slice(&msg.body);
}

impl Message {
    /// A request with no headers yet.
    pub fn request(method: Method, uri: impl Into<String>) -> Message {
        Message {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with no headers yet.
    pub fn response(code: u16, reason: impl Into<String>) -> Message {
        Message {
            start: StartLine::Response {
                code,
                reason: reason.into(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header (builder style).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Message {
        self.push(name, value);
        self
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    /// The message as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        emit(self, &mut out);
        out
    }

    /// The first value of a header (name in any case or compact form).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, in order.
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, Method), ParseError> {
        let v = self.header("CSeq").ok_or(ParseError::Missing("CSeq"))?;
        let bad = || ParseError::BadCSeq(v.to_owned());
        let (n, m) = v.trim().split_once(char::is_whitespace).ok_or_else(bad)?;
        let n: u32 = n.parse().map_err(|_| bad())?;
        let m = m.trim();
        if !is_token(m) {
            return Err(bad());
        }
        Ok((n, Method::from_token(m)))
    }

    /// The `branch` parameter of the top Via.
    pub fn via_branch(&self) -> Option<&str> {
        self.header("Via").and_then(|v| param(v, "branch"))
    }

    /// The `tag` parameter of `To`.
    pub fn to_tag(&self) -> Option<&str> {
        self.header("To").and_then(|v| param(v, "tag"))
    }

    /// The `tag` parameter of `From`.
    pub fn from_tag(&self) -> Option<&str> {
        self.header("From").and_then(|v| param(v, "tag"))
    }
}

/// A header parameter (`;name=value`) after the URI of a name-addr or after a Via's
/// sent-by; `None` when absent. Parameters inside `<...>` belong to the URI and are skipped.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let tail = match value.rfind('>') {
        Some(i) => value.get(i + 1..)?,
        None => value,
    };
    tail.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The URI of a name-addr (`"Name" <sip:x@y>;tag=1` → `sip:x@y`) or of a bare addr-spec.
pub fn uri_of(value: &str) -> &str {
    if let Some(open) = value.find('<') {
        let inner = value.get(open + 1..).unwrap_or("");
        return inner.split('>').next().unwrap_or("").trim();
    }
    value.split(';').next().unwrap_or("").trim()
}

/// The host and port of a `sip:` URI (`sip:user@host:port;params`), if it names one.
pub fn uri_host_port(uri: &str) -> Option<(&str, Option<u16>)> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let rest = rest.split([';', '?']).next()?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host, port));
    }
    match hostport.split_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((hostport, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:13800138000@trunk.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
From: <sip:gw@10.0.0.5>;tag=1928301774\r\n\
To: <sip:13800138000@trunk.example>\r\n\
Call-ID: a84b4c76e66710@10.0.0.5\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:gw@10.0.0.5:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn the_brief_invite_parses_and_emits_the_same_bytes() {
        let (m, used) = parse(INVITE.as_bytes()).unwrap().unwrap();
        assert_eq!(used, INVITE.len());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.call_id(), "a84b4c76e66710@10.0.0.5");
        assert_eq!(m.cseq().unwrap(), (1, Method::Invite));
        assert_eq!(m.via_branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(m.from_tag(), Some("1928301774"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.body, b"v=0\n");
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), INVITE);
    }

    #[test]
    fn folded_headers_and_compact_forms_are_normalised() {
        let raw = "SIP/2.0 180 Ringing\r\n\
v: SIP/2.0/UDP 10.0.0.5:5060\r\n ;branch=z9hG4bKx\r\n\
f: <sip:gw@10.0.0.5>;tag=a\r\n\
t: <sip:1@h>\r\n\t;tag=b\r\n\
i: abc\r\n\
CSEQ: 7 INVITE\r\n\
l: 0\r\n\r\n";
        let (m, used) = parse(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(used, raw.len());
        assert_eq!(m.status(), Some(180));
        assert_eq!(
            m.header("Via"),
            Some("SIP/2.0/UDP 10.0.0.5:5060 ;branch=z9hG4bKx")
        );
        assert_eq!(m.via_branch(), Some("z9hG4bKx"));
        assert_eq!(m.to_tag(), Some("b"));
        assert_eq!(m.header("i"), Some("abc"));
        assert_eq!(m.headers[3].name, "Call-ID");
        assert_eq!(m.cseq().unwrap(), (7, Method::Invite));
        let out = String::from_utf8(m.to_bytes()).unwrap();
        assert!(out.contains("Call-ID: abc\r\n"), "{out}");
        assert!(out.contains("To: <sip:1@h> ;tag=b\r\n"), "{out}");
    }

    #[test]
    fn incomplete_messages_ask_for_more_and_keepalives_are_skipped() {
        assert_eq!(parse(b"").unwrap(), None);
        assert_eq!(parse(&INVITE.as_bytes()[..40]).unwrap(), None);
        // Body shorter than Content-Length.
        assert_eq!(parse(&INVITE.as_bytes()[..INVITE.len() - 1]).unwrap(), None);
        let with_ka = format!("\r\n\r\n{INVITE}");
        let (_, used) = parse(with_ka.as_bytes()).unwrap().unwrap();
        assert_eq!(used, with_ka.len());
    }

    #[test]
    fn malformed_messages_get_a_clear_error() {
        let cases: &[(&str, ParseError)] = &[
            ("HELLO\r\n\r\n", ParseError::BadStartLine("HELLO".into())),
            (
                "INVITE sip:x SIP/3.0\r\n\r\n",
                ParseError::BadStartLine("INVITE sip:x SIP/3.0".into()),
            ),
            ("SIP/2.0 99 Low\r\n\r\n", ParseError::BadStatus("99".into())),
            ("SIP/2.0 abc X\r\n\r\n", ParseError::BadStatus("abc".into())),
            (
                "SIP/2.0 200 OK\r\nNo colon here\r\n\r\n",
                ParseError::BadHeader("No colon here".into()),
            ),
            (
                "SIP/2.0 200 OK\r\n folded\r\n\r\n",
                ParseError::OrphanFold(" folded".into()),
            ),
            (
                "SIP/2.0 200 OK\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCSeq: 1 INVITE\r\n\r\n",
                ParseError::Missing("Call-ID"),
            ),
            (
                "SIP/2.0 200 OK\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: one INVITE\r\n\r\n",
                ParseError::BadCSeq("one INVITE".into()),
            ),
            (
                "SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n",
                ParseError::BadContentLength("-1".into()),
            ),
            (
                "SIP/2.0 200 OK\r\nContent-Length: 99999999\r\n\r\n",
                ParseError::BadContentLength("99999999".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw.as_bytes()), Err(want.clone()), "{raw:?}");
            assert!(!want.to_string().is_empty());
        }
        assert_eq!(
            parse(b"SIP/2.0 200 \xff\xfe\r\n\r\n"),
            Err(ParseError::NotUtf8)
        );
        assert_eq!(
            parse(&vec![b'a'; MAX_HEAD + 1]),
            Err(ParseError::HeadTooLong)
        );
    }

    #[test]
    fn uris_and_params_are_extracted() {
        assert_eq!(
            uri_of("\"Gw\" <sip:gw@1.2.3.4:5070;transport=udp>;tag=9"),
            "sip:gw@1.2.3.4:5070;transport=udp"
        );
        assert_eq!(uri_of("sip:a@b;tag=1"), "sip:a@b");
        assert_eq!(param("<sip:a@b;tag=no>;tag=yes", "tag"), Some("yes"));
        assert_eq!(param("<sip:a@b;tag=no>", "tag"), None);
        assert_eq!(
            uri_host_port("sip:gw@1.2.3.4:5070;transport=udp"),
            Some(("1.2.3.4", Some(5070)))
        );
        assert_eq!(
            uri_host_port("sip:trunk.example"),
            Some(("trunk.example", None))
        );
        assert_eq!(uri_host_port("sip:[::1]:5060"), Some(("::1", Some(5060))));
        assert_eq!(uri_host_port("sip:a@h:notaport"), None);
        assert_eq!(uri_host_port("tel:123"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn any_prefix_of_a_message_is_incomplete_not_an_error(cut in 0usize..INVITE.len()) {
            proptest::prop_assert_eq!(parse(&INVITE.as_bytes()[..cut]), Ok(None));
        }
    }
}
