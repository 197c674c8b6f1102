//! The real sound card (feature `audio-local`): rodio on cpal on ALSA.
//!
//! cpal's output stream may not move between threads, so each open card lives on a
//! thread of its own that owns the stream and a rodio [`Player`]; the [`AudioSink`]
//! handed to the driver sends it chunks over a channel. Playing never blocks the driver.
//! A stop drops the player (what it had queued goes with it) and starts a fresh one.

use std::num::NonZero;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use rodio::buffer::SamplesBuffer;
use rodio::{DeviceSinkBuilder, DeviceSinkError, DeviceTrait, MixerDeviceSink, Player};

use super::sink::{AudioSink, SinkError, SoundCard};

/// The system's sound cards, through ALSA.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlsaCard;

enum Command {
    Play(Vec<f32>, NonZero<u32>),
    Stop,
}

/// An open output: the channel to its thread and the first error the stream reported.
struct AlsaSink {
    name: String,
    commands: mpsc::Sender<Command>,
    error: Arc<Mutex<Option<String>>>,
}

impl SoundCard for AlsaCard {
    fn open(&self, card: Option<&str>) -> Result<Box<dyn AudioSink>, SinkError> {
        let wanted = card.map(str::to_owned);
        let error = Arc::new(Mutex::new(None::<String>));
        let (opened_tx, opened_rx) = mpsc::sync_channel::<Result<String, SinkError>>(1);
        let (commands, commands_rx) = mpsc::channel::<Command>();
        let stream_error = error.clone();
        let spawned = std::thread::Builder::new()
            .name("tocsin-sound-card".to_owned())
            .spawn(move || {
                let opened = open_stream(wanted.as_deref(), move |e| {
                    let mut slot = stream_error.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.get_or_insert_with(|| e.to_string());
                });
                let (mut stream, name) = match opened {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                stream.log_on_drop(false);
                let _ = opened_tx.send(Ok(name));
                play_until_closed(&stream, &commands_rx);
            });
        if let Err(e) = spawned {
            return Err(SinkError::Failed {
                card: card.unwrap_or("default").to_owned(),
                reason: format!("cannot start its thread: {e}"),
            });
        }
        let name = opened_rx.recv().unwrap_or_else(|_| {
            Err(SinkError::Failed {
                card: card.unwrap_or("default").to_owned(),
                reason: "its thread ended while opening it".to_owned(),
            })
        })?;
        Ok(Box::new(AlsaSink {
            name,
            commands,
            error,
        }))
    }
}

/// Opens the named output (matched on the name the system gives it), or the default.
fn open_stream(
    wanted: Option<&str>,
    on_error: impl FnMut(rodio::CpalError) + Send + 'static,
) -> Result<(MixerDeviceSink, String), SinkError> {
    let builder = match wanted {
        None => DeviceSinkBuilder::from_default_device(),
        Some(w) => {
            let host = rodio::cpal::default_host();
            let devices = rodio::cpal::traits::HostTrait::output_devices(&host).map_err(|e| {
                SinkError::Failed {
                    card: w.to_owned(),
                    reason: e.to_string(),
                }
            })?;
            let found = devices
                .into_iter()
                .find(|d| d.description().is_ok_and(|desc| desc.name() == w));
            match found {
                Some(d) => DeviceSinkBuilder::from_device(d),
                None => Err(DeviceSinkError::NoDevice),
            }
        }
    };
    let builder = builder.map_err(|e| no_card(wanted, &e))?;
    let name = wanted.unwrap_or("default").to_owned();
    let stream = builder
        .with_error_callback(on_error)
        .open_stream()
        .map_err(|e| no_card(wanted, &e))?;
    Ok((stream, name))
}

/// A missing device is "no sound card"; anything else names the card and the reason.
fn no_card(wanted: Option<&str>, e: &DeviceSinkError) -> SinkError {
    match e {
        DeviceSinkError::NoDevice | DeviceSinkError::DefaultSinkConfigError(_) => {
            tracing::debug!(card = wanted.unwrap_or("default"), %e, "no sound card");
            SinkError::NoSoundCard
        }
        other => SinkError::Failed {
            card: wanted.unwrap_or("default").to_owned(),
            reason: other.to_string(),
        },
    }
}

/// The card's thread: plays what it is sent until the sink is dropped.
fn play_until_closed(stream: &MixerDeviceSink, commands: &mpsc::Receiver<Command>) {
    let mut player = Player::connect_new(stream.mixer());
    while let Ok(cmd) = commands.recv() {
        match cmd {
            Command::Play(samples, rate) => {
                player.append(SamplesBuffer::new(NonZero::<u16>::MIN, rate, samples));
            }
            Command::Stop => {
                player.stop();
                player = Player::connect_new(stream.mixer());
            }
        }
    }
    player.stop();
}

impl AlsaSink {
    fn send(&self, cmd: Command) -> Result<(), SinkError> {
        let failed = |reason: String| SinkError::Failed {
            card: self.name.clone(),
            reason,
        };
        if let Some(e) = self
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Err(failed(e));
        }
        self.commands
            .send(cmd)
            .map_err(|_| failed("its thread has ended".to_owned()))
    }
}

impl AudioSink for AlsaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn play(&mut self, samples: &[i16], rate: u32) -> Result<(), SinkError> {
        let Some(rate) = NonZero::new(rate) else {
            return Ok(()); // Nothing can be played at rate 0; the driver never asks.
        };
        let samples = samples
            .iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect::<Vec<f32>>();
        self.send(Command::Play(samples, rate))
    }

    fn stop(&mut self) -> Result<(), SinkError> {
        self.send(Command::Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Set in the child process that `alsa_card_smoke_test` starts.
    const CHILD: &str = "TOCSIN_ALSA_NULL_CHILD";

    /// Does its work only in a child process whose `HOME` holds an `.asoundrc` making
    /// the default output ALSA's null device (the environment of this process cannot be
    /// changed safely while other tests run); `alsa_card_smoke_test` starts that child
    /// and checks it passed.
    #[test]
    fn plays_on_the_null_device() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let mut sink = AlsaCard.open(None).expect("the null device opens");
        assert_eq!(sink.name(), "default");
        sink.play(&[0; 800], 8000).unwrap();
        sink.stop().unwrap();
        sink.play(&[1000; 800], 8000).unwrap();
    }

    #[test]
    fn alsa_card_smoke_test() {
        // Without any sound card (this CI machine has no /dev/snd), opening says so and
        // does not panic.
        let home = std::env::var_os("HOME").unwrap_or_default();
        if !Path::new("/dev/snd").exists() && !Path::new(&home).join(".asoundrc").exists() {
            assert_eq!(AlsaCard.open(None).err(), Some(SinkError::NoSoundCard));
            assert!(AlsaCard.open(Some("USB Audio")).is_err());
        }
        // The null device opens, plays and stops. Kept short: it is not paced in real
        // time and spins while open.
        let dir = std::env::temp_dir().join(format!("tocsin-alsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".asoundrc"), "pcm.!default { type null }\n").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "local::alsa::tests::plays_on_the_null_device",
                "--exact",
                "--test-threads=1",
            ])
            .env("HOME", &dir)
            .env(CHILD, "1")
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
