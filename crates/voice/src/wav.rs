//! RIFF WAVE for 16-bit PCM: written by the speaker simulator (what a speaker heard),
//! read from `espeak-ng --stdout`, whose header gives no length because it streams
//! (0x7FFFFFFF); this reader takes the data to the end of the bytes instead.

use crate::pcm::Pcm;

/// Why bytes are not a WAV this reader takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// No `RIFF....WAVE` header.
    #[error("not a RIFF WAVE file")]
    NotWave,
    /// The `fmt ` chunk is missing or short.
    #[error("WAVE without a usable fmt chunk")]
    NoFormat,
    /// Not 16-bit integer PCM (other encodings go through the general decoder).
    #[error("WAVE format {format} with {bits} bits per sample is not 16-bit PCM")]
    Unsupported {
        /// The format tag (1 = PCM).
        format: u16,
        /// Bits per sample.
        bits: u16,
    },
    /// No `data` chunk.
    #[error("WAVE without a data chunk")]
    NoData,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([*s.first()?, *s.get(1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// Reads 16-bit PCM WAVE bytes; several channels are mixed down to one.
pub fn read(bytes: &[u8]) -> Result<Pcm, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWave);
    }
    let mut at = 12usize;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while let (Some(id), Some(len)) = (
        bytes.get(at..at.saturating_add(4)),
        u32_at(bytes, at.saturating_add(4)),
    ) {
        let body = at.saturating_add(8);
        if id == b"fmt " {
            let f = (|| {
                Some((
                    u16_at(bytes, body)?,
                    u16_at(bytes, body.checked_add(2)?)?,
                    u32_at(bytes, body.checked_add(4)?)?,
                    u16_at(bytes, body.checked_add(14)?)?,
                ))
            })();
            fmt = Some(f.ok_or(WavError::NoFormat)?);
        } else if id == b"data" {
            let (format, channels, rate, bits) = fmt.ok_or(WavError::NoFormat)?;
            if format != 1 || bits != 16 || channels == 0 {
                return Err(WavError::Unsupported { format, bits });
            }
            // A streamed header says 0x7FFFFFFF or 0xFFFFFFFF: take what is there.
            let end = body
                .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                .min(bytes.len());
            let data = bytes.get(body..end).unwrap_or(&[]);
            let ch = usize::from(channels);
            let samples = data
                .chunks_exact(2 * ch)
                .map(|frame| {
                    let sum: i32 = frame
                        .chunks_exact(2)
                        .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                        .sum();
                    (sum / i32::from(channels)) as i16
                })
                .collect();
            return Ok(Pcm { rate, samples });
        }
        // Chunks are padded to an even length.
        let step = usize::try_from(len).unwrap_or(usize::MAX);
        at = body.saturating_add(step).saturating_add(step & 1);
    }
    Err(if fmt.is_some() {
        WavError::NoData
    } else {
        WavError::NoFormat
    })
}

/// Writes mono 16-bit PCM as a WAVE file.
pub fn write(pcm: &Pcm) -> Vec<u8> {
    let data_len = u32::try_from(pcm.samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + pcm.samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&pcm.rate.to_le_bytes());
    out.extend_from_slice(&(pcm.rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in &pcm.samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_wav_reads_back_with_the_known_header() {
        let pcm = Pcm {
            rate: 8000,
            samples: vec![0, 1, -1, i16::MAX, i16::MIN],
        };
        let bytes = write(&pcm);
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(u32_at(&bytes, 4), Some(36 + 10));
        assert_eq!(&bytes[36..40], b"data");
        assert_eq!(bytes.len(), 44 + 10);
        assert_eq!(&bytes[44..48], &[0, 0, 1, 0]);
        assert_eq!(read(&bytes), Ok(pcm));
    }

    #[test]
    fn a_streamed_header_and_stereo_are_taken() {
        // espeak-ng's header: RIFF size and data size 0x7FFFFFFF-ish, mono 22050 Hz.
        let mut b = write(&Pcm {
            rate: 22050,
            samples: vec![5; 100],
        });
        b[40..44].copy_from_slice(&0x7FFF_F000u32.to_le_bytes());
        b[4..8].copy_from_slice(&0x7FFF_F024u32.to_le_bytes());
        let p = read(&b).unwrap();
        assert_eq!((p.rate, p.samples.len()), (22050, 100));
        // Stereo: channels 2, block align 4; frames (100, 300) mix to 200.
        let mut s = write(&Pcm {
            rate: 8000,
            samples: vec![100, 300, 100, 300],
        });
        s[22..24].copy_from_slice(&2u16.to_le_bytes());
        s[32..34].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(read(&s).unwrap().samples, vec![200, 200]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(read(b""), Err(WavError::NotWave));
        assert_eq!(read(b"RIFF\0\0\0\0WAVE"), Err(WavError::NoFormat));
        assert_eq!(
            read(b"RIFF\0\0\0\0WAVEdata\xff\xff\xff\xff"),
            Err(WavError::NoFormat)
        );
        let mut b = write(&Pcm {
            rate: 8000,
            samples: vec![1, 2],
        });
        b[34..36].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(read(&b), Err(WavError::Unsupported { format: 1, bits: 8 }));
        for cut in 0..b.len() {
            let _ = read(&b[..cut]);
        }
    }
}
