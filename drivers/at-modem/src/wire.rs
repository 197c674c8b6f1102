//! AT framing in both directions.
//!
//! Modem → driver (DCE → DTE): response lines `\r\n<line>\r\n`, the `> ` prompt that
//! `AT+CMGS` waits on (no line end), final result codes, and the two-line frames whose
//! second line is a PDU (`+CMT:`, `+CDS:`, `+CMGR:`, `+CMGL:`). [`parse`] is a pure function
//! of the bytes buffered so far: it gives the same frames whether input arrives whole, byte
//! by byte or split anywhere, which is what lets the driver read a serial port in whatever
//! chunks the kernel hands over.
//!
//! Driver → modem (DTE → DCE): command lines ended by CR, and a PDU body ended by Ctrl-Z
//! (or cancelled by ESC). [`parse_dte`] is the simulator's side of that.
//!
//! Device bytes are untrusted: a line that is not UTF-8, holds control bytes or runs longer
//! than [`MAX_LINE`] comes back as [`Malformed`] with the number of bytes to skip, so the
//! caller reports it and carries on with the next line.

use std::fmt;

/// Longest line accepted. A PDU line is at most 2 × 176 hex digits; anything much longer
/// is a device babbling (or the wrong baud rate) and is skipped in pieces of this size.
pub const MAX_LINE: usize = 4096;

/// Ctrl-Z: ends a PDU body after the `> ` prompt.
pub const CTRL_Z: u8 = 0x1A;
/// ESC: abandons a PDU body after the `> ` prompt.
pub const ESC: u8 = 0x1B;

/// A final result code: the end of one command's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalResult {
    /// `OK`.
    Ok,
    /// `ERROR` (no detail: `AT+CMEE=1` not in force, or a syntax error).
    Error,
    /// `+CME ERROR: <n>`: an equipment error (TS 27.007 §9.2).
    CmeError(u16),
    /// `+CMS ERROR: <n>`: a message service error (TS 27.005 §3.2.5).
    CmsError(u16),
}

/// One frame from the modem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An information response or an unsolicited result code, without its line end.
    Line(String),
    /// The `> ` prompt: the modem waits for a PDU body.
    Prompt,
    /// A final result code.
    Final(FinalResult),
    /// A header (`+CMT:`, `+CDS:`, `+CMGR:`, `+CMGL:`) and the hex PDU line after it.
    Pdu {
        /// The header line, e.g. `+CMGR: 0,,25`.
        header: String,
        /// The PDU in hex as the modem sent it.
        pdu: String,
    },
    /// A command line echoed back while echo is on (`ATE1`); the driver ignores it.
    Echo(String),
}

/// Bytes that do not form a frame; skip `len` bytes and report them.
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

/// Why bytes were refused as a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedReason {
    /// The line is not valid UTF-8 (line noise, wrong baud rate).
    NotUtf8,
    /// The line holds NUL or other control bytes.
    ControlBytes,
    /// No line end within [`MAX_LINE`] bytes.
    TooLong,
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MalformedReason::NotUtf8 => "not UTF-8",
            MalformedReason::ControlBytes => "control bytes in line",
            MalformedReason::TooLong => "line too long",
        })
    }
}

/// Headers whose next line is a PDU (in PDU mode, `AT+CMGF=0`).
const PDU_HEADERS: [&str; 4] = ["+CMT:", "+CDS:", "+CMGR:", "+CMGL:"];

fn is_eol(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// A raw line found in the buffer: where it starts and ends, and where the next one begins.
struct RawLine {
    start: usize,
    end: usize,
    next: usize,
}

/// Finds the next line at or after `from`, skipping line ends first. `Ok(None)` means the
/// line is not complete yet; `Err(next)` means an overlong run of bytes ending at `next`.
fn next_line(buf: &[u8], from: usize) -> Result<Option<RawLine>, usize> {
    let start = from
        + buf
            .get(from..)
            .unwrap_or(&[])
            .iter()
            .take_while(|b| is_eol(**b))
            .count();
    let rest = buf.get(start..).unwrap_or(&[]);
    // Look no further than MAX_LINE + 1 bytes so the verdict does not depend on how much
    // was buffered beyond that.
    let window = &rest[..rest.len().min(MAX_LINE + 1)];
    match window.iter().position(|b| is_eol(*b)) {
        Some(n) if n <= MAX_LINE => Ok(Some(RawLine {
            start,
            end: start + n,
            next: start + n + 1,
        })),
        Some(_) => Err(start + MAX_LINE),
        None if rest.len() > MAX_LINE => Err(start + MAX_LINE),
        None => Ok(None),
    }
}

/// Checks a line and returns it as text.
fn line_text(raw: &[u8], skip: usize) -> Result<&str, Malformed> {
    let malformed = |reason| Malformed {
        len: skip,
        raw: raw.to_vec(),
        reason,
    };
    let text = std::str::from_utf8(raw).map_err(|_| malformed(MalformedReason::NotUtf8))?;
    if text
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\u{1A}')
    {
        return Err(malformed(MalformedReason::ControlBytes));
    }
    Ok(text)
}

/// Parses the next frame from the modem. `Ok(None)`: not enough bytes yet (nothing is
/// consumed; line ends before a frame are skipped as part of the frame that follows).
/// `Ok(Some((frame, n)))`: drop `n` bytes from the buffer. `Err(m)`: drop `m.len` bytes and
/// report them.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, Malformed> {
    let start = buf.iter().take_while(|b| is_eol(**b)).count();
    let rest = buf.get(start..).unwrap_or(&[]);
    // The prompt has no line end; it is recognised by its two bytes.
    match rest {
        [] | [b'>'] => return Ok(None),
        [b'>', b' ', ..] => return Ok(Some((Frame::Prompt, start + 2))),
        _ => {}
    }
    let line = match next_line(buf, start) {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(None),
        Err(next) => {
            let raw = buf.get(start..next).unwrap_or(&[]).to_vec();
            return Err(Malformed {
                len: next,
                raw,
                reason: MalformedReason::TooLong,
            });
        }
    };
    let raw = buf.get(line.start..line.end).unwrap_or(&[]);
    let text = line_text(raw, line.next)?;
    let frame = classify(text);
    if let Frame::Line(header) = &frame
        && PDU_HEADERS.iter().any(|h| header.starts_with(h))
    {
        // The PDU follows on the next line; wait for it, but take it only if it is hex so
        // a header without a PDU (text mode, a truncated response) does not swallow `OK`.
        match next_line(buf, line.next) {
            Ok(Some(pdu_line)) => {
                let pdu = buf.get(pdu_line.start..pdu_line.end).unwrap_or(&[]);
                if !pdu.is_empty() && pdu.iter().all(u8::is_ascii_hexdigit) {
                    let pdu = String::from_utf8_lossy(pdu).into_owned();
                    return Ok(Some((
                        Frame::Pdu {
                            header: header.clone(),
                            pdu,
                        },
                        pdu_line.next,
                    )));
                }
            }
            Ok(None) => return Ok(None),
            Err(_) => {}
        }
    }
    Ok(Some((frame, line.next)))
}

/// Sorts one complete line into its kind of frame.
fn classify(text: &str) -> Frame {
    let trimmed = text.trim();
    if trimmed == "OK" {
        return Frame::Final(FinalResult::Ok);
    }
    if trimmed == "ERROR" {
        return Frame::Final(FinalResult::Error);
    }
    for (prefix, make) in [
        (
            "+CME ERROR:",
            FinalResult::CmeError as fn(u16) -> FinalResult,
        ),
        (
            "+CMS ERROR:",
            FinalResult::CmsError as fn(u16) -> FinalResult,
        ),
    ] {
        if let Some(code) = trimmed.strip_prefix(prefix) {
            // A verbose error (`AT+CMEE=2`) has text, not a number: keep it as a line for
            // the record rather than guessing a code.
            if let Ok(n) = code.trim().parse::<u16>() {
                return Frame::Final(make(n));
            }
        }
    }
    let upper = trimmed.get(..2).map(str::to_ascii_uppercase);
    if upper.as_deref() == Some("AT") || trimmed.contains('\u{1A}') {
        return Frame::Echo(trimmed.trim_end_matches('\u{1A}').to_owned());
    }
    Frame::Line(trimmed.to_owned())
}

/// Writes a frame as a modem would (the simulator's side).
pub fn emit(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Line(line) => push_line(out, line),
        Frame::Prompt => out.extend_from_slice(b"\r\n> "),
        Frame::Final(result) => push_line(out, &final_text(*result)),
        Frame::Pdu { header, pdu } => {
            push_line(out, header);
            out.extend_from_slice(pdu.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Frame::Echo(cmd) => {
            out.extend_from_slice(cmd.as_bytes());
            out.push(b'\r');
        }
    }
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The text of a final result code.
pub fn final_text(result: FinalResult) -> String {
    match result {
        FinalResult::Ok => "OK".to_owned(),
        FinalResult::Error => "ERROR".to_owned(),
        FinalResult::CmeError(n) => format!("+CME ERROR: {n}"),
        FinalResult::CmsError(n) => format!("+CMS ERROR: {n}"),
    }
}

/// One frame from the driver, as the modem reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DteFrame {
    /// A command line without its CR, e.g. `AT+CMGS=31`.
    Command(String),
    /// A PDU body ended by Ctrl-Z (hex, without the Ctrl-Z).
    Body(String),
    /// A PDU body abandoned with ESC.
    Cancel,
}

/// Parses the next frame the driver sent (the simulator's side). Commands end with CR
/// (a LF alone is tolerated), bodies with Ctrl-Z; the driver only sends a body after the
/// prompt and a body never holds CR, so no state is needed to tell them apart.
pub fn parse_dte(buf: &[u8]) -> Result<Option<(DteFrame, usize)>, Malformed> {
    let start = buf.iter().take_while(|b| is_eol(**b)).count();
    let rest = buf.get(start..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(MAX_LINE + 1)];
    let Some(n) = window
        .iter()
        .position(|b| is_eol(*b) || *b == CTRL_Z || *b == ESC)
    else {
        if rest.len() > MAX_LINE {
            let raw = rest[..MAX_LINE].to_vec();
            return Err(Malformed {
                len: start + MAX_LINE,
                raw,
                reason: MalformedReason::TooLong,
            });
        }
        return Ok(None);
    };
    let consumed = start + n + 1;
    let raw = &rest[..n];
    let end = window.get(n).copied();
    if end == Some(ESC) {
        return Ok(Some((DteFrame::Cancel, consumed)));
    }
    let text = line_text(raw, consumed)?.to_owned();
    if end == Some(CTRL_Z) {
        Ok(Some((DteFrame::Body(text), consumed)))
    } else {
        Ok(Some((DteFrame::Command(text.trim().to_owned()), consumed)))
    }
}

/// A framing function: [`parse`] or [`parse_dte`].
type ParseFn<F> = fn(&[u8]) -> Result<Option<(F, usize)>, Malformed>;

/// A receive buffer in front of [`parse`]: append bytes as they come, take frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the device.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next frame or refused run of bytes, if complete.
    pub fn next_frame(&mut self) -> Option<Result<Frame, Malformed>> {
        self.next_with(parse)
    }

    /// The next frame from the driver's side (for the simulator), if complete.
    pub fn next_dte_frame(&mut self) -> Option<Result<DteFrame, Malformed>> {
        self.next_with(parse_dte)
    }

    /// Forgets everything buffered (the port was closed).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    fn next_with<F>(&mut self, parse: ParseFn<F>) -> Option<Result<F, Malformed>> {
        // Line ends before a frame are skipped by the parsers anyway; dropping them here
        // keeps an endless run of CRLF from growing the buffer, and makes the lengths
        // reported in `Malformed` the same however the input was split.
        let lead = self.buf.iter().take_while(|b| is_eol(**b)).count();
        self.buf.drain(..lead);
        let out = match parse(&self.buf) {
            Ok(None) => return None,
            Ok(Some((frame, n))) => (Ok(frame), n),
            Err(m) => {
                let n = m.len;
                (Err(m), n)
            }
        };
        self.buf.drain(..out.1.min(self.buf.len()));
        Some(out.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(chunks: &[&[u8]]) -> Vec<Result<Frame, Malformed>> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(f) = d.next_frame() {
                out.push(f);
            }
        }
        out
    }

    const SESSION: &[u8] = b"AT+CSQ\r\r\n+CSQ: 21,99\r\n\r\nOK\r\n\r\n> \r\n+CMGS: 42\r\n\r\nOK\r\n\
\r\n+CMTI: \"ME\",3\r\n\r\n+CMGR: 0,,25\r\n0891683108100005F0040D91683119325476F800004270100103002305C1E1121403\r\n\r\nOK\r\n\
\r\n+CMS ERROR: 42\r\n\r\n+CME ERROR: 10\r\nERROR\r\n+CDS: 26\r\n0891683108100005F0062A0D91683108108300F0427010010300234270100103502300\r\n";

    fn session_frames() -> Vec<Result<Frame, Malformed>> {
        vec![
            Ok(Frame::Echo("AT+CSQ".into())),
            Ok(Frame::Line("+CSQ: 21,99".into())),
            Ok(Frame::Final(FinalResult::Ok)),
            Ok(Frame::Prompt),
            Ok(Frame::Line("+CMGS: 42".into())),
            Ok(Frame::Final(FinalResult::Ok)),
            Ok(Frame::Line("+CMTI: \"ME\",3".into())),
            Ok(Frame::Pdu {
                header: "+CMGR: 0,,25".into(),
                pdu: "0891683108100005F0040D91683119325476F800004270100103002305C1E1121403".into(),
            }),
            Ok(Frame::Final(FinalResult::Ok)),
            Ok(Frame::Final(FinalResult::CmsError(42))),
            Ok(Frame::Final(FinalResult::CmeError(10))),
            Ok(Frame::Final(FinalResult::Error)),
            Ok(Frame::Pdu {
                header: "+CDS: 26".into(),
                pdu: "0891683108100005F0062A0D91683108108300F0427010010300234270100103502300"
                    .into(),
            }),
        ]
    }

    #[test]
    fn a_whole_session_frames_as_expected() {
        assert_eq!(frames_of(&[SESSION]), session_frames());
    }

    #[test]
    fn byte_by_byte_gives_the_same_frames() {
        let chunks: Vec<&[u8]> = SESSION.chunks(1).collect();
        assert_eq!(frames_of(&chunks), session_frames());
    }

    #[test]
    fn prompt_waits_for_its_second_byte() {
        assert_eq!(parse(b"\r\n>"), Ok(None));
        assert_eq!(parse(b"\r\n> "), Ok(Some((Frame::Prompt, 4))));
    }

    #[test]
    fn header_without_pdu_does_not_swallow_ok() {
        let frames = frames_of(&[b"\r\n+CMGR: 0,,25\r\n\r\nOK\r\n"]);
        assert_eq!(
            frames,
            vec![
                Ok(Frame::Line("+CMGR: 0,,25".into())),
                Ok(Frame::Final(FinalResult::Ok))
            ]
        );
    }

    #[test]
    fn garbage_is_reported_and_skipped() {
        let frames = frames_of(&[b"\r\n\xff\xfe\x00junk\r\n\r\nOK\r\n\x00\x01\r\nRING\r\n"]);
        assert!(matches!(&frames[0], Err(m) if m.reason == MalformedReason::NotUtf8));
        assert_eq!(frames[1], Ok(Frame::Final(FinalResult::Ok)));
        assert!(matches!(&frames[2], Err(m) if m.reason == MalformedReason::ControlBytes));
        assert_eq!(frames[3], Ok(Frame::Line("RING".into())));
        assert_eq!(frames.len(), 4);
    }

    #[test]
    fn overlong_lines_are_skipped_in_pieces() {
        let mut input = vec![b'A'; MAX_LINE * 2 + 10];
        input.extend_from_slice(b"\r\nOK\r\n");
        let frames = frames_of(&[&input]);
        assert!(
            matches!(&frames[0], Err(m) if m.reason == MalformedReason::TooLong && m.raw.len() == MAX_LINE)
        );
        assert!(matches!(&frames[1], Err(m) if m.reason == MalformedReason::TooLong));
        assert_eq!(frames.last(), Some(&Ok(Frame::Final(FinalResult::Ok))));
        // Split input agrees.
        let chunks: Vec<&[u8]> = input.chunks(7).collect();
        assert_eq!(frames_of(&chunks), frames);
    }

    #[test]
    fn emit_and_parse_mirror_each_other() {
        let frames: Vec<Frame> = session_frames().into_iter().map(|f| f.unwrap()).collect();
        let mut bytes = Vec::new();
        for f in &frames {
            emit(f, &mut bytes);
        }
        let back: Vec<Frame> = frames_of(&[&bytes])
            .into_iter()
            .map(|f| f.unwrap())
            .collect();
        assert_eq!(back, frames);
        let mut one = Vec::new();
        emit(&Frame::Final(FinalResult::CmsError(331)), &mut one);
        assert_eq!(one, b"\r\n+CMS ERROR: 331\r\n");
    }

    #[test]
    fn dte_frames_commands_bodies_and_cancel() {
        let mut d = Decoder::new();
        d.push(
            b"ATE0\rAT+CMGS=20\r0011000D91683108108300F00000AA05C1E1121403\x1aAT+CMGS=5\r00\x1b",
        );
        let mut got = Vec::new();
        while let Some(f) = d.next_dte_frame() {
            got.push(f.unwrap());
        }
        assert_eq!(
            got,
            vec![
                DteFrame::Command("ATE0".into()),
                DteFrame::Command("AT+CMGS=20".into()),
                DteFrame::Body("0011000D91683108108300F00000AA05C1E1121403".into()),
                DteFrame::Command("AT+CMGS=5".into()),
                DteFrame::Cancel,
            ]
        );
    }

    #[test]
    fn a_run_of_line_ends_does_not_grow_the_buffer() {
        let mut d = Decoder::new();
        for _ in 0..1000 {
            d.push(b"\r\n");
            assert!(d.next_frame().is_none());
        }
        assert!(d.buf.is_empty());
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
            prop_assert_eq!(frames_of(&chunks), session_frames());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_agrees(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cut in 0usize..600,
        ) {
            let whole = frames_of(&[&bytes]);
            let cut = cut.min(bytes.len());
            let split = frames_of(&[&bytes[..cut], &bytes[cut..]]);
            prop_assert_eq!(whole, split);
            let mut d = Decoder::new();
            d.push(&bytes);
            while d.next_dte_frame().is_some() {}
        }
    }
}
