//! Attention tones and the siren pattern of each grade, synthesised at 8 kHz.
//!
//! The patterns are distinct by ear even through a horn speaker's narrow band: red is a
//! fast wail (the sweep a listener knows as "danger now"), orange a slow wail, yellow a
//! two-tone hi-lo, blue three chimes. The frequencies stay between 500 Hz and 1.5 kHz,
//! where horn speakers are loudest and G.711 is clean.

use std::f64::consts::TAU;
use std::time::Duration;

use tocsin_core::Grade;

use crate::pcm::{Pcm, RATE, samples_in};

/// Peak level of tones: loud but with headroom so G.711 does not clip.
const LEVEL: f64 = 0.6;
/// Fade in and out of each tone, so it starts and stops without a click.
const FADE: Duration = Duration::from_millis(10);

/// The attention tone before a spoken prompt on a call: two rising chimes.
pub fn attention() -> Pcm {
    let mut p = Pcm::empty(RATE);
    p.append(&steady(660.0, Duration::from_millis(300)));
    p.append_silence(Duration::from_millis(60));
    p.append(&steady(880.0, Duration::from_millis(450)));
    p.append_silence(Duration::from_millis(300));
    p
}

/// The siren pattern that opens a loudspeaker programme of this grade.
pub fn siren(grade: Grade) -> Pcm {
    let mut p = match grade {
        // Fast wail: 8 sweeps of 1 s between 600 and 1300 Hz.
        Grade::Red => sweep(600.0, 1300.0, Duration::from_secs(1), 8),
        // Slow wail: 2 sweeps of 4 s.
        Grade::Orange => sweep(600.0, 1300.0, Duration::from_secs(4), 2),
        // Hi-lo: 960 / 770 Hz, half a second each, 6 s in all.
        Grade::Yellow => {
            let mut p = Pcm::empty(RATE);
            for _ in 0..6 {
                p.append(&steady(960.0, Duration::from_millis(500)));
                p.append(&steady(770.0, Duration::from_millis(500)));
            }
            p
        }
        // Three chimes.
        Grade::Blue => {
            let mut p = Pcm::empty(RATE);
            for _ in 0..3 {
                p.append(&steady(880.0, Duration::from_millis(400)));
                p.append_silence(Duration::from_millis(300));
            }
            p
        }
    };
    p.append_silence(Duration::from_millis(500));
    p
}

/// A steady sine at `freq` Hz for `d`, faded in and out.
pub fn steady(freq: f64, d: Duration) -> Pcm {
    let n = samples_in(RATE, d);
    let samples = (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            (LEVEL * fade(i, n) * (TAU * freq * t).sin() * 32767.0) as i16
        })
        .collect();
    Pcm {
        rate: RATE,
        samples,
    }
}

/// `cycles` sweeps up from `lo` to `hi` and back, each lasting `period`. The phase is
/// accumulated sample by sample so the frequency glides without discontinuities.
fn sweep(lo: f64, hi: f64, period: Duration, cycles: u32) -> Pcm {
    let per = samples_in(RATE, period).max(2);
    let n = per * cycles as usize;
    let mut phase = 0.0f64;
    let samples = (0..n)
        .map(|i| {
            // Triangle from 0 to 1 and back within each period.
            let pos = (i % per) as f64 / per as f64;
            let tri = if pos < 0.5 {
                pos * 2.0
            } else {
                2.0 - pos * 2.0
            };
            let f = lo + (hi - lo) * tri;
            phase = (phase + TAU * f / f64::from(RATE)) % TAU;
            (LEVEL * fade(i, n) * phase.sin() * 32767.0) as i16
        })
        .collect();
    Pcm {
        rate: RATE,
        samples,
    }
}

/// Gain 0..1 at sample `i` of `n`: a linear ramp over [`FADE`] at both ends.
fn fade(i: usize, n: usize) -> f64 {
    let f = samples_in(RATE, FADE).max(1);
    let from_end = n.saturating_sub(i + 1);
    let edge = i.min(from_end);
    if edge >= f {
        1.0
    } else {
        edge as f64 / f as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crossings(s: &[i16]) -> usize {
        s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
    }

    #[test]
    fn each_grade_has_its_own_pattern() {
        let red = siren(Grade::Red);
        let orange = siren(Grade::Orange);
        let yellow = siren(Grade::Yellow);
        let blue = siren(Grade::Blue);
        assert_eq!(red.duration(), Duration::from_millis(8500));
        assert_eq!(orange.duration(), Duration::from_millis(8500));
        assert_eq!(yellow.duration(), Duration::from_millis(6500));
        assert_eq!(blue.duration(), Duration::from_millis(2600));
        // All are loud, none clips.
        for p in [&red, &orange, &yellow, &blue] {
            assert!(p.rms() > 0.2, "{}", p.rms());
            assert!(p.samples.iter().all(|s| s.unsigned_abs() < 20000));
        }
        // Red's first second sweeps 600 -> 1300 -> 600 Hz: about 950 Hz on average,
        // 1900 zero crossings.
        let c = crossings(&red.samples[..8000]);
        assert!((1850..=1950).contains(&c), "{c}");
    }

    #[test]
    fn steady_tone_has_its_frequency_and_no_click() {
        let t = steady(1000.0, Duration::from_secs(1));
        assert_eq!(t.samples.len(), 8000);
        let c = crossings(&t.samples);
        assert!((1995..=2001).contains(&c), "{c}");
        assert_eq!(t.samples[0], 0);
        assert!(t.samples[7999].abs() < 100);
        assert!(attention().duration() > Duration::from_secs(1));
    }
}
