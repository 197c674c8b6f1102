//! BeiDou text sentences in both directions, both dialects.
//!
//! Framing (protocol brief §1.2): `$` + a five-letter address (`CC` host→terminal or `BD`
//! terminal→host, then a three-letter id) + `,`-separated fields + `*` + two hex digits +
//! `\r\n`. The checksum is the XOR of every byte strictly between `$` and `*`, over the
//! raw bytes as sent. [`parse`] is a pure function of the bytes buffered so far: it gives
//! the same sentences whether input arrives whole, byte by byte or split anywhere.
//!
//! Device bytes are untrusted. Bytes before a `$`, a sentence cut short by a new `$`, a
//! sentence without `*hh`, one whose checksum does not match, and runs longer than
//! [`MAX_SENTENCE`] come back as [`Malformed`] with the number of bytes to skip: the
//! caller counts and reports them and never acts on their content.
//!
//! On top of the framing, [`Message`] gives the sentences Tocsin speaks a typed form with
//! `parse`/`to_sentence` that mirror each other. Field layouts follow the brief; where it
//! marks a layout unconfirmed the raw fields are kept so nothing is guessed away.

use std::fmt;

/// Longest sentence accepted. A BDS-3 regional message of 14,000 bits is 3,500 hex digits;
/// anything much longer is a terminal babbling (or the wrong baud rate).
pub const MAX_SENTENCE: usize = 8192;

/// The two families of text sentences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// BDS-2 "2.1": `$CCTXA` / `$BDTXR` / `$CCICA` / `$BDBSI`.
    Bds2,
    /// BDS-3: `$CCTCQ` / `$BDTCI` / `$CCICR` / `$BDPWI`.
    Bds3,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Bds2 => "BDS-2 2.1",
            Dialect::Bds3 => "BDS-3",
        })
    }
}

/// One framed sentence: its address and its raw fields (checksum already verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    /// Talker and id, e.g. `CCTXA`.
    pub address: String,
    /// The fields after the address, as raw bytes (mode-0 content may be GB2312).
    pub fields: Vec<Vec<u8>>,
}

impl Sentence {
    /// A sentence from ASCII fields.
    pub fn new(address: &str, fields: &[&str]) -> Self {
        Sentence {
            address: address.to_owned(),
            fields: fields.iter().map(|f| f.as_bytes().to_vec()).collect(),
        }
    }

    /// Field `i` (0 = the first after the address) as text, if present and UTF-8.
    pub fn field(&self, i: usize) -> Option<&str> {
        self.fields.get(i).and_then(|f| std::str::from_utf8(f).ok())
    }

    /// The sentence as it goes on the wire, lossily as text (for evidence and logs).
    pub fn to_text(&self) -> String {
        let mut b = Vec::new();
        emit(self, &mut b);
        String::from_utf8_lossy(b.strip_suffix(b"\r\n").unwrap_or(&b)).into_owned()
    }
}

/// Bytes that do not form a sentence; skip `len` bytes and report them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {} bytes", raw.len())]
pub struct Malformed {
    /// How many bytes of the input to skip.
    pub len: usize,
    /// The offending bytes (without the line end), for the `Unrecognized` report.
    pub raw: Vec<u8>,
    /// Why they were refused.
    pub reason: MalformedReason,
}

/// Why bytes were refused as a sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedReason {
    /// Bytes outside any sentence (before a `$`).
    Garbage,
    /// A new `$` came before the line end: the sentence was cut short.
    Truncated,
    /// No `*hh` at the end of the line.
    NoChecksum,
    /// The checksum does not match the bytes.
    BadChecksum,
    /// The address is not 5 ASCII letters or digits.
    BadAddress,
    /// Control bytes inside the sentence.
    ControlBytes,
    /// No line end within [`MAX_SENTENCE`] bytes.
    TooLong,
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MalformedReason::Garbage => "bytes outside a sentence",
            MalformedReason::Truncated => "sentence cut short",
            MalformedReason::NoChecksum => "no checksum",
            MalformedReason::BadChecksum => "bad checksum",
            MalformedReason::BadAddress => "bad sentence address",
            MalformedReason::ControlBytes => "control bytes in sentence",
            MalformedReason::TooLong => "sentence too long",
        })
    }
}

fn is_eol(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// The XOR of `body` (the bytes strictly between `$` and `*`).
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, b| acc ^ b)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Parses the next sentence. `Ok(None)`: not enough bytes yet (nothing consumed).
/// `Ok(Some((sentence, n)))`: drop `n` bytes. `Err(m)`: drop `m.len` bytes and report them.
pub fn parse(buf: &[u8]) -> Result<Option<(Sentence, usize)>, Malformed> {
    let start = buf.iter().take_while(|b| is_eol(**b)).count();
    let rest = buf.get(start..).unwrap_or(&[]);
    if rest.is_empty() {
        return Ok(None);
    }
    // Look no further than MAX_SENTENCE + 1 bytes so the verdict does not depend on how
    // much was buffered beyond that.
    let window = &rest[..rest.len().min(MAX_SENTENCE + 1)];
    let too_long = |rest: &[u8]| Malformed {
        len: start + MAX_SENTENCE,
        raw: rest.get(..MAX_SENTENCE).unwrap_or(rest).to_vec(),
        reason: MalformedReason::TooLong,
    };
    if window.first() != Some(&b'$') {
        return match window.iter().position(|b| *b == b'$' || is_eol(*b)) {
            Some(n) if n <= MAX_SENTENCE => Err(Malformed {
                len: start + n,
                raw: window.get(..n).unwrap_or(&[]).to_vec(),
                reason: MalformedReason::Garbage,
            }),
            Some(_) => Err(too_long(rest)),
            None if rest.len() > MAX_SENTENCE => Err(too_long(rest)),
            None => Ok(None),
        };
    }
    let after = window.get(1..).unwrap_or(&[]);
    let end = match after.iter().position(|b| *b == b'$' || is_eol(*b)) {
        Some(k) if k < MAX_SENTENCE => k + 1,
        Some(_) => return Err(too_long(rest)),
        None if rest.len() > MAX_SENTENCE => return Err(too_long(rest)),
        None => return Ok(None),
    };
    let line = window.get(..end).unwrap_or(&[]);
    if window.get(end) == Some(&b'$') {
        return Err(Malformed {
            len: start + end,
            raw: line.to_vec(),
            reason: MalformedReason::Truncated,
        });
    }
    // A `\r` as the last byte so far: wait for the next byte to know whether it is a
    // `\r\n`, so that how the bytes were split never changes what a frame consumed
    // (terminals end sentences with `\r\n`; a lone `\n` left over is skipped as a
    // leading line end next time).
    if window.get(end) == Some(&b'\r') && window.get(end + 1).is_none() && rest.len() <= end + 1 {
        return Ok(None);
    }
    let crlf = window.get(end) == Some(&b'\r') && window.get(end + 1) == Some(&b'\n');
    let consumed = start + end + 1 + usize::from(crlf);
    check_line(line)
        .map(|s| Some((s, consumed)))
        .map_err(|reason| Malformed {
            len: consumed,
            raw: line.to_vec(),
            reason,
        })
}

/// Checks one line (from `$`, without its line end) and splits it into fields.
fn check_line(line: &[u8]) -> Result<Sentence, MalformedReason> {
    let star = line
        .iter()
        .rposition(|b| *b == b'*')
        .ok_or(MalformedReason::NoChecksum)?;
    let body = line.get(1..star).unwrap_or(&[]);
    let given = match line.get(star + 1..) {
        Some([h, l]) => match (hex_digit(*h), hex_digit(*l)) {
            (Some(h), Some(l)) => (h << 4) | l,
            _ => return Err(MalformedReason::NoChecksum),
        },
        _ => return Err(MalformedReason::NoChecksum),
    };
    if checksum(body) != given {
        return Err(MalformedReason::BadChecksum);
    }
    if body.iter().any(|b| *b < 0x20 || *b == 0x7F) {
        return Err(MalformedReason::ControlBytes);
    }
    let mut parts = body.split(|b| *b == b',');
    let address = parts.next().unwrap_or(&[]);
    if address.len() != 5 || !address.iter().all(u8::is_ascii_alphanumeric) {
        return Err(MalformedReason::BadAddress);
    }
    Ok(Sentence {
        address: String::from_utf8_lossy(address).into_owned(),
        fields: parts.map(<[u8]>::to_vec).collect(),
    })
}

/// Writes a sentence with its checksum and line end.
pub fn emit(s: &Sentence, out: &mut Vec<u8>) {
    let mut body = s.address.as_bytes().to_vec();
    for f in &s.fields {
        body.push(b',');
        body.extend_from_slice(f);
    }
    out.push(b'$');
    out.extend_from_slice(&body);
    out.extend_from_slice(format!("*{:02X}\r\n", checksum(&body)).as_bytes());
}

/// A receive buffer in front of [`parse`]: append bytes as they come, take sentences out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the port.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next sentence or refused run of bytes, if complete.
    pub fn next_sentence(&mut self) -> Option<Result<Sentence, Malformed>> {
        // Line ends between sentences are dropped first, so how the input was split cannot
        // change what a refused run's length counts, and an endless run of them cannot grow
        // the buffer.
        let eols = self.buf.iter().take_while(|b| is_eol(**b)).count();
        self.buf.drain(..eols);
        let (out, n) = match parse(&self.buf) {
            Ok(None) => return None,
            Ok(Some((s, n))) => (Ok(s), n),
            Err(m) => {
                let n = m.len;
                (Err(m), n)
            }
        };
        self.buf.drain(..n.min(self.buf.len()));
        Some(out)
    }

    /// Forgets everything buffered (the port was closed).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// A known sentence whose fields do not fit its layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Fewer fields than the layout needs.
    #[error("{0}: too few fields")]
    TooFew(&'static str),
    /// A field that should be a number, a flag or a card id is not.
    #[error("{0}: field {1} is not valid")]
    Bad(&'static str, usize),
}

/// Card query for one dialect: `$CCICA,0,00` (2.1) or `$CCICR,0,00` (BDS-3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardQuery {
    /// Which sentence.
    pub dialect: Dialect,
}

/// `$BDICI`: the 2.1 card information.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardInfo2 {
    /// The card id, 7 digits as the terminal gives it.
    pub card: String,
    /// The card's serial number.
    pub serial: String,
    /// The broadcast address.
    pub broadcast: String,
    /// User class 0–7.
    pub user_class: u8,
    /// Service frequency: minimum seconds between transmissions.
    pub frequency_secs: u32,
    /// Communication level 1–4.
    pub level: u8,
    /// Whether the card is an encrypted (`E`) one.
    pub encrypted: bool,
    /// Number of subordinate cards.
    pub subordinates: String,
}

/// `$BDICP`: the BDS-3 card information. Only the card id (field 1), the service frequency
/// (field 14) and the level (field 15) are understood [U]; every field is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardInfo3 {
    /// Every field, in order.
    pub fields: Vec<String>,
}

impl CardInfo3 {
    /// The card id (field 1).
    pub fn card(&self) -> &str {
        self.fields.first().map(String::as_str).unwrap_or("")
    }

    /// The service frequency in seconds (field 14), if readable.
    pub fn frequency_secs(&self) -> Option<u32> {
        self.fields.get(13).and_then(|f| f.parse().ok())
    }

    /// The communication level (field 15; `0` means level 5), if readable.
    pub fn level(&self) -> Option<u8> {
        self.fields
            .get(14)
            .and_then(|f| f.parse::<u8>().ok())
            .map(|l| if l == 0 { 5 } else { l })
    }
}

/// `$CCRMO`: switch a periodic output on or off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputControl {
    /// The sentence to control, e.g. `BSI`.
    pub statement: String,
    /// 1 = off, 2 = on, 3 = all off.
    pub mode: u8,
    /// Output interval, seconds.
    pub interval_secs: u32,
}

/// `$BDBSI`: beam power (BDS-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeamStatus {
    /// The response beam.
    pub response_beam: String,
    /// The time-difference beam.
    pub timediff_beam: String,
    /// Power 0–4 of each beam (10 on BDS-2).
    pub powers: Vec<u8>,
}

/// `$BDPWI`: satellite signal status (BDS-3, about 1 Hz). The group layouts are [I]: BDS-2
/// beams as (id, snr) pairs, BDS-3 satellites as (id, snr1, snr2, 0); raw fields are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerStatus {
    /// Every field, in order (time first).
    pub fields: Vec<String>,
    /// How many BDS-2 beams are listed.
    pub bds2_beams: u8,
    /// How many BDS-3 satellites are listed; 0 means no signal.
    pub bds3_sats: u8,
}

impl PowerStatus {
    /// A status listing BDS-3 satellites `(id, snr1, snr2)` and no BDS-2 beams.
    pub fn new(time: &str, sats: &[(u8, u8, u8)]) -> Self {
        let mut fields = vec![time.to_owned(), "00".to_owned()];
        let n = u8::try_from(sats.len()).unwrap_or(u8::MAX);
        fields.push(format!("{n:02}"));
        for (id, s1, s2) in sats.iter().take(usize::from(n)) {
            fields.extend([
                format!("{id:02}"),
                s1.to_string(),
                s2.to_string(),
                "0".to_owned(),
            ]);
        }
        PowerStatus {
            fields,
            bds2_beams: 0,
            bds3_sats: n,
        }
    }
}

/// `$CCTXA`: send (2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send2 {
    /// Destination card, 7 digits zero-padded.
    pub dest: String,
    /// Express (特快, comm type 0) rather than normal (1).
    pub express: bool,
    /// 0 = Chinese, 1 = code, 2 = mixed.
    pub mode: u8,
    /// The content as sent (mixed: `A4` + hex).
    pub content: Vec<u8>,
}

/// `$BDFKI` in the 2.1 layout: `<cmd>,<executed>,<freq ok>,<inhibit>,<wait s>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback2 {
    /// The command answered, e.g. `TXA`.
    pub command: String,
    /// Whether it was executed.
    pub executed: bool,
    /// The frequency-setting indicator: `N` means the service frequency was not reached.
    pub frequency_ok: bool,
    /// 0 none, 1 system inhibit, 2 low power, 3 radio silence.
    pub inhibit: u8,
    /// Seconds to wait before the next transmission.
    pub wait_secs: u32,
}

/// `$BDTXR`: a received message (2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receive2 {
    /// 1 normal, 2 express, 3 broadcast, 4 query latest, 5 query by sender.
    pub class: u8,
    /// The sender's card id.
    pub sender: String,
    /// 0 Chinese, 1 code, 2 mixed.
    pub mode: u8,
    /// Send time `hhmm`, often empty.
    pub time: String,
    /// The content as received.
    pub content: Vec<u8>,
}

/// `$CCTCQ`: send (BDS-3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send3 {
    /// Destination card id.
    pub dest: String,
    /// Frequency point 1–5 (Lf0..Lf4), usually 2.
    pub freq_point: u8,
    /// Ask for an inbound receipt (2) rather than not (1).
    pub receipt: bool,
    /// 1 Chinese, 2 code, 3 mixed, 4 compressed Chinese, 5 compressed code.
    pub coding: u8,
    /// The data as sent.
    pub data: String,
    /// Repeat frequency, 0 = single.
    pub repeat: u32,
}

/// `$BDFKI` in the BDS-3 layout: `<hhmmss>,<cmd>,<Y|N>,<reason>,<remaining s>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback3 {
    /// Time `hhmmss`.
    pub time: String,
    /// The command answered, e.g. `TCQ`.
    pub command: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// 0 ok, 1 frequency not reached, 2 tx inhibited, 3 radio silence, 4 power not locked,
    /// 5 no IC module, 6 no permission.
    pub reason: u8,
    /// Seconds remaining until the next transmission is allowed.
    pub remaining_secs: u32,
}

/// `$BDTCI`: a received message (BDS-3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receive3 {
    /// The sender's card id (may be zero-padded to 8 digits).
    pub sender: String,
    /// The receiver's card id.
    pub receiver: String,
    /// Frequency point.
    pub freq_point: String,
    /// Time `hhmmss`.
    pub time: String,
    /// 1 Chinese, 2 code, 3 mixed, 4/5 compressed.
    pub coding: u8,
    /// Field 6, meaning unknown [U] (observed `0`).
    pub flag: String,
    /// The data as received.
    pub data: Vec<u8>,
}

/// `$BDHZR`: a receipt. Its layout is unconfirmed [U]: every field is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Every field, in order.
    pub fields: Vec<String>,
}

/// The sentences Tocsin speaks, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `$CCICA` / `$CCICR`.
    CardQuery(CardQuery),
    /// `$BDICI`.
    CardInfo2(CardInfo2),
    /// `$BDICP`.
    CardInfo3(CardInfo3),
    /// `$CCRMO`.
    OutputControl(OutputControl),
    /// `$BDBSI`.
    BeamStatus(BeamStatus),
    /// `$BDPWI`.
    PowerStatus(PowerStatus),
    /// `$CCTXA`.
    Send2(Send2),
    /// `$BDFKI` (2.1 layout).
    Feedback2(Feedback2),
    /// `$BDTXR`.
    Receive2(Receive2),
    /// `$CCTCQ`.
    Send3(Send3),
    /// `$BDFKI` (BDS-3 layout).
    Feedback3(Feedback3),
    /// `$BDTCI`.
    Receive3(Receive3),
    /// `$BDHZR`.
    Receipt(Receipt),
    /// Any other sentence, kept whole.
    Other(Sentence),
}

/// Reads fields of one sentence with errors naming it.
struct Fields<'a> {
    s: &'a Sentence,
    name: &'static str,
}

impl<'a> Fields<'a> {
    fn need(&self, n: usize) -> Result<(), FieldError> {
        if self.s.fields.len() < n {
            return Err(FieldError::TooFew(self.name));
        }
        Ok(())
    }

    fn text(&self, i: usize) -> Result<String, FieldError> {
        let f = self.s.fields.get(i).ok_or(FieldError::TooFew(self.name))?;
        if !f.is_ascii() {
            return Err(FieldError::Bad(self.name, i + 1));
        }
        Ok(String::from_utf8_lossy(f).into_owned())
    }

    fn raw(&self, i: usize) -> Result<Vec<u8>, FieldError> {
        self.s
            .fields
            .get(i)
            .cloned()
            .ok_or(FieldError::TooFew(self.name))
    }

    fn num<T: std::str::FromStr>(&self, i: usize) -> Result<T, FieldError> {
        let t = self.text(i)?;
        let t = t.trim();
        // An empty number field reads as zero, as terminals leave unused ones empty.
        let t = if t.is_empty() { "0" } else { t };
        t.parse().map_err(|_| FieldError::Bad(self.name, i + 1))
    }

    fn flag(&self, i: usize) -> Result<bool, FieldError> {
        match self.text(i)?.as_str() {
            "Y" | "y" | "E" => Ok(true),
            "N" | "n" => Ok(false),
            _ => Err(FieldError::Bad(self.name, i + 1)),
        }
    }

    fn card(&self, i: usize) -> Result<String, FieldError> {
        let t = self.text(i)?;
        if t.is_empty() || t.len() > 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::Bad(self.name, i + 1));
        }
        Ok(t)
    }

    fn all_text(&self) -> Result<Vec<String>, FieldError> {
        (0..self.s.fields.len()).map(|i| self.text(i)).collect()
    }
}

impl Message {
    /// Types a sentence. Unknown addresses become [`Message::Other`]; a known one whose
    /// fields do not fit its layout is an error.
    pub fn parse(s: &Sentence) -> Result<Message, FieldError> {
        let f = |name| Fields { s, name };
        Ok(match s.address.as_str() {
            "CCICA" | "CCICR" => Message::CardQuery(CardQuery {
                dialect: if s.address == "CCICA" {
                    Dialect::Bds2
                } else {
                    Dialect::Bds3
                },
            }),
            "BDICI" => {
                let f = f("BDICI");
                f.need(8)?;
                Message::CardInfo2(CardInfo2 {
                    card: f.card(0)?,
                    serial: f.text(1)?,
                    broadcast: f.text(2)?,
                    user_class: f.num(3)?,
                    frequency_secs: f.num(4)?,
                    level: f.num(5)?,
                    encrypted: f.flag(6)?,
                    subordinates: f.text(7)?,
                })
            }
            "BDICP" => {
                let f = f("BDICP");
                f.need(1)?;
                f.card(0)?;
                Message::CardInfo3(CardInfo3 {
                    fields: f.all_text()?,
                })
            }
            "CCRMO" => {
                let f = f("CCRMO");
                f.need(3)?;
                Message::OutputControl(OutputControl {
                    statement: f.text(0)?,
                    mode: f.num(1)?,
                    interval_secs: f.num(2)?,
                })
            }
            "BDBSI" => {
                let f = f("BDBSI");
                f.need(2)?;
                let powers = (2..s.fields.len())
                    .map(|i| f.num::<u8>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Message::BeamStatus(BeamStatus {
                    response_beam: f.text(0)?,
                    timediff_beam: f.text(1)?,
                    powers,
                })
            }
            "BDPWI" => {
                let f = f("BDPWI");
                f.need(3)?;
                let bds2_beams: u8 = f.num(1)?;
                let at = 2 + 2 * usize::from(bds2_beams);
                let bds3_sats: u8 = f.num(at)?;
                Message::PowerStatus(PowerStatus {
                    fields: f.all_text()?,
                    bds2_beams,
                    bds3_sats,
                })
            }
            "CCTXA" => {
                let f = f("CCTXA");
                f.need(4)?;
                let express = match f.num::<u8>(1)? {
                    0 => true,
                    1 => false,
                    _ => return Err(FieldError::Bad("CCTXA", 2)),
                };
                Message::Send2(Send2 {
                    dest: f.card(0)?,
                    express,
                    mode: f.num(2)?,
                    content: f.raw(3)?,
                })
            }
            "BDFKI" => {
                // The BDS-3 layout starts with a time; the 2.1 one with a command name.
                let first = s.field(0).unwrap_or("");
                if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    let f = f("BDFKI");
                    f.need(5)?;
                    Message::Feedback3(Feedback3 {
                        time: f.text(0)?,
                        command: f.text(1)?,
                        ok: f.flag(2)?,
                        reason: f.num(3)?,
                        remaining_secs: f.num(4)?,
                    })
                } else {
                    let f = f("BDFKI");
                    f.need(5)?;
                    Message::Feedback2(Feedback2 {
                        command: f.text(0)?,
                        executed: f.flag(1)?,
                        frequency_ok: f.flag(2)?,
                        inhibit: f.num(3)?,
                        wait_secs: f.num(4)?,
                    })
                }
            }
            "BDTXR" => {
                let f = f("BDTXR");
                f.need(5)?;
                Message::Receive2(Receive2 {
                    class: f.num(0)?,
                    sender: f.card(1)?,
                    mode: f.num(2)?,
                    time: f.text(3)?,
                    content: f.raw(4)?,
                })
            }
            "CCTCQ" => {
                let f = f("CCTCQ");
                f.need(6)?;
                let receipt = match f.num::<u8>(2)? {
                    1 => false,
                    2 => true,
                    _ => return Err(FieldError::Bad("CCTCQ", 3)),
                };
                Message::Send3(Send3 {
                    dest: f.card(0)?,
                    freq_point: f.num(1)?,
                    receipt,
                    coding: f.num(3)?,
                    data: f.text(4)?,
                    repeat: f.num(5)?,
                })
            }
            "BDTCI" => {
                let f = f("BDTCI");
                f.need(7)?;
                Message::Receive3(Receive3 {
                    sender: f.card(0)?,
                    receiver: f.text(1)?,
                    freq_point: f.text(2)?,
                    time: f.text(3)?,
                    coding: f.num(4)?,
                    flag: f.text(5)?,
                    data: f.raw(6)?,
                })
            }
            "BDHZR" => Message::Receipt(Receipt {
                fields: f("BDHZR").all_text()?,
            }),
            _ => Message::Other(s.clone()),
        })
    }

    /// The sentence this message is sent as.
    pub fn to_sentence(&self) -> Sentence {
        let yn = |b: bool| if b { "Y" } else { "N" };
        match self {
            Message::CardQuery(q) => Sentence::new(
                match q.dialect {
                    Dialect::Bds2 => "CCICA",
                    Dialect::Bds3 => "CCICR",
                },
                &["0", "00"],
            ),
            Message::CardInfo2(c) => Sentence::new(
                "BDICI",
                &[
                    &c.card,
                    &c.serial,
                    &c.broadcast,
                    &c.user_class.to_string(),
                    &c.frequency_secs.to_string(),
                    &c.level.to_string(),
                    if c.encrypted { "E" } else { "N" },
                    &c.subordinates,
                ],
            ),
            Message::CardInfo3(c) => owned("BDICP", &c.fields),
            Message::OutputControl(o) => Sentence::new(
                "CCRMO",
                &[
                    &o.statement,
                    &o.mode.to_string(),
                    &o.interval_secs.to_string(),
                ],
            ),
            Message::BeamStatus(b) => {
                let mut fields = vec![b.response_beam.clone(), b.timediff_beam.clone()];
                fields.extend(b.powers.iter().map(u8::to_string));
                owned("BDBSI", &fields)
            }
            Message::PowerStatus(p) => owned("BDPWI", &p.fields),
            Message::Send2(s) => {
                let mut out = Sentence::new(
                    "CCTXA",
                    &[
                        &s.dest,
                        if s.express { "0" } else { "1" },
                        &s.mode.to_string(),
                    ],
                );
                out.fields.push(s.content.clone());
                out
            }
            Message::Feedback2(f) => Sentence::new(
                "BDFKI",
                &[
                    &f.command,
                    yn(f.executed),
                    yn(f.frequency_ok),
                    &f.inhibit.to_string(),
                    &format!("{:04}", f.wait_secs),
                ],
            ),
            Message::Receive2(r) => {
                let mut out = Sentence::new(
                    "BDTXR",
                    &[
                        &r.class.to_string(),
                        &r.sender,
                        &r.mode.to_string(),
                        &r.time,
                    ],
                );
                out.fields.push(r.content.clone());
                out
            }
            Message::Send3(s) => Sentence::new(
                "CCTCQ",
                &[
                    &s.dest,
                    &s.freq_point.to_string(),
                    if s.receipt { "2" } else { "1" },
                    &s.coding.to_string(),
                    &s.data,
                    &s.repeat.to_string(),
                ],
            ),
            Message::Feedback3(f) => Sentence::new(
                "BDFKI",
                &[
                    &f.time,
                    &f.command,
                    yn(f.ok),
                    &f.reason.to_string(),
                    // Observed: `0` when nothing remains, four digits otherwise.
                    &if f.remaining_secs == 0 {
                        "0".to_owned()
                    } else {
                        format!("{:04}", f.remaining_secs)
                    },
                ],
            ),
            Message::Receive3(r) => {
                let mut out = Sentence::new(
                    "BDTCI",
                    &[
                        &r.sender,
                        &r.receiver,
                        &r.freq_point,
                        &r.time,
                        &r.coding.to_string(),
                        &r.flag,
                    ],
                );
                out.fields.push(r.data.clone());
                out
            }
            Message::Receipt(r) => owned("BDHZR", &r.fields),
            Message::Other(s) => s.clone(),
        }
    }

    /// The bytes on the wire.
    pub fn emit(&self, out: &mut Vec<u8>) {
        emit(&self.to_sentence(), out);
    }

    /// The bytes on the wire, as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(&mut out);
        out
    }
}

fn owned(address: &str, fields: &[String]) -> Sentence {
    Sentence {
        address: address.to_owned(),
        fields: fields.iter().map(|f| f.as_bytes().to_vec()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The protocol brief's §1.7 vectors, verbatim.
    pub(crate) const VECTORS: [&[u8]; 12] = [
        b"$CCICA,0,00*7B\r\n",
        b"$BDICI,0242286,00242286,0000011,6,60,3,N,0*38\r\n",
        b"$CCTXA,0242286,1,2,A468656C6C6FB1B1B6B7*7F\r\n",
        b"$CCTXA,0242286,1,2,A4CAD5B5BD31*03\r\n",
        b"$BDTXR,1,0242286,2,,A4CAD5B5BD31*3A\r\n",
        b"$BDFKI,TXA,Y,Y,0,0000*13\r\n",
        b"$CCICR,0,00*68\r\n",
        b"$CCTCQ,4207733,2,1,3,A4CAD5B5BD31,0*05\r\n",
        b"$BDFKI,080432,TCQ,Y,0,0*7C\r\n",
        b"$BDFKI,080432,TCQ,N,1,0045*5B\r\n",
        b"$BDTCI,4204986,4204990,2,142204,2,0,3A642B500000000000000A01F35B41EC036542EE74F5*40\r\n",
        b"$BDICP,15240507,2032472,1,3,0,N,1,Y,1,0,0,3,1,1,5,1,1,2,2,500,100,10,10*65\r\n",
    ];

    const PWI: &[u8] = b"$BDPWI,000000.00,00,01,51,40,33,0*7B\r\n";
    const RMO: &[u8] = b"$CCRMO,BSI,2,0*26\r\n";

    fn sentences_of(chunks: &[&[u8]]) -> Vec<Result<Sentence, Malformed>> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(s) = d.next_sentence() {
                out.push(s);
            }
        }
        out
    }

    fn stream() -> Vec<u8> {
        let mut all: Vec<u8> = Vec::new();
        for v in VECTORS.iter().chain([&PWI, &RMO]) {
            all.extend_from_slice(v);
        }
        all
    }

    #[test]
    fn every_vector_checksum_verifies_and_re_emits_byte_for_byte() {
        for v in VECTORS.iter().chain([&PWI, &RMO]) {
            let (s, n) = parse(v).unwrap().unwrap();
            assert_eq!(n, v.len());
            let mut out = Vec::new();
            emit(&s, &mut out);
            assert_eq!(&out[..], *v, "{}", String::from_utf8_lossy(v));
            // And through the typed form.
            let m = Message::parse(&s).unwrap();
            assert!(!matches!(m, Message::Other(_)), "{m:?}");
            assert_eq!(m.to_bytes(), *v, "{m:?}");
        }
    }

    #[test]
    fn typed_fields_read_as_the_brief_says() {
        let typed = |v: &[u8]| Message::parse(&parse(v).unwrap().unwrap().0).unwrap();
        assert_eq!(
            typed(VECTORS[1]),
            Message::CardInfo2(CardInfo2 {
                card: "0242286".into(),
                serial: "00242286".into(),
                broadcast: "0000011".into(),
                user_class: 6,
                frequency_secs: 60,
                level: 3,
                encrypted: false,
                subordinates: "0".into(),
            })
        );
        assert_eq!(
            typed(VECTORS[2]),
            Message::Send2(Send2 {
                dest: "0242286".into(),
                express: false,
                mode: 2,
                content: b"A468656C6C6FB1B1B6B7".to_vec(),
            })
        );
        assert_eq!(
            typed(VECTORS[9]),
            Message::Feedback3(Feedback3 {
                time: "080432".into(),
                command: "TCQ".into(),
                ok: false,
                reason: 1,
                remaining_secs: 45,
            })
        );
        assert_eq!(
            typed(VECTORS[5]),
            Message::Feedback2(Feedback2 {
                command: "TXA".into(),
                executed: true,
                frequency_ok: true,
                inhibit: 0,
                wait_secs: 0,
            })
        );
        let Message::Receive3(r) = typed(VECTORS[10]) else {
            panic!()
        };
        assert_eq!(r.sender, "4204986");
        assert_eq!(r.coding, 2);
        let Message::CardInfo3(c) = typed(VECTORS[11]) else {
            panic!()
        };
        assert_eq!(c.card(), "15240507");
        assert_eq!(c.frequency_secs(), Some(1));
        assert_eq!(c.level(), Some(5));
        let Message::PowerStatus(p) = typed(PWI) else {
            panic!()
        };
        assert_eq!((p.bds2_beams, p.bds3_sats), (0, 1));
        assert_eq!(
            Message::PowerStatus(PowerStatus::new("000000.00", &[(51, 40, 33)])).to_bytes(),
            PWI
        );
    }

    #[test]
    fn a_bad_checksum_is_refused_and_the_next_sentence_still_parses() {
        let mut input = b"$BDTXR,1,0242286,2,,A4CAD5B5BD31*3B\r\n".to_vec();
        input.extend_from_slice(VECTORS[5]);
        let got = sentences_of(&[&input]);
        assert!(matches!(&got[0], Err(m) if m.reason == MalformedReason::BadChecksum));
        assert_eq!(got[1].as_ref().unwrap().address, "BDFKI");
        assert_eq!(got.len(), 2);
        // One flipped bit in the body is caught too.
        let mut flipped = VECTORS[4].to_vec();
        flipped[10] ^= 0x01;
        assert!(matches!(parse(&flipped), Err(m) if m.reason == MalformedReason::BadChecksum));
    }

    #[test]
    fn garbage_truncation_and_missing_checksums_are_skipped() {
        let input =
            b"\xff\xfejunk$BDFKI,TXA,Y$BDFKI,TXA,Y,Y,0,0000*13\r\n$BDFKI,TXA\r\n$bd\x01x*00\r\n";
        let got = sentences_of(&[input]);
        let reasons: Vec<_> = got
            .iter()
            .map(|r| r.as_ref().map(|s| s.address.clone()).map_err(|m| m.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                Err(MalformedReason::Garbage),
                Err(MalformedReason::Truncated),
                Ok("BDFKI".to_owned()),
                Err(MalformedReason::NoChecksum),
                Err(MalformedReason::BadChecksum),
            ]
        );
    }

    #[test]
    fn overlong_runs_are_skipped_in_pieces() {
        let mut input = b"$".to_vec();
        input.extend(std::iter::repeat_n(b'A', MAX_SENTENCE * 2));
        input.extend_from_slice(VECTORS[0]);
        let got = sentences_of(&[&input]);
        assert!(matches!(&got[0], Err(m) if m.reason == MalformedReason::TooLong));
        assert_eq!(got.last().unwrap().as_ref().unwrap().address, "CCICA");
        let chunks: Vec<&[u8]> = input.chunks(13).collect();
        assert_eq!(sentences_of(&chunks), got);
    }

    #[test]
    fn byte_by_byte_gives_the_same_sentences() {
        let all = stream();
        let whole = sentences_of(&[&all]);
        assert_eq!(whole.len(), VECTORS.len() + 2);
        assert!(whole.iter().all(Result::is_ok));
        let chunks: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(sentences_of(&chunks), whole);
    }

    #[test]
    fn known_sentences_with_bad_fields_are_errors_not_guesses() {
        let s = Sentence::new("BDTXR", &["1", "02x2286", "2", "", "A431"]);
        assert_eq!(Message::parse(&s), Err(FieldError::Bad("BDTXR", 2)));
        let s = Sentence::new("BDICI", &["0242286"]);
        assert_eq!(Message::parse(&s), Err(FieldError::TooFew("BDICI")));
        let s = Sentence::new("GPGGA", &["1"]);
        assert_eq!(Message::parse(&s), Ok(Message::Other(s.clone())));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_sentences(cuts in proptest::collection::vec(0usize..2000, 0..20)) {
            let all = stream();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % all.len()).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&all[at..c.max(at)]);
                at = c.max(at);
            }
            chunks.push(&all[at..]);
            prop_assert_eq!(sentences_of(&chunks), sentences_of(&[&all]));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_agrees(
            bytes in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'$'), Just(b'*'), Just(b','), Just(b'\n')], 0..600),
            cut in 0usize..600,
        ) {
            let whole = sentences_of(&[&bytes]);
            let cut = cut.min(bytes.len());
            prop_assert_eq!(sentences_of(&[&bytes[..cut], &bytes[cut..]]), whole.clone());
            for s in whole.into_iter().flatten() {
                let _ = Message::parse(&s);
            }
        }

        #[test]
        fn emitted_sentences_parse_back(fields in proptest::collection::vec("[A-Z0-9.]{0,12}", 0..8)) {
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            let s = Sentence::new("BDXYZ", &refs);
            let mut out = Vec::new();
            emit(&s, &mut out);
            prop_assert_eq!(parse(&out).unwrap(), Some((s, out.len())));
        }
    }
}
