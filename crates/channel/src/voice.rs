//! What a voice call plays: a [`PromptSource`] renders an attempt's text to 8 kHz mono
//! 16-bit audio. Every voice bearer (SIP trunks, modem calls) takes the same trait, so
//! the daemon plugs one speech renderer into all of them.
//!
//! [`ToneSource`] is the built-in prompt, an attention pattern (two-tone beeps separated
//! by pauses) of a configured length, so a driver works with no speech engine at all.

use std::sync::Arc;

/// 8000 samples per second, the telephone (G.711, modem PCM) rate.
pub const RATE: u32 = 8000;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;

/// Renders the text of an attempt to 8 kHz mono 16-bit samples.
pub trait PromptSource: Send + Sync {
    /// The audio for `text`. An empty result is played as one second of the built-in tone
    /// so a call never goes silent because a renderer failed.
    fn render(&self, text: &str) -> Arc<[i16]>;
}

/// The built-in prompt: 0.4 s of 950 Hz + 1400 Hz, 0.2 s pause, repeated for `secs`.
#[derive(Clone, Debug)]
pub struct ToneSource {
    audio: Arc<[i16]>,
}

impl ToneSource {
    /// A pattern lasting `secs` seconds, in whole frames (at least one, at most ten
    /// minutes; a length that is not a number gives one second).
    pub fn new(secs: f64) -> ToneSource {
        let secs = if secs.is_finite() {
            secs.clamp(0.02, 600.0)
        } else {
            1.0
        };
        let n = ((secs * f64::from(RATE)) as usize).div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES;
        let audio: Vec<i16> = (0..n)
            .map(|i| {
                // A 0.6 s cycle: 0.4 s of tone, then 0.2 s of silence.
                if i % 4800 >= 3200 {
                    return 0;
                }
                let t = i as f64 / f64::from(RATE);
                let v = (2.0 * std::f64::consts::PI * 950.0 * t).sin()
                    + (2.0 * std::f64::consts::PI * 1400.0 * t).sin();
                (v * 6000.0) as i16
            })
            .collect();
        ToneSource {
            audio: audio.into(),
        }
    }
}

impl PromptSource for ToneSource {
    fn render(&self, _text: &str) -> Arc<[i16]> {
        self.audio.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_lasts_whole_frames_and_is_not_silence() {
        let t = ToneSource::new(2.0).render("【红色预警】");
        assert_eq!(t.len(), 16000);
        assert_eq!(t.len() % FRAME_SAMPLES, 0);
        let loud = t.iter().filter(|s| s.unsigned_abs() > 1000).count();
        assert!(loud > 4000, "{loud}");
        assert!(t[3300..4700].iter().all(|s| *s == 0));
        assert_eq!(ToneSource::new(0.0).render("").len(), FRAME_SAMPLES);
        assert_eq!(ToneSource::new(f64::NAN).render("").len(), 8000);
    }

    #[test]
    fn every_render_shares_one_buffer() {
        let source = ToneSource::new(1.0);
        assert!(Arc::ptr_eq(&source.render("a"), &source.render("b")));
    }
}
