//! The client API's stream framing, the same on serial and TCP and in both directions:
//! `0x94 0xC3 <len MSB> <len LSB>` and then `len` bytes of protobuf (`ToRadio` to the radio,
//! `FromRadio` from it), with `len` at most [`MAX_FRAME`].
//!
//! Between frames the firmware prints its debug log as text lines; clients send wake bytes
//! (a run of `0xC3`) before their first frame. Such bytes come back as [`Frame::Log`]
//! lines, which the driver keeps as debug output, not as errors. A header whose length is
//! over [`MAX_FRAME`] means the stream lost sync: it is reported as [`Malformed`] and the
//! scan resumes one byte later, at the next `0x94 0xC3`.
//!
//! [`parse`] is a pure function of the bytes buffered so far, so the frames are the same
//! whether input arrives whole, byte by byte or split anywhere.

/// First byte of a frame header.
pub const START1: u8 = 0x94;
/// Second byte of a frame header.
pub const START2: u8 = 0xC3;
/// Longest protobuf a frame carries.
pub const MAX_FRAME: usize = 512;
/// Longest run of log text returned as one line; longer runs come in pieces.
pub const MAX_LOG_LINE: usize = 1024;
/// Wake bytes sent before the first frame, so a sleeping serial radio sees activity.
pub const WAKE: [u8; 32] = [START2; 32];

/// One item of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A framed protobuf, without its header.
    Packet(Vec<u8>),
    /// Text outside frames (the firmware's log, wake bytes, line noise), without its line
    /// end; lossily decoded.
    Log(String),
}

/// A frame header that cannot be right; skip `len` bytes and report them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame header claims {claimed} bytes (at most 512): stream out of sync")]
pub struct Malformed {
    /// How many bytes of the input to skip.
    pub len: usize,
    /// The length the header claimed.
    pub claimed: usize,
    /// The skipped bytes, for the report.
    pub raw: Vec<u8>,
}

/// Where the next frame header starts, looking at no more than `limit` bytes: a `0x94`
/// followed by `0xC3`, or a `0x94` that is the last byte buffered (it may be one).
fn find_start(buf: &[u8], limit: usize) -> Option<usize> {
    let window = buf.get(..buf.len().min(limit)).unwrap_or(buf);
    window
        .iter()
        .enumerate()
        .position(|(i, b)| *b == START1 && buf.get(i + 1).is_none_or(|n| *n == START2))
}

/// Parses the next item. `Ok(None)`: not enough bytes yet (nothing consumed).
/// `Ok(Some((frame, n)))`: drop `n` bytes. `Err(m)`: drop `m.len` bytes and report them.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, Malformed> {
    match buf {
        [] | [START1] | [START1, START2] | [START1, START2, _] => Ok(None),
        [START1, START2, hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if len > MAX_FRAME {
                return Err(Malformed {
                    len: 1,
                    claimed: len,
                    raw: vec![START1],
                });
            }
            match rest.get(..len) {
                Some(body) => Ok(Some((Frame::Packet(body.to_vec()), 4 + len))),
                None => Ok(None),
            }
        }
        _ => parse_text(buf),
    }
}

/// Text up to a line end or the next frame header, whichever comes first.
fn parse_text(buf: &[u8]) -> Result<Option<(Frame, usize)>, Malformed> {
    let newline = buf.iter().take(MAX_LOG_LINE).position(|b| *b == b'\n');
    // A header can start anywhere after the first byte (the first byte is not one).
    let start =
        find_start(buf.get(1..).unwrap_or(&[]), MAX_LOG_LINE.saturating_sub(1)).map(|i| i + 1);
    let (end, consumed) = match (newline, start) {
        (Some(n), Some(s)) if s < n => (s, s),
        (Some(n), _) => (n, n + 1),
        (None, Some(s)) => (s, s),
        (None, None) if buf.len() > MAX_LOG_LINE => (MAX_LOG_LINE, MAX_LOG_LINE),
        (None, None) => return Ok(None),
    };
    // A lone trailing 0x94 is a possible header: wait for the byte after it.
    if start == Some(end) && buf.get(end + 1).is_none() {
        return Ok(None);
    }
    let raw = buf.get(..end).unwrap_or(&[]);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    Ok(Some((
        Frame::Log(String::from_utf8_lossy(raw).into_owned()),
        consumed,
    )))
}

/// Writes a frame: a packet with its header (bodies over [`MAX_FRAME`] are the caller's
/// bug and are cut, never sent malformed), a log line with `\r\n`.
pub fn emit(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Packet(body) => {
            let body = body.get(..MAX_FRAME).unwrap_or(body);
            let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&[START1, START2]);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(body);
        }
        Frame::Log(line) => {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Frames a protobuf body.
pub fn frame_packet(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    emit(&Frame::Packet(body.to_vec()), &mut out);
    out
}

/// A buffer of received bytes and the frames in it.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next item, or `None` when more bytes are needed. The buffer never holds more
    /// than one frame or one log line's worth of bytes beyond what was pushed last.
    pub fn next_frame(&mut self) -> Option<Result<Frame, Malformed>> {
        let (item, consumed) = match parse(&self.buf) {
            Ok(None) => return None,
            Ok(Some((frame, n))) => (Ok(frame), n),
            Err(m) => {
                let n = m.len;
                (Err(m), n)
            }
        };
        let n = consumed.clamp(1, self.buf.len().max(1));
        self.buf.drain(..n.min(self.buf.len()));
        Some(item)
    }

    /// Forgets everything buffered (the port was reopened).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The protocol brief's vectors, headers included.
    const WANT_CONFIG_42: &[u8] = &[0x94, 0xC3, 0x00, 0x02, 0x18, 0x2A];
    const CONFIG_COMPLETE_42: &[u8] = &[0x94, 0xC3, 0x00, 0x02, 0x38, 0x2A];

    /// A session as a radio prints it: log lines, frames, a line cut by a frame.
    fn session() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"INFO  | ??:??:?? 3 [Router] Booted\r\n");
        s.extend_from_slice(CONFIG_COMPLETE_42);
        s.extend_from_slice(b"DEBUG | radio ");
        s.extend_from_slice(WANT_CONFIG_42);
        s.extend_from_slice(b"\r\n");
        s.extend_from_slice(&frame_packet(&[]));
        s.extend_from_slice(&frame_packet(&[0x5A; 512]));
        s
    }

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

    fn expected() -> Vec<Result<Frame, Malformed>> {
        vec![
            Ok(Frame::Log("INFO  | ??:??:?? 3 [Router] Booted".into())),
            Ok(Frame::Packet(vec![0x38, 0x2A])),
            Ok(Frame::Log("DEBUG | radio ".into())),
            Ok(Frame::Packet(vec![0x18, 0x2A])),
            Ok(Frame::Log(String::new())),
            Ok(Frame::Packet(vec![])),
            Ok(Frame::Packet(vec![0x5A; 512])),
        ]
    }

    #[test]
    fn a_session_frames_whole_and_byte_by_byte() {
        let s = session();
        assert_eq!(frames_of(&[&s]), expected());
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(frames_of(&bytes), expected());
    }

    #[test]
    fn brief_vectors_parse_and_emit_both_ways() {
        for (bytes, body) in [
            (WANT_CONFIG_42, &[0x18u8, 0x2A][..]),
            (CONFIG_COMPLETE_42, &[0x38, 0x2A][..]),
        ] {
            assert_eq!(
                parse(bytes),
                Ok(Some((Frame::Packet(body.to_vec()), bytes.len())))
            );
            assert_eq!(frame_packet(body), bytes);
        }
    }

    #[test]
    fn incomplete_frames_wait() {
        for n in 0..WANT_CONFIG_42.len() {
            assert_eq!(parse(&WANT_CONFIG_42[..n]), Ok(None), "{n} bytes");
        }
        assert_eq!(parse(b"no line end yet"), Ok(None));
        assert_eq!(parse(b"text then maybe a header \x94"), Ok(None));
    }

    #[test]
    fn an_oversized_length_resynchronises_at_the_next_header() {
        let mut s = vec![0x94, 0xC3, 0x02, 0x01];
        s.extend_from_slice(b"junk");
        s.extend_from_slice(WANT_CONFIG_42);
        let got = frames_of(&[&s]);
        assert_eq!(
            got[0],
            Err(Malformed {
                len: 1,
                claimed: 513,
                raw: vec![0x94]
            })
        );
        assert_eq!(got[1], Ok(Frame::Log("\u{FFFD}\u{2}\u{1}junk".into())));
        assert_eq!(got[2], Ok(Frame::Packet(vec![0x18, 0x2A])));
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn wake_bytes_before_a_frame_are_log_text() {
        let mut s = WAKE.to_vec();
        s.extend_from_slice(WANT_CONFIG_42);
        let got = frames_of(&[&s]);
        assert!(matches!(got[0], Ok(Frame::Log(_))));
        assert_eq!(got[1], Ok(Frame::Packet(vec![0x18, 0x2A])));
        // 0x94 runs as wake bytes too.
        let mut s = vec![0x94; 8];
        s.extend_from_slice(WANT_CONFIG_42);
        assert_eq!(
            frames_of(&[&s]).last(),
            Some(&Ok(Frame::Packet(vec![0x18, 0x2A])))
        );
    }

    #[test]
    fn endless_text_comes_in_bounded_pieces() {
        let s = vec![b'x'; 3 * MAX_LOG_LINE + 5];
        let mut d = Decoder::new();
        d.push(&s);
        let mut n = 0;
        while let Some(f) = d.next_frame() {
            assert_eq!(f, Ok(Frame::Log("x".repeat(MAX_LOG_LINE))));
            n += 1;
        }
        assert_eq!(n, 3);
        assert_eq!(d.buffered(), 5);
    }

    #[test]
    fn emit_and_parse_mirror_each_other() {
        for f in [
            Frame::Packet(vec![1, 2, 3]),
            Frame::Packet(vec![]),
            Frame::Log("INFO | GPS lock".into()),
            Frame::Log("北京 红色预警".into()),
        ] {
            let mut b = Vec::new();
            emit(&f, &mut b);
            assert_eq!(parse(&b), Ok(Some((f.clone(), b.len()))), "{f:?}");
        }
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_frames(cuts in proptest::collection::vec(0usize..2000, 0..20)) {
            let s = session();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % s.len()).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts {
                chunks.push(&s[from..c]);
                from = c;
            }
            chunks.push(&s[from..]);
            prop_assert_eq!(frames_of(&chunks), expected());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_agrees(
            bytes in proptest::collection::vec(prop_oneof![Just(0x94u8), Just(0xC3u8), Just(b'\n'), any::<u8>()], 0..1500),
            cut in 0usize..1500,
        ) {
            let cut = cut.min(bytes.len());
            let whole = frames_of(&[&bytes]);
            let split = frames_of(&[&bytes[..cut], &bytes[cut..]]);
            prop_assert_eq!(&whole, &split);
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(whole, frames_of(&bytewise));
        }
    }
}
