//! Framing of the 9602/9603 AT conversation in both directions.
//!
//! Modem → driver: response lines `\r\n<line>\r\n`, `READY` (the modem waits for the
//! binary message of `AT+SBDWB`), final results, echoed commands while echo is on, and the
//! binary block `AT+SBDRB` answers with: `u16 length | bytes | u16 checksum`, no line end
//! before it. The block cannot be told from lines by its bytes, so [`parse`] takes the
//! [`Mode`] the driver is in: it reads a block only when it has just asked for one.
//!
//! Driver → modem: command lines ended by CR, and after `READY` exactly `n` message bytes
//! and the 2-byte checksum ([`parse_dte`] with the expected length, for the simulator).
//!
//! Parsers are pure functions of the bytes buffered so far: whole, byte by byte or split
//! anywhere they give the same frames. Device bytes are untrusted: nothing here indexes
//! without a check, and bytes that are not a frame come back as [`Malformed`] with how many
//! to skip.

use std::fmt;

/// Longest line accepted; anything longer is babble (or the wrong baud rate).
pub const MAX_LINE: usize = 512;

/// Longest binary block accepted from `AT+SBDRB` (the 9523 allows 1890-byte MT messages;
/// the 9602/9603 270).
pub const MAX_BLOCK: usize = 2048;

/// The SBD checksum: the low 16 bits of the sum of the message bytes.
pub fn checksum(data: &[u8]) -> u16 {
    data.iter()
        .fold(0u16, |sum, b| sum.wrapping_add(u16::from(*b)))
}

/// A final result code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalResult {
    /// `OK`.
    Ok,
    /// `ERROR`.
    Error,
}

/// One frame from the modem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An information response or an unsolicited result code, without its line end.
    Line(String),
    /// `READY`: the modem waits for the message bytes of `AT+SBDWB`.
    Ready,
    /// A final result code.
    Final(FinalResult),
    /// A command line echoed back while echo is on.
    Echo(String),
    /// The answer to `AT+SBDRB`: the mobile-terminated message.
    Block(MtBlock),
}

/// The binary answer to `AT+SBDRB`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtBlock {
    /// The message bytes (empty when the MT buffer is empty).
    pub payload: Vec<u8>,
    /// The checksum the modem sent.
    pub checksum: u16,
}

impl MtBlock {
    /// Whether the checksum matches the bytes.
    pub fn checksum_ok(&self) -> bool {
        checksum(&self.payload) == self.checksum
    }
}

/// What the driver expects next from the modem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Lines, prompts and results.
    Lines,
    /// The binary block of `AT+SBDRB` (possibly after its echo).
    Block,
}

/// Bytes that do not form a frame; skip `len` bytes and report them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {} bytes", raw.len())]
pub struct Malformed {
    /// How many bytes of the input to skip.
    pub len: usize,
    /// The offending bytes, for the `Unrecognized` report.
    pub raw: Vec<u8>,
    /// Why they were refused.
    pub reason: MalformedReason,
}

/// Why bytes were refused as a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedReason {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// The line holds control bytes.
    ControlBytes,
    /// No line end within [`MAX_LINE`] bytes.
    TooLong,
    /// A binary block claims more than [`MAX_BLOCK`] bytes.
    BlockTooLong,
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MalformedReason::NotUtf8 => "not UTF-8",
            MalformedReason::ControlBytes => "control bytes in line",
            MalformedReason::TooLong => "line too long",
            MalformedReason::BlockTooLong => "SBDRB block too long",
        })
    }
}

fn is_eol(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// Finds the line starting at `start`: `Ok(Some((end, next)))`, `Ok(None)` when it is not
/// complete yet, `Err(next)` for an overlong run.
fn line_at(buf: &[u8], start: usize) -> Result<Option<(usize, usize)>, usize> {
    let rest = buf.get(start..).unwrap_or(&[]);
    let window = rest.get(..rest.len().min(MAX_LINE + 1)).unwrap_or(&[]);
    match window.iter().position(|b| is_eol(*b)) {
        Some(n) if n <= MAX_LINE => Ok(Some((start + n, start + n + 1))),
        Some(_) => Err(start + MAX_LINE),
        None if rest.len() > MAX_LINE => Err(start + MAX_LINE),
        None => Ok(None),
    }
}

fn line_text(raw: &[u8], skip: usize) -> Result<&str, Malformed> {
    let malformed = |reason| Malformed {
        len: skip,
        raw: raw.to_vec(),
        reason,
    };
    let text = std::str::from_utf8(raw).map_err(|_| malformed(MalformedReason::NotUtf8))?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(malformed(MalformedReason::ControlBytes));
    }
    Ok(text)
}

/// Parses the next frame from the modem. `Ok(None)`: not enough bytes yet.
/// `Ok(Some((frame, n)))`: drop `n` bytes. `Err(m)`: drop `m.len` bytes and report them.
pub fn parse(buf: &[u8], mode: Mode) -> Result<Option<(Frame, usize)>, Malformed> {
    let start = buf.iter().take_while(|b| is_eol(**b)).count();
    let rest = buf.get(start..).unwrap_or(&[]);
    if rest.is_empty() {
        return Ok(None);
    }
    // A block's first byte is its length's high byte, at most 8 for MAX_BLOCK: never CR,
    // LF or a printable character, so an echo, a URC or a result in front of it (or
    // instead of it) is still read as a line.
    let could_be_block = rest
        .first()
        .is_some_and(|b| usize::from(*b) <= MAX_BLOCK >> 8);
    if mode == Mode::Block && could_be_block {
        return parse_block(rest, start);
    }
    let (end, next) = match line_at(buf, start) {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(next) => {
            return Err(Malformed {
                len: next,
                raw: buf.get(start..next).unwrap_or(&[]).to_vec(),
                reason: MalformedReason::TooLong,
            });
        }
    };
    let raw = buf.get(start..end).unwrap_or(&[]);
    let text = line_text(raw, next)?;
    Ok(Some((classify(text), next)))
}

fn parse_block(rest: &[u8], start: usize) -> Result<Option<(Frame, usize)>, Malformed> {
    let [hi, lo, ..] = rest else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if len > MAX_BLOCK {
        return Err(Malformed {
            len: start + 2,
            raw: vec![*hi, *lo],
            reason: MalformedReason::BlockTooLong,
        });
    }
    let Some(payload) = rest.get(2..2 + len) else {
        return Ok(None);
    };
    let Some([c1, c2]) = rest.get(2 + len..4 + len) else {
        return Ok(None);
    };
    Ok(Some((
        Frame::Block(MtBlock {
            payload: payload.to_vec(),
            checksum: u16::from_be_bytes([*c1, *c2]),
        }),
        start + 4 + len,
    )))
}

fn classify(text: &str) -> Frame {
    let t = text.trim();
    match t {
        "OK" => Frame::Final(FinalResult::Ok),
        "ERROR" => Frame::Final(FinalResult::Error),
        "READY" => Frame::Ready,
        _ if t.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) => Frame::Echo(t.to_owned()),
        _ => Frame::Line(t.to_owned()),
    }
}

/// Writes a frame as the modem would (the simulator's side).
pub fn emit(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Line(l) => push_line(out, l),
        Frame::Ready => out.extend_from_slice(b"READY\r\n"),
        Frame::Final(FinalResult::Ok) => push_line(out, "OK"),
        Frame::Final(FinalResult::Error) => push_line(out, "ERROR"),
        Frame::Echo(cmd) => {
            out.extend_from_slice(cmd.as_bytes());
            out.push(b'\r');
        }
        Frame::Block(b) => {
            let len = u16::try_from(b.payload.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&b.payload);
            out.extend_from_slice(&b.checksum.to_be_bytes());
        }
    }
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The result of an SBD session: `+SBDIX: <MO st>, <MOMSN>, <MT st>, <MTMSN>, <MT len>, <MT queued>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionResult {
    /// MO status: 0–4 success, otherwise why the message did not go.
    pub mo_status: u8,
    /// The MO sequence number (wraps at 65535).
    pub momsn: u16,
    /// MT status: 0 none, 1 a message was received, 2 the mailbox check failed.
    pub mt_status: u8,
    /// The MT sequence number.
    pub mtmsn: u16,
    /// Length of the received MT message.
    pub mt_len: u16,
    /// MT messages still queued at the gateway.
    pub mt_queued: u16,
}

impl SessionResult {
    /// Parses the `+SBDIX:` line (spaces optional); `None` if it is not one.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("+SBDIX:")?;
        let mut f = rest.split(',').map(|v| v.trim());
        let mut next = || f.next();
        let r = SessionResult {
            mo_status: next()?.parse().ok()?,
            momsn: next()?.parse().ok()?,
            mt_status: next()?.parse().ok()?,
            mtmsn: next()?.parse().ok()?,
            mt_len: next()?.parse().ok()?,
            mt_queued: next()?.parse().ok()?,
        };
        next().is_none().then_some(r)
    }

    /// The line as the modem writes it.
    pub fn to_line(&self) -> String {
        format!(
            "+SBDIX: {}, {}, {}, {}, {}, {}",
            self.mo_status, self.momsn, self.mt_status, self.mtmsn, self.mt_len, self.mt_queued
        )
    }
}

/// What an MO status means for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoClass {
    /// 0–4: the gateway has the message.
    Success,
    /// Worth another session after a pause (no network, RF drop, busy, ...).
    Retry,
    /// Will not succeed however often it is tried (12, 14, 16).
    Fatal,
}

/// Classifies an MO status as the ISU AT Command Reference and the IridiumSBD library do.
pub fn mo_class(status: u8) -> MoClass {
    match status {
        0..=4 => MoClass::Success,
        12 | 14 | 16 => MoClass::Fatal,
        _ => MoClass::Retry,
    }
}

/// The meaning of an MO status, for the record.
pub fn mo_meaning(status: u8) -> &'static str {
    match status {
        0 => "transferred",
        1 => "transferred; MT message too big for the MT buffer",
        2 => "transferred; location update not accepted",
        3 | 4 => "transferred (reserved success)",
        5..=8 => "reserved failure",
        10 => "call did not complete in time at the gateway",
        11 => "MO message queue at the gateway full",
        12 => "MO message has too many segments",
        13 => "session did not complete",
        14 => "invalid segment size",
        15 => "access denied",
        16 => "modem locked; cannot make SBD calls",
        17 => "gateway not responding",
        18 => "connection lost (RF drop)",
        19 => "link failure",
        32 => "no network service",
        33 => "antenna fault",
        34 => "radio disabled",
        35 => "modem busy",
        36 => "wait 3 minutes since the last registration",
        37 => "SBD service disabled",
        38 => "traffic management period",
        64 => "band violation",
        65 => "PLL lock failure",
        _ => "unknown failure",
    }
}

/// One frame from the driver, as the modem reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DteFrame {
    /// A command line without its CR, e.g. `AT+SBDWB=5`.
    Command(String),
    /// The message bytes after `READY`, and the checksum the driver sent with them.
    Message {
        /// The message.
        data: Vec<u8>,
        /// The checksum as sent.
        checksum: u16,
    },
}

/// Parses the next frame from the driver (the simulator's side). `binary` is the length
/// promised by `AT+SBDWB` once the modem said `READY`.
pub fn parse_dte(
    buf: &[u8],
    binary: Option<usize>,
) -> Result<Option<(DteFrame, usize)>, Malformed> {
    if let Some(n) = binary {
        let Some(data) = buf.get(..n) else {
            return Ok(None);
        };
        let Some([c1, c2]) = buf.get(n..n + 2) else {
            return Ok(None);
        };
        return Ok(Some((
            DteFrame::Message {
                data: data.to_vec(),
                checksum: u16::from_be_bytes([*c1, *c2]),
            },
            n + 2,
        )));
    }
    let start = buf.iter().take_while(|b| is_eol(**b)).count();
    match line_at(buf, start) {
        Ok(Some((end, next))) => {
            let raw = buf.get(start..end).unwrap_or(&[]);
            let text = line_text(raw, next)?;
            Ok(Some((DteFrame::Command(text.trim().to_owned()), next)))
        }
        Ok(None) => Ok(None),
        Err(next) => Err(Malformed {
            len: next,
            raw: buf.get(start..next).unwrap_or(&[]).to_vec(),
            reason: MalformedReason::TooLong,
        }),
    }
}

/// Writes a driver frame (the driver's side of [`parse_dte`]).
pub fn emit_dte(frame: &DteFrame, out: &mut Vec<u8>) {
    match frame {
        DteFrame::Command(c) => {
            out.extend_from_slice(c.as_bytes());
            out.push(b'\r');
        }
        DteFrame::Message { data, checksum } => {
            out.extend_from_slice(data);
            out.extend_from_slice(&checksum.to_be_bytes());
        }
    }
}

/// A receive buffer in front of [`parse`] / [`parse_dte`].
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

    /// Forgets everything buffered (the port was closed).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame from the modem in `mode`, if complete.
    pub fn next_frame(&mut self, mode: Mode) -> Option<Result<Frame, Malformed>> {
        // Line ends between frames carry nothing (a block never starts with one): drop them
        // first, so the length a malformed line reports does not depend on whether they
        // arrived with it or were buffered, and cleared, before it.
        let eols = self.buf.iter().take_while(|b| is_eol(**b)).count();
        self.buf.drain(..eols);
        let r = parse(&self.buf, mode);
        self.take(r)
    }

    /// The next frame from the driver (the simulator's side), if complete.
    pub fn next_dte_frame(&mut self, binary: Option<usize>) -> Option<Result<DteFrame, Malformed>> {
        let r = parse_dte(&self.buf, binary);
        self.take(r)
    }

    fn take<F>(
        &mut self,
        r: Result<Option<(F, usize)>, Malformed>,
    ) -> Option<Result<F, Malformed>> {
        let (out, n) = match r {
            Ok(None) => {
                // Only line ends buffered: drop them so an endless run cannot grow the
                // buffer (a block never starts with CR or LF).
                if self.buf.iter().all(|b| is_eol(*b)) {
                    self.buf.clear();
                }
                return None;
            }
            Ok(Some((f, n))) => (Ok(f), n),
            Err(m) => {
                let n = m.len;
                (Err(m), n)
            }
        };
        self.buf.drain(..n.min(self.buf.len()));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checksums_match_the_manual_examples() {
        assert_eq!(checksum(b"hello"), 0x0214);
        assert_eq!(checksum(b"ACK 1"), 0x0120);
        let mut b = Vec::new();
        emit_dte(
            &DteFrame::Message {
                data: b"hello".to_vec(),
                checksum: checksum(b"hello"),
            },
            &mut b,
        );
        assert_eq!(b, [0x68, 0x65, 0x6C, 0x6C, 0x6F, 0x02, 0x14]);
        assert_eq!(
            parse_dte(&b, Some(5)),
            Ok(Some((
                DteFrame::Message {
                    data: b"hello".to_vec(),
                    checksum: 0x0214
                },
                7
            )))
        );
    }

    #[test]
    fn sbdrb_block_of_hello_parses_and_mirrors() {
        let bytes = [0x00, 0x05, 0x68, 0x65, 0x6C, 0x6C, 0x6F, 0x02, 0x14];
        let (f, n) = parse(&bytes, Mode::Block).unwrap().unwrap();
        assert_eq!(n, 9);
        let Frame::Block(b) = &f else { panic!() };
        assert_eq!(b.payload, b"hello");
        assert!(b.checksum_ok());
        let mut out = Vec::new();
        emit(&f, &mut out);
        assert_eq!(out, bytes);
        // Not complete until the checksum is there.
        assert_eq!(parse(&bytes[..8], Mode::Block), Ok(None));
        // An empty MT buffer: zero length and zero checksum.
        assert_eq!(
            parse(&[0, 0, 0, 0], Mode::Block).unwrap().unwrap().0,
            Frame::Block(MtBlock {
                payload: vec![],
                checksum: 0
            })
        );
    }

    #[test]
    fn sbdix_result_parses_and_mirrors() {
        let r = SessionResult::parse("+SBDIX: 0, 12, 1, 5, 5, 0").unwrap();
        assert_eq!(
            r,
            SessionResult {
                mo_status: 0,
                momsn: 12,
                mt_status: 1,
                mtmsn: 5,
                mt_len: 5,
                mt_queued: 0
            }
        );
        assert_eq!(r.to_line(), "+SBDIX: 0, 12, 1, 5, 5, 0");
        assert_eq!(
            SessionResult::parse("+SBDIX:32,3,2,0,0,0").map(|r| r.mo_status),
            Some(32)
        );
        assert_eq!(SessionResult::parse("+SBDIX: 0, 12, 1"), None);
        assert_eq!(SessionResult::parse("+SBDIX: 0, 99999, 1, 5, 5, 0"), None);
        assert_eq!(SessionResult::parse("+SBDIX: 0, 1, 1, 5, 5, 0, 7"), None);
    }

    #[test]
    fn mo_status_classes() {
        for s in 0..=4 {
            assert_eq!(mo_class(s), MoClass::Success);
        }
        for s in [12, 14, 16] {
            assert_eq!(mo_class(s), MoClass::Fatal);
        }
        for s in [5, 10, 13, 17, 18, 32, 35, 36, 38, 65] {
            assert_eq!(mo_class(s), MoClass::Retry, "{s}");
        }
        assert_eq!(mo_meaning(32), "no network service");
    }

    /// A write, a session with an MT message, its read (echo on for the read), a ring.
    const SESSION: &[u8] =
        b"\r\nREADY\r\n\r\n0\r\n\r\nOK\r\n\r\n+SBDIX: 0, 12, 1, 5, 5, 0\r\n\r\nOK\r\n\
AT+SBDRB\r\x00\x05hello\x02\x14\r\nOK\r\nSBDRING\r\n\r\n+CSQ:4\r\n\r\nOK\r\n";

    fn frames_of(chunks: &[&[u8]]) -> Vec<Result<Frame, Malformed>> {
        let mut d = Decoder::new();
        let mut mode = Mode::Lines;
        let mut read_next = false;
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(f) = d.next_frame(mode) {
                // The driver's rule: after a session that fetched an MT message it sends
                // AT+SBDRB and expects a block until one arrives.
                match &f {
                    Ok(Frame::Line(l)) if l.starts_with("+SBDIX") => read_next = true,
                    Ok(Frame::Final(_)) if read_next => {
                        read_next = false;
                        mode = Mode::Block;
                    }
                    Ok(Frame::Block(_)) => mode = Mode::Lines,
                    _ => {}
                }
                out.push(f);
            }
        }
        out
    }

    fn session_frames() -> Vec<Result<Frame, Malformed>> {
        vec![
            Ok(Frame::Ready),
            Ok(Frame::Line("0".into())),
            Ok(Frame::Final(FinalResult::Ok)),
            Ok(Frame::Line("+SBDIX: 0, 12, 1, 5, 5, 0".into())),
            Ok(Frame::Final(FinalResult::Ok)),
            Ok(Frame::Echo("AT+SBDRB".into())),
            Ok(Frame::Block(MtBlock {
                payload: b"hello".to_vec(),
                checksum: 0x0214,
            })),
            Ok(Frame::Final(FinalResult::Ok)),
            Ok(Frame::Line("SBDRING".into())),
            Ok(Frame::Line("+CSQ:4".into())),
            Ok(Frame::Final(FinalResult::Ok)),
        ]
    }

    #[test]
    fn a_whole_session_frames_as_expected_whole_and_byte_by_byte() {
        let frames = frames_of(&[SESSION]);
        assert_eq!(frames, session_frames());
        let chunks: Vec<&[u8]> = SESSION.chunks(1).collect();
        assert_eq!(frames_of(&chunks), frames);
    }

    #[test]
    fn garbage_is_reported_and_skipped() {
        let mut d = Decoder::new();
        d.push(b"\r\n\xff\xfejunk\r\n\r\nOK\r\n");
        assert!(
            matches!(d.next_frame(Mode::Lines), Some(Err(m)) if m.reason == MalformedReason::NotUtf8)
        );
        assert_eq!(
            d.next_frame(Mode::Lines),
            Some(Ok(Frame::Final(FinalResult::Ok)))
        );
        // A block that claims too much is refused, not waited for.
        let mut d = Decoder::new();
        d.push(&[0x08, 0x01, 1, 2, 3]);
        assert!(
            matches!(d.next_frame(Mode::Block), Some(Err(m)) if m.reason == MalformedReason::BlockTooLong)
        );
        // A URC where a block was expected is still a line.
        let mut d = Decoder::new();
        d.push(b"SBDRING\r\n\x00\x00\x00\x00");
        assert_eq!(
            d.next_frame(Mode::Block),
            Some(Ok(Frame::Line("SBDRING".into())))
        );
        assert!(matches!(
            d.next_frame(Mode::Block),
            Some(Ok(Frame::Block(_)))
        ));
    }

    #[test]
    fn emit_and_parse_mirror_each_other_in_lines_mode() {
        let frames = [
            Frame::Ready,
            Frame::Line("+SBDIX: 32, 3, 2, 0, 0, 0".into()),
            Frame::Final(FinalResult::Error),
            Frame::Echo("AT+SBDIX".into()),
            Frame::Line("SBDRING".into()),
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            emit(f, &mut bytes);
        }
        let mut d = Decoder::new();
        d.push(&bytes);
        let mut back = Vec::new();
        while let Some(f) = d.next_frame(Mode::Lines) {
            back.push(f.unwrap());
        }
        assert_eq!(back, frames);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_frames(cuts in proptest::collection::vec(0usize..SESSION.len(), 0..20)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&SESSION[at..c.max(at)]);
                at = c.max(at);
            }
            chunks.push(&SESSION[at..]);
            prop_assert_eq!(frames_of(&chunks), frames_of(&[SESSION]));
        }

        #[test]
        fn arbitrary_bytes_never_panic_in_either_mode_and_split_agrees(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cut in 0usize..600,
            block in any::<bool>(),
            binary in proptest::option::of(0usize..400),
        ) {
            let mode = if block { Mode::Block } else { Mode::Lines };
            let run = |chunks: &[&[u8]]| {
                let mut d = Decoder::new();
                let mut out = Vec::new();
                for c in chunks {
                    d.push(c);
                    while let Some(f) = d.next_frame(mode) {
                        out.push(f);
                    }
                }
                out
            };
            let cut = cut.min(bytes.len());
            prop_assert_eq!(run(&[&bytes]), run(&[&bytes[..cut], &bytes[cut..]]));
            let mut d = Decoder::new();
            d.push(&bytes);
            while d.next_dte_frame(binary).is_some() {}
        }
    }

    /// Found by the `wire` fuzz target: a malformed line after `+S\r` reported 27 bytes
    /// when its leading `\n` came with it and 26 when the `\n` had been buffered alone.
    #[test]
    fn a_malformed_line_reports_the_same_length_whole_and_split() {
        let input: &[u8] = b"+S\r\nSB\x17\0\0\0\0\0\0\0DIX: 5\xd7\xdf-1, 5,\0\n";
        let whole = frames_of(&[input]);
        let (a, b) = input.split_at(4);
        assert_eq!(frames_of(&[a, b]), whole);
        assert_eq!(whole.len(), 2);
        let Some(Err(m)) = whole.get(1) else {
            panic!("expected a malformed line, got {whole:?}");
        };
        assert_eq!((m.len, m.reason), (26, MalformedReason::NotUtf8));
    }
}
