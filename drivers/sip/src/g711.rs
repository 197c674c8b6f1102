//! A tiny G.711 encoder (ITU-T G.711, the Sun `g711.c` algorithm) so the driver can send
//! audio on its own. `tocsin-voice` carries the full codec and text-to-speech; the daemon
//! can plug it in through [`PromptSource`](crate::prompt::PromptSource).

use serde::{Deserialize, Serialize};

/// Which G.711 law a call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// µ-law, RTP payload type 0 (`PCMU/8000`).
    Pcmu,
    /// A-law, RTP payload type 8 (`PCMA/8000`); what Chinese trunks usually prefer.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec of a static payload type.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The encoding name in `a=rtpmap`.
    pub fn rtpmap_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Encodes one 16-bit linear sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => ulaw(sample),
            Codec::Pcma => alaw(sample),
        }
    }

    /// Decodes one code to a 16-bit linear sample (the simulator measures loudness).
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_decode(code),
            Codec::Pcma => alaw_decode(code),
        }
    }

    /// The code of digital silence.
    pub fn silence(self) -> u8 {
        self.encode(0)
    }
}

fn segment(v: i32, ends: &[i32; 8]) -> u8 {
    ends.iter().position(|&e| v <= e).map_or(8, |p| p as u8)
}

fn ulaw(sample: i16) -> u8 {
    const ENDS: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut v = i32::from(sample) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(8159) + (0x84 >> 2);
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let uval = (seg << 4) | (((v >> (seg + 1)) & 0xF) as u8);
    uval ^ mask
}

fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let mut t = ((i32::from(u) & 0x0F) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    let v = if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 };
    v as i16
}

fn alaw(sample: i16) -> u8 {
    const ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = i32::from(sample) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut aval = seg << 4;
    aval |= if seg < 2 {
        ((v >> 1) & 0xF) as u8
    } else {
        ((v >> seg) & 0xF) as u8
    };
    aval ^ mask
}

fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = (i32::from(a) & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_extremes_have_the_standard_codes() {
        assert_eq!(Codec::Pcmu.silence(), 0xFF);
        assert_eq!(Codec::Pcma.silence(), 0xD5);
        assert_eq!(Codec::Pcmu.encode(i16::MAX), 0x80);
        assert_eq!(Codec::Pcmu.encode(i16::MIN), 0x00);
        assert_eq!(Codec::Pcma.encode(i16::MAX), 0xAA);
        assert_eq!(Codec::Pcma.encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for code in 0..=255u8 {
                // µ-law has two zeros (0x7F and 0xFF); both decode to 0 and encode to 0xFF.
                if codec == Codec::Pcmu && code == 0x7F {
                    continue;
                }
                assert_eq!(
                    codec.encode(codec.decode(code)),
                    code,
                    "{codec:?} {code:#04x}"
                );
            }
        }
    }

    #[test]
    fn loud_samples_decode_close_to_what_was_encoded() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for s in [-20000i16, -1000, 1000, 8000, 20000] {
                let back = i32::from(codec.decode(codec.encode(s)));
                assert!(
                    (back - i32::from(s)).abs() < 1100,
                    "{codec:?} {s} -> {back}"
                );
            }
        }
    }
}
