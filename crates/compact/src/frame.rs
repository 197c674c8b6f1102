//! The frames and their byte layouts (documented with examples in
//! `docs/compact-encoding.md`).
//!
//! Every frame starts with one header byte: the format version in the high nibble (1) and
//! the frame type in the low nibble. Multi-byte integers are big-endian; "varint" is
//! unsigned LEB128 (at most 5 bytes) and signed values are zigzag-mapped first. Text has no
//! length prefix: it runs to the end of the frame, which the bearer delimits.
//!
//! Decoding is total: any byte string gives a frame or a [`DecodeError`], never a panic,
//! and a frame that decodes re-encodes to a frame that decodes to the same value.

use tocsin_core::{AckCode, AlertId, Grade, Timestamp};

use crate::text::{self, TextEncoding};

/// The format version written in every header.
pub const VERSION: u8 = 1;

/// Longest frame encoded or accepted, in bytes (a BDS-3 regional message is about 1750).
pub const MAX_FRAME: usize = 2048;

/// 2024-01-01T00:00:00Z: the epoch of compact times (24-bit minutes last until 2055).
pub const EPOCH: Timestamp = Timestamp(1_704_067_200_000);

/// Most vertices in a polygon area.
pub const MAX_VERTICES: usize = 64;

/// Longest named-area reference, person id or custom hazard kind, in bytes.
pub const MAX_NAME: usize = 32;

/// Frame types (low nibble of the header).
const T_ALERT: u8 = 1;
const T_ACKS: u8 = 2;
const T_CANCEL: u8 = 3;
const T_UPDATE: u8 = 4;
const T_TEXT: u8 = 5;

/// A 24-bit handle on an alert, derived from its full id with a hash: short enough for a
/// BeiDou message, wide enough that the alerts active at one time do not collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShortAlertId(u32);

impl ShortAlertId {
    /// "No particular alert": acks to a plain text message carry this.
    pub const UNKNOWN: ShortAlertId = ShortAlertId(0);

    /// Wraps a value; `None` if it does not fit 24 bits.
    pub fn new(v: u32) -> Option<Self> {
        (v < 1 << 24).then_some(ShortAlertId(v))
    }

    /// The short id of a full alert id (first 24 bits of a SHA-256, never 0).
    pub fn derive(id: &AlertId) -> Self {
        use sha2::{Digest, Sha256};
        let d = Sha256::new()
            .chain_update(b"tocsin-short-alert-v1\0")
            .chain_update(id.as_str().as_bytes())
            .finalize();
        let v = u32::from_be_bytes([0, d[0], d[1], d[2]]);
        ShortAlertId(if v == 0 { 1 } else { v })
    }

    /// The value, below 2^24.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for ShortAlertId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:06x}", self.0)
    }
}

/// A minute since [`EPOCH`], in 24 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minute(u32);

impl Minute {
    /// Wraps a minute count; `None` beyond 24 bits.
    pub fn new(v: u32) -> Option<Self> {
        (v < 1 << 24).then_some(Minute(v))
    }

    /// The first whole minute at or after `t` (an expiry is never brought forward);
    /// `None` before the epoch or after 2055.
    pub fn ceil(t: Timestamp) -> Option<Self> {
        let ms = t.as_millis().checked_sub(EPOCH.as_millis())?;
        if ms < 0 {
            return None;
        }
        let m = u32::try_from((ms + 59_999) / 60_000).ok()?;
        Minute::new(m)
    }

    /// The minute as a timestamp.
    pub fn timestamp(self) -> Timestamp {
        Timestamp(EPOCH.as_millis() + i64::from(self.0) * 60_000)
    }

    /// The count of minutes since the epoch.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A point in units of 1e-5 degree (about 1.1 m), WGS84.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Point {
    /// Longitude × 1e5, within ±18,000,000.
    pub lon_e5: i32,
    /// Latitude × 1e5, within ±9,000,000.
    pub lat_e5: i32,
}

impl Point {
    /// Rounds degrees to the grid; `None` outside the globe or not finite.
    pub fn from_degrees(lon: f64, lat: f64) -> Option<Self> {
        if !(lon.is_finite() && lat.is_finite()) || lon.abs() > 180.0 || lat.abs() > 90.0 {
            return None;
        }
        // In range by the check above, so the casts are exact after rounding.
        Some(Point {
            lon_e5: (lon * 1e5).round() as i32,
            lat_e5: (lat * 1e5).round() as i32,
        })
    }

    /// `[lon, lat]` in degrees.
    pub fn degrees(self) -> [f64; 2] {
        [f64::from(self.lon_e5) / 1e5, f64::from(self.lat_e5) / 1e5]
    }

    fn valid(self) -> bool {
        self.lon_e5.unsigned_abs() <= 18_000_000 && self.lat_e5.unsigned_abs() <= 9_000_000
    }
}

/// Where an alert applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AreaRef {
    /// Not carried (the receiver applies it to everyone it serves).
    Unspecified,
    /// A named area both ends know (a village, hazard point, reservoir id), 1–32 bytes.
    Named(String),
    /// A small polygon, 3–64 vertices, implicitly closed.
    Polygon(Vec<Point>),
    /// A circle.
    Circle {
        /// Its centre.
        center: Point,
        /// Its radius in metres.
        radius_m: u32,
    },
}

/// A warning for the people a receiver serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertFrame {
    /// Which alert.
    pub id: ShortAlertId,
    /// Its grade.
    pub grade: Grade,
    /// Hazard kind (`flash_flood`, `landslide`, ...): well-known kinds take one byte,
    /// others up to 32 bytes of text.
    pub kind: String,
    /// A drill: every bearer marks it as an exercise.
    pub exercise: bool,
    /// When it stops applying.
    pub expires: Option<Minute>,
    /// Where it applies.
    pub area: AreaRef,
    /// The recipient's ack code, when the frame goes to one person.
    pub code: Option<AckCode>,
    /// What people must do.
    pub text: String,
}

/// One acknowledgement relayed by a node (e.g. a field kit) for a person it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckEntry {
    /// The alert answered ([`ShortAlertId::UNKNOWN`] for a plain text message).
    pub alert: ShortAlertId,
    /// The person who answered (the district's person id), up to 32 bytes.
    pub person: String,
    /// The code they gave.
    pub code: AckCode,
    /// Seconds after the batch's base time at which they answered.
    pub offset_secs: u32,
}

/// A batch of acks from one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckBatch {
    /// The IMEI of the modem that sent it, when the bearer does not say (Iridium SBD).
    pub origin: Option<Imei>,
    /// Base time, seconds since [`EPOCH`].
    pub base_secs: u32,
    /// 1 to 255 acks.
    pub acks: Vec<AckEntry>,
}

impl AckBatch {
    /// The base time as a timestamp.
    pub fn base(&self) -> Timestamp {
        Timestamp(EPOCH.as_millis() + i64::from(self.base_secs) * 1000)
    }

    /// When one of its acks was given.
    pub fn time_of(&self, ack: &AckEntry) -> Timestamp {
        Timestamp(self.base().as_millis() + i64::from(ack.offset_secs) * 1000)
    }
}

/// An alert withdrawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelFrame {
    /// Which alert.
    pub id: ShortAlertId,
    /// Whether the cancelled alert was a drill.
    pub exercise: bool,
    /// Why, or what people may do now (may be empty).
    pub text: String,
}

/// An alert replaced by a revised one (new grade, text, area or expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateFrame {
    /// The alert it replaces.
    pub replaces: ShortAlertId,
    /// The revised alert, with its own short id.
    pub alert: AlertFrame,
}

/// A plain text message (what a driver sends when it is handed only text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextFrame {
    /// The text.
    pub text: String,
}

/// An IMEI: 15 digits, carried in 7 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imei(u64);

impl Imei {
    /// Parses 15 digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(Imei)
    }

    /// Wraps a number below 10^15.
    pub fn new(v: u64) -> Option<Self> {
        (v < 1_000_000_000_000_000).then_some(Imei(v))
    }
}

impl std::fmt::Display for Imei {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:015}", self.0)
    }
}

/// One compact frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A warning.
    Alert(AlertFrame),
    /// Acks relayed by a node.
    Acks(AckBatch),
    /// A warning withdrawn.
    Cancel(CancelFrame),
    /// A warning revised.
    Update(UpdateFrame),
    /// Plain text.
    Text(TextFrame),
}

/// Why a frame cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A named area, person id or hazard kind is empty where it must not be, or over 32 bytes.
    #[error("{0}: must be 1 to 32 bytes")]
    BadName(&'static str),
    /// A polygon with fewer than 3 or more than 64 vertices.
    #[error("polygon: {0} vertices, must be 3 to 64")]
    BadPolygon(usize),
    /// A point off the globe.
    #[error("point outside WGS84 bounds")]
    BadPoint,
    /// An ack batch with no acks or more than 255.
    #[error("ack batch: {0} acks, must be 1 to 255")]
    BadBatch(usize),
    /// The encoded frame is longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is longer than {MAX_FRAME}")]
    TooLong(usize),
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty frame")]
    Empty,
    /// A header with a version this decoder does not know.
    #[error("unsupported compact version {0}")]
    Version(u8),
    /// A frame type this decoder does not know.
    #[error("unknown frame type {0}")]
    Type(u8),
    /// The frame ends inside a field.
    #[error("frame ends inside {0}")]
    Truncated(&'static str),
    /// A field holds a value outside its range.
    #[error("bad {0}")]
    Invalid(&'static str),
    /// The text is not valid in its encoding.
    #[error("text is not valid {0:?}")]
    Text(TextEncoding),
    /// Bytes left over after a frame that has a fixed end.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// The frame is longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is longer than {MAX_FRAME}")]
    TooLong(usize),
}

/// Well-known hazard kinds and their one-byte codes (0 is the empty kind, 0xFF a custom one).
const KINDS: [&str; 18] = [
    "flood",
    "flash_flood",
    "landslide",
    "debris_flow",
    "rainstorm",
    "reservoir",
    "waterlogging",
    "geological",
    "earthquake",
    "typhoon",
    "gale",
    "forest_fire",
    "blizzard",
    "hail",
    "thunderstorm",
    "heat",
    "cold_wave",
    "dam_break",
];
const KIND_CUSTOM: u8 = 0xFF;

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        match self {
            Frame::Alert(a) => {
                out.push(header(T_ALERT));
                encode_alert(a, &mut out)?;
            }
            Frame::Update(u) => {
                out.push(header(T_UPDATE));
                push_u24(&mut out, u.replaces.0);
                encode_alert(&u.alert, &mut out)?;
            }
            Frame::Cancel(c) => {
                out.push(header(T_CANCEL));
                push_u24(&mut out, c.id.0);
                let (enc, bytes) = text::encode_text(&c.text);
                out.push(u8::from(c.exercise) << 5 | enc_bit(enc));
                out.extend_from_slice(&bytes);
            }
            Frame::Text(t) => {
                out.push(header(T_TEXT));
                let (enc, bytes) = text::encode_text(&t.text);
                out.push(enc_bit(enc));
                out.extend_from_slice(&bytes);
            }
            Frame::Acks(b) => {
                out.push(header(T_ACKS));
                if b.acks.is_empty() || b.acks.len() > 255 {
                    return Err(EncodeError::BadBatch(b.acks.len()));
                }
                out.push(u8::from(b.origin.is_some()));
                if let Some(Imei(v)) = b.origin {
                    out.extend_from_slice(&v.to_be_bytes()[1..]);
                }
                out.extend_from_slice(&b.base_secs.to_be_bytes());
                out.push(b.acks.len() as u8);
                for a in &b.acks {
                    push_u24(&mut out, a.alert.0);
                    out.extend_from_slice(&pack_code(a.code));
                    push_varint(&mut out, a.offset_secs);
                    push_name(&mut out, &a.person, "person", true)?;
                }
            }
        }
        if out.len() > MAX_FRAME {
            return Err(EncodeError::TooLong(out.len()));
        }
        Ok(out)
    }

    /// Reads one frame that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        if bytes.len() > MAX_FRAME {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        let h = r.u8("header").map_err(|_| DecodeError::Empty)?;
        if h >> 4 != VERSION {
            return Err(DecodeError::Version(h >> 4));
        }
        match h & 0x0F {
            T_ALERT => Ok(Frame::Alert(decode_alert(&mut r)?)),
            T_UPDATE => {
                let replaces = ShortAlertId(r.u24("replaced id")?);
                Ok(Frame::Update(UpdateFrame {
                    replaces,
                    alert: decode_alert(&mut r)?,
                }))
            }
            T_CANCEL => {
                let id = ShortAlertId(r.u24("alert id")?);
                let flags = r.u8("flags")?;
                if flags & !0x30 != 0 {
                    return Err(DecodeError::Invalid("cancel flags"));
                }
                Ok(Frame::Cancel(CancelFrame {
                    id,
                    exercise: flags & 0x20 != 0,
                    text: r.text(flags)?,
                }))
            }
            T_TEXT => {
                let flags = r.u8("flags")?;
                if flags & !0x10 != 0 {
                    return Err(DecodeError::Invalid("text flags"));
                }
                Ok(Frame::Text(TextFrame {
                    text: r.text(flags)?,
                }))
            }
            T_ACKS => {
                let flags = r.u8("flags")?;
                if flags & !0x01 != 0 {
                    return Err(DecodeError::Invalid("ack batch flags"));
                }
                let origin = if flags & 1 != 0 {
                    let b = r.take(7, "origin")?;
                    let mut v = [0u8; 8];
                    v[1..].copy_from_slice(b);
                    Some(Imei::new(u64::from_be_bytes(v)).ok_or(DecodeError::Invalid("origin"))?)
                } else {
                    None
                };
                let base = r.take(4, "base time")?;
                let base_secs = u32::from_be_bytes([base[0], base[1], base[2], base[3]]);
                let n = r.u8("ack count")?;
                if n == 0 {
                    return Err(DecodeError::Invalid("ack count"));
                }
                let mut acks = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let alert = ShortAlertId(r.u24("ack alert id")?);
                    let code = r.code()?;
                    let offset_secs = r.varint("ack time offset")?;
                    let person = r.name("person", true)?;
                    acks.push(AckEntry {
                        alert,
                        person,
                        code,
                        offset_secs,
                    });
                }
                r.end()?;
                Ok(Frame::Acks(AckBatch {
                    origin,
                    base_secs,
                    acks,
                }))
            }
            t => Err(DecodeError::Type(t)),
        }
    }

    /// The encoded length, or `None` if it cannot be encoded.
    pub fn encoded_len(&self) -> Option<usize> {
        self.encode().ok().map(|b| b.len())
    }
}

/// Splits acks into as few batches as fit `budget` bytes each (in order). An ack that
/// does not fit even alone is an error: `BadBatch(0)` if `budget` is too small for any.
pub fn pack_acks(
    origin: Option<Imei>,
    base_secs: u32,
    acks: &[AckEntry],
    budget: usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut frames = Vec::new();
    let mut batch: Vec<AckEntry> = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    for a in acks {
        batch.push(a.clone());
        let bytes = Frame::Acks(AckBatch {
            origin,
            base_secs,
            acks: batch.clone(),
        })
        .encode()?;
        if bytes.len() <= budget && batch.len() <= 255 {
            last = Some(bytes);
            continue;
        }
        // Close the batch without this ack and start a new one with it.
        batch.pop();
        match last.take() {
            Some(done) => frames.push(done),
            None => return Err(EncodeError::BadBatch(0)),
        }
        batch = vec![a.clone()];
        let alone = Frame::Acks(AckBatch {
            origin,
            base_secs,
            acks: batch.clone(),
        })
        .encode()?;
        if alone.len() > budget {
            return Err(EncodeError::BadBatch(0));
        }
        last = Some(alone);
    }
    frames.extend(last);
    Ok(frames)
}

fn header(t: u8) -> u8 {
    VERSION << 4 | t
}

fn enc_bit(e: TextEncoding) -> u8 {
    match e {
        TextEncoding::Gbk => 0,
        TextEncoding::Ucs2 => 0x10,
    }
}

fn grade_bits(g: Grade) -> u8 {
    match g {
        Grade::Blue => 0,
        Grade::Yellow => 1,
        Grade::Orange => 2,
        Grade::Red => 3,
    }
}

fn push_u24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes()[1..]);
}

fn push_varint(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn unzigzag(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn push_name(
    out: &mut Vec<u8>,
    s: &str,
    what: &'static str,
    may_be_empty: bool,
) -> Result<(), EncodeError> {
    if s.len() > MAX_NAME || (s.is_empty() && !may_be_empty) {
        return Err(EncodeError::BadName(what));
    }
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn push_point(out: &mut Vec<u8>, p: Point) -> Result<(), EncodeError> {
    if !p.valid() {
        return Err(EncodeError::BadPoint);
    }
    out.extend_from_slice(&p.lon_e5.to_be_bytes());
    out.extend_from_slice(&p.lat_e5.to_be_bytes());
    Ok(())
}

/// Four characters of the 19-letter alphabet as one base-19 number in 17 bits.
fn pack_code(code: AckCode) -> [u8; 3] {
    let alphabet = tocsin_core::ackcode::ALPHABET;
    let mut v: u32 = 0;
    for b in code.as_str().bytes() {
        let idx = alphabet.iter().position(|a| *a == b).unwrap_or(0) as u32;
        v = v * alphabet.len() as u32 + idx;
    }
    let b = v.to_be_bytes();
    [b[1], b[2], b[3]]
}

fn unpack_code(b: [u8; 3]) -> Option<AckCode> {
    let alphabet = tocsin_core::ackcode::ALPHABET;
    let radix = alphabet.len() as u32;
    let mut v = u32::from_be_bytes([0, b[0], b[1], b[2]]);
    if v >= radix.pow(4) {
        return None;
    }
    let mut chars = [0u8; 4];
    for slot in chars.iter_mut().rev() {
        *slot = *alphabet.get((v % radix) as usize)?;
        v /= radix;
    }
    AckCode::parse(std::str::from_utf8(&chars).ok()?)
}

fn encode_alert(a: &AlertFrame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    push_u24(out, a.id.0);
    let (enc, text) = text::encode_text(&a.text);
    let area_bits = match a.area {
        AreaRef::Unspecified => 0,
        AreaRef::Named(_) => 1,
        AreaRef::Polygon(_) => 2,
        AreaRef::Circle { .. } => 3,
    };
    out.push(
        grade_bits(a.grade) << 6
            | u8::from(a.exercise) << 5
            | enc_bit(enc)
            | area_bits << 2
            | u8::from(a.code.is_some()) << 1
            | u8::from(a.expires.is_some()),
    );
    if a.kind.is_empty() {
        out.push(0);
    } else if let Some(i) = KINDS.iter().position(|k| *k == a.kind) {
        out.push(i as u8 + 1);
    } else {
        out.push(KIND_CUSTOM);
        push_name(out, &a.kind, "kind", false)?;
    }
    if let Some(m) = a.expires {
        push_u24(out, m.0);
    }
    match &a.area {
        AreaRef::Unspecified => {}
        AreaRef::Named(n) => push_name(out, n, "area", false)?,
        AreaRef::Polygon(pts) => {
            if !(3..=MAX_VERTICES).contains(&pts.len()) {
                return Err(EncodeError::BadPolygon(pts.len()));
            }
            out.push(pts.len() as u8);
            let mut prev: Option<Point> = None;
            for p in pts {
                match prev {
                    None => push_point(out, *p)?,
                    Some(q) => {
                        if !p.valid() {
                            return Err(EncodeError::BadPoint);
                        }
                        // Valid points differ by at most 36,000,000: no overflow.
                        push_varint(out, zigzag(p.lon_e5 - q.lon_e5));
                        push_varint(out, zigzag(p.lat_e5 - q.lat_e5));
                    }
                }
                prev = Some(*p);
            }
        }
        AreaRef::Circle { center, radius_m } => {
            push_point(out, *center)?;
            push_varint(out, *radius_m);
        }
    }
    if let Some(c) = a.code {
        out.extend_from_slice(&pack_code(c));
    }
    out.extend_from_slice(&text);
    Ok(())
}

fn decode_alert(r: &mut Reader<'_>) -> Result<AlertFrame, DecodeError> {
    let id = ShortAlertId(r.u24("alert id")?);
    let flags = r.u8("flags")?;
    let grade = match flags >> 6 {
        0 => Grade::Blue,
        1 => Grade::Yellow,
        2 => Grade::Orange,
        _ => Grade::Red,
    };
    let kind = match r.u8("kind")? {
        0 => String::new(),
        KIND_CUSTOM => r.name("kind", false)?,
        k => KINDS
            .get(usize::from(k) - 1)
            .ok_or(DecodeError::Invalid("kind"))?
            .to_string(),
    };
    let expires = if flags & 1 != 0 {
        Some(Minute(r.u24("expiry")?))
    } else {
        None
    };
    let area = match (flags >> 2) & 3 {
        0 => AreaRef::Unspecified,
        1 => AreaRef::Named(r.name("area", false)?),
        2 => {
            let n = usize::from(r.u8("vertex count")?);
            if !(3..=MAX_VERTICES).contains(&n) {
                return Err(DecodeError::Invalid("vertex count"));
            }
            let mut pts = Vec::with_capacity(n);
            let mut p = r.point()?;
            pts.push(p);
            for _ in 1..n {
                let dlon = unzigzag(r.varint("vertex")?);
                let dlat = unzigzag(r.varint("vertex")?);
                p = Point {
                    lon_e5: p
                        .lon_e5
                        .checked_add(dlon)
                        .ok_or(DecodeError::Invalid("vertex"))?,
                    lat_e5: p
                        .lat_e5
                        .checked_add(dlat)
                        .ok_or(DecodeError::Invalid("vertex"))?,
                };
                if !p.valid() {
                    return Err(DecodeError::Invalid("vertex"));
                }
                pts.push(p);
            }
            AreaRef::Polygon(pts)
        }
        _ => AreaRef::Circle {
            center: r.point()?,
            radius_m: r.varint("radius")?,
        },
    };
    let code = if flags & 2 != 0 {
        Some(r.code()?)
    } else {
        None
    };
    let text = r.text(flags)?;
    Ok(AlertFrame {
        id,
        grade,
        kind,
        exercise: flags & 0x20 != 0,
        expires,
        area,
        code,
        text,
    })
}

/// A cursor over untrusted bytes: every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u24(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(3, what)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(v).map_err(|_| DecodeError::Invalid(what));
            }
        }
        Err(DecodeError::Invalid(what))
    }

    fn point(&mut self) -> Result<Point, DecodeError> {
        let b = self.take(8, "point")?;
        let p = Point {
            lon_e5: i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            lat_e5: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        };
        if p.valid() {
            Ok(p)
        } else {
            Err(DecodeError::Invalid("point"))
        }
    }

    fn name(&mut self, what: &'static str, may_be_empty: bool) -> Result<String, DecodeError> {
        let n = usize::from(self.u8(what)?);
        if n > MAX_NAME || (n == 0 && !may_be_empty) {
            return Err(DecodeError::Invalid(what));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid(what))
    }

    fn code(&mut self) -> Result<AckCode, DecodeError> {
        let b = self.take(3, "ack code")?;
        unpack_code([b[0], b[1], b[2]]).ok_or(DecodeError::Invalid("ack code"))
    }

    /// The rest of the frame as text, in the encoding flag bit 4 names.
    fn text(&mut self, flags: u8) -> Result<String, DecodeError> {
        let enc = if flags & 0x10 != 0 {
            TextEncoding::Ucs2
        } else {
            TextEncoding::Gbk
        };
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        text::decode_text(enc, rest).ok_or(DecodeError::Text(enc))
    }

    fn end(&self) -> Result<(), DecodeError> {
        match self.buf.len().saturating_sub(self.pos) {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 30 Chinese characters: a standard short warning.
    const WARNING_30: &str = "沙峪村山洪红色预警沿河住户立即向高处转移关闭涉水道路注意安全";

    fn code(s: &str) -> AckCode {
        AckCode::parse(s).unwrap()
    }

    fn red_alert(text: &str) -> AlertFrame {
        AlertFrame {
            id: ShortAlertId::new(0x00A1B2).unwrap(),
            grade: Grade::Red,
            kind: "flash_flood".into(),
            exercise: false,
            expires: Minute::new(1_000_000),
            area: AreaRef::Named("V023".into()),
            code: Some(code("K7XT")),
            text: text.into(),
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn alert_bytes_match_the_documented_example() {
        let bytes = Frame::Alert(red_alert("山洪")).encode().unwrap();
        // header, id, flags (red, GBK, named, code, expiry), kind 2, expiry, "V023", code, text.
        assert_eq!(
            hex(&bytes),
            "11 00 A1 B2 C7 02 0F 42 40 04 56 30 32 33 00 B9 BD C9 BD BA E9"
        );
        assert_eq!(
            Frame::decode(&bytes).unwrap(),
            Frame::Alert(red_alert("山洪"))
        );
    }

    #[test]
    fn ack_batch_bytes_match_the_documented_example() {
        let batch = AckBatch {
            origin: Imei::parse("300234010753370"),
            base_secs: 60_000_000,
            acks: vec![
                AckEntry {
                    alert: ShortAlertId::new(0x00A1B2).unwrap(),
                    person: "p17".into(),
                    code: code("K7XT"),
                    offset_secs: 300,
                },
                AckEntry {
                    alert: ShortAlertId::new(0x00A1B2).unwrap(),
                    person: "p18".into(),
                    code: code("AAAA"),
                    offset_secs: 0,
                },
            ],
        };
        let bytes = Frame::Acks(batch.clone()).encode().unwrap();
        assert_eq!(
            hex(&bytes),
            "12 01 01 11 0F AD 8F 79 5A 03 93 87 00 02 00 A1 B2 00 B9 BD AC 02 03 70 31 37 \
             00 A1 B2 00 00 00 00 03 70 31 38"
        );
        let Frame::Acks(back) = Frame::decode(&bytes).unwrap() else {
            panic!("not an ack batch");
        };
        assert_eq!(back, batch);
        assert_eq!(
            back.time_of(&back.acks[0]).as_millis(),
            EPOCH.as_millis() + 60_000_300_000
        );
    }

    #[test]
    fn text_cancel_and_update_round_trip() {
        for f in [
            Frame::Text(TextFrame {
                text: "【红色预警】山洪 回复1 K7XT".into(),
            }),
            Frame::Cancel(CancelFrame {
                id: ShortAlertId::new(5).unwrap(),
                exercise: true,
                text: "解除".into(),
            }),
            Frame::Update(UpdateFrame {
                replaces: ShortAlertId::new(5).unwrap(),
                alert: AlertFrame {
                    area: AreaRef::Polygon(vec![
                        Point::from_degrees(116.0, 40.0).unwrap(),
                        Point::from_degrees(116.01, 40.0).unwrap(),
                        Point::from_degrees(116.01, 40.01).unwrap(),
                    ]),
                    ..red_alert("升级")
                },
            }),
        ] {
            let b = f.encode().unwrap();
            assert_eq!(Frame::decode(&b).unwrap(), f);
        }
        assert_eq!(
            hex(&Frame::Text(TextFrame { text: "hi".into() })
                .encode()
                .unwrap()),
            "15 00 68 69"
        );
    }

    #[test]
    fn a_standard_30_character_warning_fits_one_bds2_level3_message() {
        assert_eq!(WARNING_30.chars().count(), 30);
        let n = Frame::Alert(red_alert(WARNING_30)).encode().unwrap().len();
        assert!(n <= crate::BDS2_LEVEL3_BYTES, "{n} bytes");
        assert_eq!(n, 77);
    }

    #[test]
    fn a_120_character_warning_fits_one_sbd_mt_message() {
        let text: String = WARNING_30.chars().cycle().take(120).collect();
        let n = Frame::Alert(red_alert(&text)).encode().unwrap().len();
        assert!(n <= crate::SBD_MT_BYTES, "{n} bytes");
        assert_eq!(n, 257);
        // 340 bytes of MO carry 160 Chinese characters.
        let long: String = WARNING_30.chars().cycle().take(160).collect();
        let n = Frame::Alert(red_alert(&long)).encode().unwrap().len();
        assert!(n <= crate::SBD_MO_BYTES, "{n} bytes");
    }

    #[test]
    fn a_90_character_warning_with_a_polygon_fits_one_meshtastic_packet() {
        // Two bytes a Chinese character: 233 bytes cannot hold 120 of them in any
        // encoding, so the mesh budget is about 90 characters with a small polygon, 108 with a named area.
        let text: String = WARNING_30.chars().cycle().take(90).collect();
        let mut alert = red_alert(&text);
        alert.area = AreaRef::Polygon(
            (0..8)
                .map(|i| {
                    let a = f64::from(i) * std::f64::consts::TAU / 8.0;
                    Point::from_degrees(116.5 + 0.02 * a.cos(), 40.4 + 0.02 * a.sin()).unwrap()
                })
                .collect(),
        );
        let n = Frame::Alert(alert).encode().unwrap().len();
        assert!(n <= crate::MESHTASTIC_BYTES, "{n} bytes");
        let text: String = WARNING_30.chars().cycle().take(108).collect();
        let n = Frame::Alert(red_alert(&text)).encode().unwrap().len();
        assert!(n <= crate::MESHTASTIC_BYTES, "{n} bytes");
    }

    #[test]
    fn acks_pack_into_batches_that_fit() {
        let acks: Vec<AckEntry> = (0..60)
            .map(|i| AckEntry {
                alert: ShortAlertId::new(9).unwrap(),
                person: format!("person-{i:04}"),
                code: code("K7XT"),
                offset_secs: i * 7,
            })
            .collect();
        let frames = pack_acks(Imei::parse("300234010753370"), 1000, &acks, 270).unwrap();
        assert!(frames.len() >= 3);
        let mut back = Vec::new();
        for f in &frames {
            assert!(f.len() <= 270);
            let Frame::Acks(b) = Frame::decode(f).unwrap() else {
                panic!()
            };
            back.extend(b.acks);
        }
        assert_eq!(back, acks);
        assert_eq!(pack_acks(None, 0, &acks, 10), Err(EncodeError::BadBatch(0)));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(Frame::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Frame::decode(&[0x21]), Err(DecodeError::Version(2)));
        assert_eq!(Frame::decode(&[0x1E]), Err(DecodeError::Type(14)));
        assert_eq!(
            Frame::decode(&[0x11, 0, 0]),
            Err(DecodeError::Truncated("alert id"))
        );
        // Kind code beyond the table.
        assert_eq!(
            Frame::decode(&[0x11, 0, 0, 1, 0, 0x40]),
            Err(DecodeError::Invalid("kind"))
        );
        // Ack code 19^4 is one past the last code.
        assert_eq!(
            Frame::decode(&[0x11, 0, 0, 1, 0x02, 0, 0x01, 0xFD, 0x11]),
            Err(DecodeError::Invalid("ack code"))
        );
        // Odd UCS2 text.
        assert_eq!(
            Frame::decode(&[0x15, 0x10, 0x4E]),
            Err(DecodeError::Text(TextEncoding::Ucs2))
        );
        // A varint that never ends.
        assert_eq!(
            Frame::decode(&[
                0x11, 0, 0, 1, 0x0C, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF
            ]),
            Err(DecodeError::Invalid("radius"))
        );
        assert_eq!(
            Frame::decode(&[0x12, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xAA]),
            Err(DecodeError::Trailing(1))
        );
    }

    #[test]
    fn short_ids_are_24_bit_and_stable() {
        let a = ShortAlertId::derive(&AlertId::from("0193a0c2-7d1e-7000-8000-000000000001"));
        assert_eq!(
            a,
            ShortAlertId::derive(&AlertId::from("0193a0c2-7d1e-7000-8000-000000000001"))
        );
        assert!(a.get() > 0 && a.get() < 1 << 24);
        assert_eq!(ShortAlertId::new(1 << 24), None);
        assert_eq!(Minute::ceil(EPOCH), Minute::new(0));
        assert_eq!(
            Minute::ceil(Timestamp(EPOCH.as_millis() + 1)),
            Minute::new(1)
        );
        assert_eq!(Minute::ceil(Timestamp(0)), None);
    }

    #[test]
    fn the_fuzz_seeds_are_valid_frames() {
        for (name, bytes) in [
            (
                "alert-red-named",
                &include_bytes!("../fuzz/corpus/decode/alert-red-named")[..],
            ),
            (
                "alert-circle",
                &include_bytes!("../fuzz/corpus/decode/alert-circle")[..],
            ),
            (
                "acks-two",
                &include_bytes!("../fuzz/corpus/decode/acks-two")[..],
            ),
            (
                "text-hi",
                &include_bytes!("../fuzz/corpus/decode/text-hi")[..],
            ),
            (
                "cancel-drill",
                &include_bytes!("../fuzz/corpus/decode/cancel-drill")[..],
            ),
        ] {
            let f = Frame::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(f.encode().unwrap(), bytes, "{name}");
        }
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ,.!]{0,40}",
            "[\u{4e00}-\u{9fa5}，。！]{0,60}",
            any::<String>().prop_map(|s| s.chars().take(50).collect()),
        ]
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_\u{4e00}-\u{4e10}-]{1,10}"
    }

    fn arb_code() -> impl Strategy<Value = AckCode> {
        proptest::collection::vec(proptest::sample::select(tocsin_core::ackcode::ALPHABET), 4)
            .prop_map(|v| AckCode::parse(std::str::from_utf8(&v).unwrap()).unwrap())
    }

    fn arb_point() -> impl Strategy<Value = Point> {
        (-18_000_000i32..=18_000_000, -9_000_000i32..=9_000_000)
            .prop_map(|(lon_e5, lat_e5)| Point { lon_e5, lat_e5 })
    }

    fn arb_area() -> impl Strategy<Value = AreaRef> {
        prop_oneof![
            Just(AreaRef::Unspecified),
            arb_name().prop_map(AreaRef::Named),
            proptest::collection::vec(arb_point(), 3..=64).prop_map(AreaRef::Polygon),
            (arb_point(), any::<u32>())
                .prop_map(|(center, radius_m)| AreaRef::Circle { center, radius_m }),
        ]
    }

    fn arb_alert() -> impl Strategy<Value = AlertFrame> {
        (
            0u32..1 << 24,
            proptest::sample::select(Grade::ALL.to_vec()),
            prop_oneof![
                Just(String::new()),
                Just("landslide".to_owned()),
                arb_name()
            ],
            any::<bool>(),
            proptest::option::of(0u32..1 << 24),
            arb_area(),
            proptest::option::of(arb_code()),
            arb_text(),
        )
            .prop_map(
                |(id, grade, kind, exercise, exp, area, code, text)| AlertFrame {
                    id: ShortAlertId(id),
                    grade,
                    kind,
                    exercise,
                    expires: exp.map(Minute),
                    area,
                    code,
                    text,
                },
            )
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let ack = (0u32..1 << 24, "[a-z0-9-]{0,12}", arb_code(), any::<u32>()).prop_map(
            |(a, person, code, offset_secs)| AckEntry {
                alert: ShortAlertId(a),
                person,
                code,
                offset_secs,
            },
        );
        prop_oneof![
            arb_alert().prop_map(Frame::Alert),
            (0u32..1 << 24, arb_alert()).prop_map(|(r, alert)| Frame::Update(UpdateFrame {
                replaces: ShortAlertId(r),
                alert
            })),
            (0u32..1 << 24, any::<bool>(), arb_text()).prop_map(|(id, exercise, text)| {
                Frame::Cancel(CancelFrame {
                    id: ShortAlertId(id),
                    exercise,
                    text,
                })
            }),
            arb_text().prop_map(|text| Frame::Text(TextFrame { text })),
            (
                proptest::option::of(0u64..1_000_000_000_000_000),
                any::<u32>(),
                proptest::collection::vec(ack, 1..20)
            )
                .prop_map(|(o, base_secs, acks)| Frame::Acks(AckBatch {
                    origin: o.map(Imei),
                    base_secs,
                    acks
                })),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(f in arb_frame()) {
            let bytes = f.encode().unwrap();
            prop_assert_eq!(Frame::decode(&bytes).unwrap(), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_re_encodes(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(f) = Frame::decode(&bytes) {
                let again = f.encode().unwrap();
                prop_assert_eq!(Frame::decode(&again).unwrap(), f);
            }
        }

        #[test]
        fn valid_frames_with_flipped_bytes_never_panic(
            f in arb_frame(), at in any::<usize>(), xor in 1u8..,
        ) {
            let mut bytes = f.encode().unwrap();
            let i = at % bytes.len();
            bytes[i] ^= xor;
            let _ = Frame::decode(&bytes);
            bytes.truncate(i);
            let _ = Frame::decode(&bytes);
        }
    }

    /// Found by the `decode` fuzz target: "GBK" text with a GB18030 four-byte code among
    /// ASCII decoded, then re-encoded as UCS2 past [`MAX_FRAME`].
    #[test]
    fn gbk_text_that_would_not_re_encode_is_refused() {
        let mut bytes = vec![0x15, 0x00, 0x90, 0x30, 0x81, 0x30];
        bytes.extend(std::iter::repeat_n(b'a', 1500));
        assert_eq!(
            Frame::decode(&bytes),
            Err(DecodeError::Text(TextEncoding::Gbk))
        );
        let crash = [0x15, 0x00, b'h', b'=', 0x90, 0x30, 0x81, 0x30];
        assert_eq!(
            Frame::decode(&crash),
            Err(DecodeError::Text(TextEncoding::Gbk))
        );
        // Canonical GBK still reads.
        let ok = Frame::Text(TextFrame {
            text: "暴雨红色预警 aḿ℉".into(),
        });
        assert_eq!(Frame::decode(&ok.encode().unwrap()), Ok(ok));
    }
}
