//! Recorded clips (WAV, MP3, FLAC, Ogg Vorbis) decoded with symphonia, mixed to mono and
//! resampled to 8 kHz.
//!
//! Clip files come from operators, so they are untrusted: every failure is an error
//! naming the file, never a panic, and a clip longer than [`MAX_CLIP`] is refused rather
//! than decoded into memory without bound.

use std::path::Path;
use std::time::Duration;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::pcm::{Pcm, RATE, resample, to_i16};

/// The longest clip taken: a spoken warning is about 20 s; ten minutes is generous and
/// still bounded.
pub const MAX_CLIP: Duration = Duration::from_secs(600);

/// Why a clip could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The clip's path.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// Symphonia recognised no container or codec, or the stream is corrupt.
    #[error("{what}: cannot decode audio: {reason}")]
    Format {
        /// The clip's path or a label.
        what: String,
        /// What the decoder said.
        reason: String,
    },
    /// The stream has no audio track or no sample rate.
    #[error("{0}: no audio track with a sample rate")]
    NoAudio(String),
    /// Longer than [`MAX_CLIP`].
    #[error("{0}: longer than {max} s", max = MAX_CLIP.as_secs())]
    TooLong(String),
}

/// Decodes a clip file to 8 kHz mono.
pub fn decode_file(path: &Path) -> Result<Pcm, DecodeError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let ext = path.extension().and_then(|e| e.to_str());
    decode_bytes(bytes, ext, &path.display().to_string())
}

/// Decodes clip bytes to 8 kHz mono. `ext` (`wav`, `mp3`, ...) is a hint for the prober;
/// `what` names the clip in errors.
pub fn decode_bytes(bytes: Vec<u8>, ext: Option<&str>, what: &str) -> Result<Pcm, DecodeError> {
    let (rate, mono) = decode_native(bytes, ext, what)?;
    Ok(Pcm {
        rate: RATE,
        samples: to_i16(&resample(&mono, rate, RATE)),
    })
}

/// Decodes to mono f32 at the clip's own rate.
fn decode_native(
    bytes: Vec<u8>,
    ext: Option<&str>,
    what: &str,
) -> Result<(u32, Vec<f32>), DecodeError> {
    let fail = |e: SymError| DecodeError::Format {
        what: what.to_owned(),
        reason: e.to_string(),
    };
    let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = ext {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(fail)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| DecodeError::NoAudio(what.to_owned()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| DecodeError::NoAudio(what.to_owned()))?
        .clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(fail)?;
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut mono: Vec<f32> = Vec::new();
    let mut frame: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A truncated file ends the stream; what was decoded is kept.
            Err(SymError::IoError(_)) => break,
            Err(e) => return Err(fail(e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            // One corrupt packet is skipped, as players do.
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(fail(e)),
        };
        let spec = buf.spec();
        rate = spec.rate();
        let channels = spec.channels().count().max(1);
        frame.clear();
        buf.copy_to_vec_interleaved(&mut frame);
        mono.extend(
            frame
                .chunks(channels)
                .map(|f| f.iter().sum::<f32>() / channels as f32),
        );
        if rate > 0 && mono.len() as u64 > u64::from(rate) * MAX_CLIP.as_secs() {
            return Err(DecodeError::TooLong(what.to_owned()));
        }
    }
    if rate == 0 {
        return Err(DecodeError::NoAudio(what.to_owned()));
    }
    Ok((rate, mono))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// The fixtures are a 0.5 s, 1 kHz sine at half scale, 22.05 kHz, made with lame,
    /// flac and oggenc from the same stereo WAV.
    #[test]
    fn every_clip_format_decodes_to_the_same_8khz_tone() {
        for name in [
            "tone-1khz.wav",
            "tone-1khz.mp3",
            "tone-1khz.flac",
            "tone-1khz.ogg",
        ] {
            let pcm = decode_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(pcm.rate, 8000, "{name}");
            // MP3 adds encoder delay and padding; all are about half a second.
            let ms = pcm.duration().as_millis();
            assert!((480..=600).contains(&ms), "{name}: {ms} ms");
            // Level of a 0.5 sine is 0.354 (lossy codecs lose a little).
            let mid = Pcm {
                rate: 8000,
                samples: pcm.samples[800..3200].to_vec(),
            };
            assert!(
                (mid.rms() - 0.354).abs() < 0.04,
                "{name}: rms {}",
                mid.rms()
            );
            let crossings = mid
                .samples
                .windows(2)
                .filter(|w| (w[0] < 0) != (w[1] < 0))
                .count();
            // 1 kHz over 0.3 s: 600 crossings.
            assert!((590..=610).contains(&crossings), "{name}: {crossings}");
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors_or_short_clips_never_panics() {
        assert!(decode_bytes(b"not audio at all".to_vec(), None, "junk").is_err());
        assert!(decode_bytes(Vec::new(), Some("mp3"), "empty").is_err());
        let flac = std::fs::read(fixture("tone-1khz.flac")).unwrap();
        for cut in [4, 40, 100, 1000, 5000] {
            let _ = decode_bytes(flac[..cut].to_vec(), Some("flac"), "cut");
        }
        let e = decode_file(Path::new("/nonexistent/clip.wav")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/clip.wav"), "{e}");
    }
}
