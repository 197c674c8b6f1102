//! G.711 µ-law and A-law (ITU-T G.711), the codecs every IP speaker and phone trunk takes.
//!
//! The algorithm is the public-domain Sun Microsystems `g711.c` one: µ-law works on the
//! 14 most significant bits with a bias of 0x84, A-law on the 13 most significant bits,
//! eight segments each. Decoding then re-encoding any code gives the same code back.

use serde::{Deserialize, Serialize};

/// Bias added before the µ-law segment search (0x84 on the 16-bit scale, 0x21 on 14 bits).
const ULAW_BIAS: i32 = 0x84;
/// Largest 14-bit magnitude µ-law represents before clipping.
const ULAW_CLIP: i32 = 8159;
/// Segment end points of µ-law on the 14-bit scale after biasing.
const ULAW_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Segment end points of A-law on the 13-bit scale.
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Which G.711 law a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// µ-law, RTP payload type 0 (`PCMU/8000`); North America, Japan, most IP paging.
    Pcmu,
    /// A-law, RTP payload type 8 (`PCMA/8000`); Europe and China's trunks.
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

    /// The codec of a static RTP payload type, if it is a G.711 one.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The code of digital silence (0xFF for µ-law, 0xD5 for A-law).
    pub fn silence(self) -> u8 {
        self.encode_sample(0)
    }

    /// Encodes one linear sample.
    pub fn encode_sample(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(s),
            Codec::Pcma => linear_to_alaw(s),
        }
    }

    /// Decodes one code to a linear sample.
    pub fn decode_sample(self, c: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_to_linear(c),
            Codec::Pcma => alaw_to_linear(c),
        }
    }

    /// Encodes linear samples, one byte each.
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        samples.iter().map(|&s| self.encode_sample(s)).collect()
    }

    /// Decodes codes to linear samples.
    pub fn decode(self, codes: &[u8]) -> Vec<i16> {
        codes.iter().map(|&c| self.decode_sample(c)).collect()
    }

    /// The lowercase name used in config (`pcmu`, `pcma`).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The segment of `v` in a table of end points (8 when past the last one).
fn segment(v: i32, ends: &[i32; 8]) -> i32 {
    let mut seg = 0;
    for &end in ends {
        if v <= end {
            return seg;
        }
        seg += 1;
    }
    seg
}

/// Encodes a 16-bit linear sample as µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 2;
    let mask: i32 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(v, &ULAW_SEG_END);
    let code = if seg >= 8 {
        0x7F ^ mask
    } else {
        ((seg << 4) | ((v >> (seg + 1)) & 0x0F)) ^ mask
    };
    (code & 0xFF) as u8
}

/// Decodes a µ-law code to a 16-bit linear sample.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = i32::from(!code);
    let t = (((u & 0x0F) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
    let v = if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    };
    // The largest magnitude is 32124, inside i16.
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// Encodes a 16-bit linear sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask: i32 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &ALAW_SEG_END);
    let code = if seg >= 8 {
        0x7F ^ mask
    } else {
        let quant = if seg < 2 {
            (v >> 1) & 0x0F
        } else {
            (v >> seg) & 0x0F
        };
        ((seg << 4) | quant) ^ mask
    };
    (code & 0xFF) as u8
}

/// Decodes an A-law code to a 16-bit linear sample.
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = i32::from(code ^ 0x55);
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    let v = if a & 0x80 != 0 { t } else { -t };
    // The largest magnitude is 32256, inside i16.
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (linear, µ-law, A-law, µ-law decoded, A-law decoded), computed with CPython's
    /// `audioop` (an independent C implementation of the same reference algorithm).
    const VECTORS: [(i16, u8, u8, i16, i16); 21] = [
        (0, 0xFF, 0xD5, 0, 8),
        (1, 0xFF, 0xD5, 0, 8),
        (-1, 0x7E, 0x55, -8, -8),
        (2, 0xFF, 0xD5, 0, 8),
        (-2, 0x7E, 0x55, -8, -8),
        (100, 0xF2, 0xD3, 104, 104),
        (-100, 0x72, 0x53, -104, -104),
        (1000, 0xCE, 0xFA, 988, 1008),
        (-1000, 0x4E, 0x7A, -988, -1008),
        (4000, 0xAF, 0x9A, 4092, 4032),
        (-4000, 0x2F, 0x1A, -4092, -4032),
        (12345, 0x97, 0xBD, 12412, 12544),
        (-12345, 0x17, 0x3D, -12412, -12544),
        (32767, 0x80, 0xAA, 32124, 32256),
        (-32768, 0x00, 0x2A, -32124, -32256),
        (30000, 0x82, 0xA8, 30076, 30208),
        (-30000, 0x02, 0x28, -30076, -30208),
        (8, 0xFE, 0xD5, 8, 8),
        (-8, 0x7E, 0x55, -8, -8),
        (255, 0xE7, 0xDA, 260, 248),
        (-256, 0x67, 0x5A, -260, -248),
    ];

    #[test]
    fn known_vectors_encode_and_decode() {
        for (lin, u, a, ud, ad) in VECTORS {
            assert_eq!(linear_to_ulaw(lin), u, "µ-law of {lin}");
            assert_eq!(linear_to_alaw(lin), a, "A-law of {lin}");
            assert_eq!(ulaw_to_linear(u), ud, "µ-law {u:#04x}");
            assert_eq!(alaw_to_linear(a), ad, "A-law {a:#04x}");
        }
        assert_eq!(Codec::Pcmu.silence(), 0xFF);
        assert_eq!(Codec::Pcma.silence(), 0xD5);
    }

    #[test]
    fn every_input_matches_the_reference_checksums() {
        // Sums over all 65536 inputs and all 256 codes, from the same reference.
        let (mut su, mut sa) = (0u64, 0u64);
        for v in i16::MIN..=i16::MAX {
            su += u64::from(linear_to_ulaw(v));
            sa += u64::from(linear_to_alaw(v));
        }
        assert_eq!((su, sa), (5_694_092, 6_971_392));
        let du: i64 = (0..=255u8)
            .map(|c| i64::from(ulaw_to_linear(c)).abs())
            .sum();
        let da: i64 = (0..=255u8)
            .map(|c| i64::from(alaw_to_linear(c)).abs())
            .sum();
        assert_eq!((du, da), (1_532_928, 1_564_672));
    }

    #[test]
    fn decoding_then_encoding_is_the_identity_except_negative_zero() {
        for c in 0..=255u8 {
            // µ-law has two zeros (0xFF and 0x7F); both decode to 0, which encodes as 0xFF.
            let back = linear_to_ulaw(ulaw_to_linear(c));
            if c == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, c, "µ-law {c:#04x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "A-law {c:#04x}");
        }
    }

    #[test]
    fn payload_types_follow_rfc_3551() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(101), None);
    }
}
