//! Mono 16-bit audio at a known sample rate, and the resampler that brings any clip to
//! the 8 kHz that G.711 carries.

use std::time::Duration;

/// The rate every rendered prompt has: G.711 telephony and RTP paging run at 8 kHz.
pub const RATE: u32 = 8000;

/// Mono 16-bit linear audio.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pcm {
    /// Samples per second.
    pub rate: u32,
    /// The samples.
    pub samples: Vec<i16>,
}

impl Pcm {
    /// Empty audio at `rate`.
    pub fn empty(rate: u32) -> Self {
        Pcm {
            rate,
            samples: Vec::new(),
        }
    }

    /// Silence of `d` at `rate`.
    pub fn silence(rate: u32, d: Duration) -> Self {
        Pcm {
            rate,
            samples: vec![0; samples_in(rate, d)],
        }
    }

    /// How long it plays.
    pub fn duration(&self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.rate))
    }

    /// Appends `other`, resampled to this rate if it differs.
    pub fn append(&mut self, other: &Pcm) {
        if other.rate == self.rate {
            self.samples.extend_from_slice(&other.samples);
        } else {
            let r = other.resampled(self.rate);
            self.samples.extend_from_slice(&r.samples);
        }
    }

    /// Appends `d` of silence.
    pub fn append_silence(&mut self, d: Duration) {
        let n = samples_in(self.rate, d);
        self.samples.resize(self.samples.len() + n, 0);
    }

    /// This audio at another rate.
    pub fn resampled(&self, to: u32) -> Pcm {
        let input: Vec<f32> = self
            .samples
            .iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect();
        Pcm {
            rate: to,
            samples: to_i16(&resample(&input, self.rate, to)),
        }
    }

    /// Root-mean-square level, 0.0 (silence) to 1.0 (full-scale square wave).
    pub fn rms(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let sum: f64 = self
            .samples
            .iter()
            .map(|&s| {
                let x = f64::from(s) / 32768.0;
                x * x
            })
            .sum();
        (sum / self.samples.len() as f64).sqrt()
    }
}

/// How many samples `d` holds at `rate`.
pub fn samples_in(rate: u32, d: Duration) -> usize {
    usize::try_from(u128::from(rate) * d.as_millis() / 1000).unwrap_or(usize::MAX)
}

/// Converts float samples in [-1, 1] to 16-bit, clipping what lies outside.
pub fn to_i16(input: &[f32]) -> Vec<i16> {
    input
        .iter()
        .map(|&x| {
            let x = if x.is_finite() { x } else { 0.0 };
            (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Zero crossings of the band-limiting kernel on each side, at the narrower of the two
/// Nyquist frequencies; 12 keeps the stop band well down for speech at small cost.
const ZERO_CROSSINGS: f64 = 12.0;
/// Cut-off as a fraction of the lower Nyquist frequency: a little guard band against
/// aliasing (speech above 3.6 kHz matters little on a loudspeaker).
const CUTOFF: f64 = 0.9;

/// Resamples `input` from `from` Hz to `to` Hz with a Hann-windowed sinc kernel that
/// low-passes below the lower Nyquist frequency first, so a 44.1 kHz clip does not alias
/// into the 8 kHz stream. Each output sample is normalised by the sum of its taps, so a
/// constant level stays constant even at the edges.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let step = f64::from(from) / f64::from(to);
    // Cut-off relative to the input rate's Nyquist: lower when downsampling.
    let fc = CUTOFF * (f64::from(to) / f64::from(from)).min(1.0);
    let half_width = ZERO_CROSSINGS / fc;
    let out_len = ((input.len() as f64) / step).floor() as usize;
    let last = input.len() as i64 - 1;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let t = n as f64 * step;
        let lo = ((t - half_width).ceil() as i64).max(0);
        let hi = ((t + half_width).floor() as i64).min(last);
        let (mut acc, mut wsum) = (0.0f64, 0.0f64);
        for k in lo..=hi {
            let x = t - k as f64;
            let w = fc * sinc(fc * x) * hann(x / half_width);
            let s = usize::try_from(k)
                .ok()
                .and_then(|i| input.get(i))
                .copied()
                .unwrap_or(0.0);
            acc += f64::from(s) * w;
            wsum += w;
        }
        out.push(if wsum.abs() > 1e-9 {
            (acc / wsum) as f32
        } else {
            0.0
        });
    }
    out
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Hann window on [-1, 1].
fn hann(x: f64) -> f64 {
    if x.abs() >= 1.0 {
        0.0
    } else {
        0.5 * (1.0 + (std::f64::consts::PI * x).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, secs: f64, amp: f64) -> Vec<f32> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn a_tone_in_the_passband_keeps_its_level_and_frequency() {
        let out = resample(&sine(1000.0, 22050, 1.0, 0.5), 22050, 8000);
        assert_eq!(out.len(), 8000);
        // Away from the edges the level of a 0.5 sine is 0.5/sqrt(2).
        let mid = &out[400..7600];
        assert!((rms(mid) - 0.3536).abs() < 0.01, "rms {}", rms(mid));
        // 1 kHz at 8 kHz: 2000 zero crossings a second.
        let crossings = mid
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!((1790..=1810).contains(&crossings), "{crossings}");
    }

    #[test]
    fn a_tone_above_the_new_nyquist_is_removed_not_aliased() {
        // 6 kHz would alias to 2 kHz at 8 kHz; it must come out nearly silent.
        let out = resample(&sine(6000.0, 44100, 0.5, 0.5), 44100, 8000);
        assert!(rms(&out[200..3800]) < 0.01, "rms {}", rms(&out[200..3800]));
    }

    #[test]
    fn upsampling_and_identity_and_empty() {
        let x = sine(440.0, 8000, 0.1, 0.3);
        assert_eq!(resample(&x, 8000, 8000), x);
        assert_eq!(resample(&x, 8000, 16000).len(), 1600);
        assert!(resample(&[], 44100, 8000).is_empty());
        let dc = vec![0.25f32; 1000];
        assert!(
            resample(&dc, 16000, 8000)
                .iter()
                .all(|v| (v - 0.25).abs() < 1e-4)
        );
    }

    #[test]
    fn pcm_appends_across_rates_and_measures_time() {
        let mut p = Pcm::silence(RATE, Duration::from_millis(500));
        assert_eq!(p.samples.len(), 4000);
        p.append(&Pcm {
            rate: 16000,
            samples: vec![1000; 16000],
        });
        assert_eq!(p.samples.len(), 12000);
        assert_eq!(p.duration(), Duration::from_millis(1500));
        p.append_silence(Duration::from_millis(20));
        assert_eq!(p.samples.len(), 12160);
        assert_eq!(to_i16(&[2.0, -2.0, f32::NAN]), vec![32767, -32768, 0]);
    }
}
