//! Where local audio goes: the [`SoundCard`] that opens an output and the [`AudioSink`]
//! that queues samples on it. The real one is rodio on ALSA (feature `audio-local`);
//! [`MemoryCard`] records what would have been heard, for tests and for builds without a
//! sound card; [`NoSoundCard`] is what a build without the feature has.

use std::sync::{Arc, Mutex, PoisonError};

/// Why the sound card cannot play.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// No output device could be opened (none present, or the system has no default).
    #[error("no sound card")]
    NoSoundCard,
    /// This build has no local audio output at all.
    #[error(
        "no sound card: this build has no local audio output (build with the audio-local feature)"
    )]
    NotBuilt,
    /// The output was open and failed (unplugged, the audio server went away).
    #[error("sound card {card}: {reason}")]
    Failed {
        /// Which output.
        card: String,
        /// What the system said.
        reason: String,
    },
}

/// An open output. Samples are queued and played at the card's own pace; the driver
/// keeps only a short lead queued so that a red alert or a cancel cuts in at once.
pub trait AudioSink: Send + 'static {
    /// The output's name, for evidence and logs.
    fn name(&self) -> &str;
    /// Queues mono samples at `rate` after what is already queued.
    fn play(&mut self, samples: &[i16], rate: u32) -> Result<(), SinkError>;
    /// Drops whatever is queued and not yet heard.
    fn stop(&mut self) -> Result<(), SinkError>;
}

/// Opens outputs: at start, and again after one failed.
pub trait SoundCard: Send + Sync + 'static {
    /// Opens the output named `card`, or the default one.
    fn open(&self, card: Option<&str>) -> Result<Box<dyn AudioSink>, SinkError>;
}

/// The card of a build without the `audio-local` feature: never opens.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSoundCard;

impl SoundCard for NoSoundCard {
    fn open(&self, _card: Option<&str>) -> Result<Box<dyn AudioSink>, SinkError> {
        Err(SinkError::NotBuilt)
    }
}

/// What a [`MemoryCard`]'s sink was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapeEntry {
    /// Samples queued.
    Play {
        /// At this rate.
        rate: u32,
        /// The samples.
        samples: Vec<i16>,
    },
    /// The queue was dropped.
    Stop,
}

#[derive(Debug, Default)]
struct TapeState {
    present: bool,
    opens: u32,
    entries: Vec<TapeEntry>,
    /// The next play fails with this.
    fail_next: Option<String>,
}

/// What a [`MemoryCard`] heard, shared with the test that owns it.
#[derive(Clone, Debug, Default)]
pub struct Tape(Arc<Mutex<TapeState>>);

impl Tape {
    fn with<R>(&self, f: impl FnOnce(&mut TapeState) -> R) -> R {
        // A panicking test thread must not hide what was recorded.
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    /// Everything the sink was asked, in order.
    pub fn entries(&self) -> Vec<TapeEntry> {
        self.with(|t| t.entries.clone())
    }

    /// All samples queued, in order (what a stop dropped is still here; see
    /// [`Tape::entries`] for where the stops were).
    pub fn samples(&self) -> Vec<i16> {
        self.with(|t| {
            t.entries
                .iter()
                .flat_map(|e| match e {
                    TapeEntry::Play { samples, .. } => samples.as_slice(),
                    TapeEntry::Stop => &[],
                })
                .copied()
                .collect()
        })
    }

    /// How many times the card was opened.
    pub fn opens(&self) -> u32 {
        self.with(|t| t.opens)
    }

    /// The next play fails with `reason` (the card was unplugged).
    pub fn fail_next_play(&self, reason: &str) {
        self.with(|t| t.fail_next = Some(reason.to_owned()));
    }

    /// Plugs the card in (or out): opens succeed only while it is present.
    pub fn set_present(&self, present: bool) {
        self.with(|t| t.present = present);
    }
}

/// A sound card in memory: opens while present, records what it plays on a [`Tape`].
#[derive(Clone, Debug)]
pub struct MemoryCard {
    name: String,
    tape: Tape,
}

impl MemoryCard {
    /// A present card named `name`, and its tape.
    pub fn new(name: &str) -> (MemoryCard, Tape) {
        let tape = Tape::default();
        tape.set_present(true);
        (
            MemoryCard {
                name: name.to_owned(),
                tape: tape.clone(),
            },
            tape,
        )
    }

    /// A gateway with no sound card (yet): every open fails with
    /// [`SinkError::NoSoundCard`] until [`Tape::set_present`] plugs in one named `memory`.
    pub fn absent() -> (MemoryCard, Tape) {
        let (card, tape) = MemoryCard::new("memory");
        tape.set_present(false);
        (card, tape)
    }
}

impl SoundCard for MemoryCard {
    fn open(&self, _card: Option<&str>) -> Result<Box<dyn AudioSink>, SinkError> {
        self.tape.with(|t| {
            t.opens += 1;
            if t.present {
                Ok(())
            } else {
                Err(SinkError::NoSoundCard)
            }
        })?;
        Ok(Box::new(MemorySink {
            name: self.name.clone(),
            tape: self.tape.clone(),
        }))
    }
}

/// The sink a [`MemoryCard`] opens.
#[derive(Debug)]
pub struct MemorySink {
    name: String,
    tape: Tape,
}

impl AudioSink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn play(&mut self, samples: &[i16], rate: u32) -> Result<(), SinkError> {
        let name = self.name.clone();
        self.tape.with(|t| {
            if let Some(reason) = t.fail_next.take() {
                return Err(SinkError::Failed { card: name, reason });
            }
            t.entries.push(TapeEntry::Play {
                rate,
                samples: samples.to_vec(),
            });
            Ok(())
        })
    }

    fn stop(&mut self) -> Result<(), SinkError> {
        self.tape.with(|t| t.entries.push(TapeEntry::Stop));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_card_records_and_fails_on_demand() {
        let (card, tape) = MemoryCard::new("memory");
        let mut sink = card.open(None).unwrap();
        assert_eq!(sink.name(), "memory");
        sink.play(&[1, 2], 8000).unwrap();
        sink.stop().unwrap();
        sink.play(&[3], 8000).unwrap();
        assert_eq!(tape.samples(), vec![1, 2, 3]);
        assert_eq!(tape.entries().get(1), Some(&TapeEntry::Stop));
        tape.fail_next_play("unplugged");
        assert_eq!(
            sink.play(&[4], 8000).unwrap_err().to_string(),
            "sound card memory: unplugged"
        );
        assert_eq!(tape.samples(), vec![1, 2, 3]);

        let (absent, tape) = MemoryCard::absent();
        assert_eq!(absent.open(None).err(), Some(SinkError::NoSoundCard));
        assert_eq!(SinkError::NoSoundCard.to_string(), "no sound card");
        tape.set_present(true);
        assert!(absent.open(None).is_ok());
        assert_eq!(tape.opens(), 2);
        assert!(NoSoundCard.open(None).is_err());
    }
}
