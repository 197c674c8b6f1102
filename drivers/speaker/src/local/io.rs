//! The tokio task that runs [`LocalAudio`] on a sound card.
//!
//! After every input (a command, rendered audio, a deadline) the task drains the state
//! machine in one fixed order: **renders** (each on a blocking thread: synthesis runs a
//! subprocess), **sink** (queue chunks on the card; a failed write is fed back),
//! **events** (stamp and forward), then **timeout** (sleep until the next chunk is due,
//! or until the card is tried again). Real time enters only here, through the RTP
//! driver's [`Clock`].
//!
//! The card is opened at start. A gateway without one says so (a warning in the log, and
//! `Health { up: false, last_error: "no sound card" }` on its device) and carries on;
//! the card is tried again with a growing backoff, so one plugged in later is used.

use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::{DeviceId, Timestamp};
use tocsin_voice::Pcm;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::LocalAudioConfig;
use super::proto::{LocalAudio, SinkOp};
use super::sink::{AudioSink, SinkError, SoundCard};
use crate::io::{Clock, Renderer, sleep_until};
use crate::proto::ProgrammeId;

/// First wait before trying a missing or failed card again.
const REOPEN_MIN: Duration = Duration::from_secs(1);
/// Longest wait between tries: each failed ALSA open writes to stderr, so not too often.
const REOPEN_MAX: Duration = Duration::from_secs(300);

/// Starts the local loudspeaker task and returns the gateway's handle on it. The task
/// ends when `cancel` fires or every command sender is dropped.
pub fn spawn_local_audio(
    device: DeviceId,
    cfg: LocalAudioConfig,
    renderer: Arc<dyn Renderer>,
    card: Arc<dyn SoundCard>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let caps = cfg.capabilities();
    tokio::spawn(run_local_audio(
        device.clone(),
        cfg,
        renderer,
        card,
        rx,
        events,
        cancel,
    ));
    DriverHandle {
        device,
        caps,
        commands: tx,
    }
}

/// Opens the card off the async threads (ALSA may take a while to answer).
async fn open(
    card: &Arc<dyn SoundCard>,
    name: Option<String>,
) -> Result<Box<dyn AudioSink>, SinkError> {
    let card = card.clone();
    tokio::task::spawn_blocking(move || card.open(name.as_deref()))
        .await
        .unwrap_or_else(|e| {
            Err(SinkError::Failed {
                card: "sound card".to_owned(),
                reason: format!("opening it crashed: {e}"),
            })
        })
}

/// The driver task. See the module documentation for the drain order.
pub async fn run_local_audio(
    device: DeviceId,
    cfg: LocalAudioConfig,
    renderer: Arc<dyn Renderer>,
    card: Arc<dyn SoundCard>,
    mut commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let mut la = LocalAudio::new(cfg.clone(), clock.now());
    let (done_tx, mut done_rx) =
        mpsc::channel::<(ProgrammeId, Result<(Pcm, Vec<String>), String>)>(cfg.queue_limit.max(1));
    let mut sink: Option<Box<dyn AudioSink>> = None;
    let mut reopen_at: Option<Timestamp> = Some(clock.now());
    let mut backoff = tocsin_serial::io::Backoff::between(REOPEN_MIN, REOPEN_MAX);
    let mut last_error: Option<SinkError> = None;
    loop {
        // 1. renders
        while let Some(req) = la.poll_render() {
            let r = renderer.clone();
            let tx = done_tx.clone();
            tokio::spawn(async move {
                let job = req.job;
                let out = tokio::task::spawn_blocking(move || r.render(&job))
                    .await
                    .unwrap_or_else(|e| Err(format!("renderer crashed: {e}")));
                let _ = tx.send((req.id, out)).await;
            });
        }
        // 2. sink
        while let Some(op) = la.poll_sink() {
            let Some(s) = sink.as_mut() else {
                continue; // The card is gone; the state machine has failed what it held.
            };
            let result = match &op {
                SinkOp::Play { rate, samples } => s.play(samples, *rate),
                SinkOp::Stop => s.stop(),
            };
            if let Err(e) = result {
                let now = clock.now();
                tracing::warn!(%device, %e, "sound card failed");
                sink = None;
                la.handle_card_failed(now, &e);
                last_error = Some(e);
                reopen_at = Some(now + backoff.failed());
            }
        }
        // 3. events
        if !tocsin_channel::forward_events(&events, &device, || clock.now(), || la.poll_event())
            .await
        {
            return; // The gateway is gone.
        }
        // 4. timeout
        let deadline = [
            la.poll_timeout(),
            if sink.is_none() { reopen_at } else { None },
        ]
        .into_iter()
        .flatten()
        .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => la.submit(clock.now(), cmd),
                None => return,
            },
            Some((id, out)) = done_rx.recv() => {
                let (audio, missing) = match out {
                    Ok((pcm, missing)) => (Ok(pcm), missing),
                    Err(e) => (Err(e), Vec::new()),
                };
                la.handle_rendered(clock.now(), id, audio, missing);
            }
            () = sleep_until(wake) => {
                if sink.is_none() && reopen_at.is_some_and(|t| t <= clock.now()) {
                    let opened = open(&card, cfg.card.clone()).await;
                    let now = clock.now();
                    match opened {
                        Ok(s) => {
                            tracing::info!(%device, card = s.name(), group = %cfg.group, "sound card open");
                            la.handle_card_opened(now, s.name());
                            sink = Some(s);
                            reopen_at = None;
                            backoff.reset();
                            last_error = None;
                        }
                        Err(e) => {
                            // Said once per kind of failure, not at every retry.
                            if last_error.as_ref() != Some(&e) {
                                tracing::warn!(%device, %e, group = %cfg.group, "no local loudspeaker output; sends to it fail until the sound card is back");
                                la.handle_card_failed(now, &e);
                                last_error = Some(e);
                            }
                            reopen_at = Some(now + backoff.failed());
                        }
                    }
                }
                la.handle_timeout(clock.now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::sink::MemoryCard;
    use crate::proto::RenderJob;
    use tocsin_channel::{DriverEvent, Health, Outbound};
    use tocsin_core::{Address, AttemptId};

    /// Programmes as 300 ms of 7s, cancellations as 100 ms of 9s.
    struct Tones;

    impl Renderer for Tones {
        fn render(&self, job: &RenderJob) -> Result<(Pcm, Vec<String>), String> {
            let (ms, mark) = match job {
                RenderJob::Programme { .. } => (300, 7),
                RenderJob::Cancellation { .. } => (100, 9),
            };
            Ok((
                Pcm {
                    rate: 8000,
                    samples: vec![mark; ms * 8],
                },
                Vec::new(),
            ))
        }
    }

    fn send(attempt: u64) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to: Address::Speaker("T05-V03".into()),
            text: "【红色预警】山洪".into(),
            want_report: false,
        })
    }

    async fn next(rx: &mut mpsc::Receiver<DeviceEvent>) -> DriverEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("the driver is running")
            .event
    }

    fn start(card: MemoryCard) -> (DriverHandle, mpsc::Receiver<DeviceEvent>, CancellationToken) {
        let (tx, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let mut cfg = LocalAudioConfig::new("T05-V03");
        cfg.repeat = 1;
        let h = spawn_local_audio(
            DeviceId("horn".into()),
            cfg,
            Arc::new(Tones),
            Arc::new(card),
            tx,
            cancel.clone(),
        );
        (h, rx, cancel)
    }

    #[tokio::test]
    async fn a_warning_plays_through_the_card_and_is_delivered_when_heard_through() {
        let (card, tape) = MemoryCard::new("memory");
        let (h, mut rx, cancel) = start(card);
        assert!(matches!(
            next(&mut rx).await,
            DriverEvent::Health(Health { up: true, .. })
        ));
        h.commands.send(send(1)).await.unwrap();
        assert_eq!(
            next(&mut rx).await,
            DriverEvent::Accepted {
                attempt: AttemptId(1)
            }
        );
        assert!(matches!(
            next(&mut rx).await,
            DriverEvent::Sent {
                attempt: AttemptId(1),
                ..
            }
        ));
        let clock = Clock::start();
        let started = clock.now();
        let DriverEvent::Delivered { attempt, evidence } = next(&mut rx).await else {
            panic!("delivered expected")
        };
        // Paced: not before the 300 ms could have been heard.
        assert!(
            clock.now().since(started) >= Duration::from_millis(250),
            "{:?}",
            clock.now().since(started)
        );
        assert_eq!(attempt, AttemptId(1));
        assert!(evidence.starts_with("played 0.3 s on memory"), "{evidence}");
        assert_eq!(tape.samples(), vec![7; 2400]);
        cancel.cancel();
    }

    #[tokio::test]
    async fn no_sound_card_says_so_fails_sends_and_a_card_plugged_in_later_is_used() {
        let (card, tape) = MemoryCard::absent();
        let (h, mut rx, cancel) = start(card);
        assert_eq!(
            next(&mut rx).await,
            DriverEvent::Health(Health {
                up: false,
                last_error: Some("no sound card".into()),
                ..Health::default()
            })
        );
        h.commands.send(send(1)).await.unwrap();
        assert_eq!(
            next(&mut rx).await,
            DriverEvent::Failed {
                attempt: AttemptId(1),
                retryable: true,
                reason: "no sound card".into()
            }
        );
        // Plugged in: the next try (1 s later) opens it.
        tape.set_present(true);
        assert!(matches!(
            next(&mut rx).await,
            DriverEvent::Health(Health { up: true, .. })
        ));
        // It fails mid-programme: the attempt fails, retryable, and the card is down.
        tape.fail_next_play("unplugged");
        h.commands.send(send(2)).await.unwrap();
        assert_eq!(
            next(&mut rx).await,
            DriverEvent::Accepted {
                attempt: AttemptId(2)
            }
        );
        assert!(matches!(
            next(&mut rx).await,
            DriverEvent::Sent {
                attempt: AttemptId(2),
                ..
            }
        ));
        assert!(
            matches!(next(&mut rx).await, DriverEvent::Health(Health { up: false, last_error: Some(e), .. }) if e == "sound card memory: unplugged")
        );
        assert_eq!(
            next(&mut rx).await,
            DriverEvent::Failed {
                attempt: AttemptId(2),
                retryable: true,
                reason: "sound card memory: unplugged".into()
            }
        );
        assert!(tape.samples().is_empty());
        cancel.cancel();
    }
}
