//! The tokio task that runs [`Modem`](crate::proto::Modem) on a serial port.
//!
//! After every input (bytes read, a command, a deadline) the task drains the state
//! machine in one fixed order: **transmit** (write every pending command to the port),
//! then **events** (stamp and forward to the gateway), then **timeout** (sleep until the
//! next deadline). Real time enters only here; the state machine only sees `now`.
//!
//! Router commands already waiting are taken together ([`Modem::submit_all`]): the
//! releases of one commit then go out as one concatenated `AT+CMGD` line.
//!
//! When the port disappears (read error, EOF, hang-up, a failed write), the modem is told,
//! reports itself down, and the task reopens the same path with exponential backoff
//! (0.5 s doubling to 30 s). Commands keep being accepted meanwhile and queued sends go
//! out after the re-init. Use a stable path (`/dev/serial/by-id/...`) so a modem that
//! re-enumerates comes back where it was.
//!
//! With `voice` on, [`spawn_modem_pair`] returns two handles on the same task: SMS and
//! voice, each with its own command channel and device id; events about calls are
//! stamped with the voice device. The drain order gains **audio** after transmit: PCM
//! frames go to a writer task that owns the audio port (`audio_path`) through a channel
//! one second deep; a frame that finds it full is dropped (the listener hears a gap)
//! rather than stalling the AT conversation. The writer reopens a lost audio port with
//! the same backoff and reports open/lost to the state machine, which refuses calls while
//! the port is closed.

use std::sync::Arc;

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::DeviceId;
use tocsin_serial::{
    Backoff, Reopen, open_serial, read_or_pending, recv_or_pending, sleep_until, write_flush,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

use crate::config::ModemConfig;
use crate::proto::Modem;
use crate::voice::{PromptSource, ToneSource};

/// PCM frames buffered towards the audio port: one second.
const AUDIO_QUEUE: usize = 50;

/// Most router commands taken in one turn of the loop.
const COMMAND_BATCH: usize = 256;

pub use tocsin_serial::Clock;

/// Starts the driver task for one modem and returns the gateway's handle on it. The task
/// ends when `cancel` fires or every command sender is dropped.
pub fn spawn_modem(
    device: DeviceId,
    cfg: ModemConfig,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let caps = cfg.capabilities();
    tokio::spawn(run_modem(device.clone(), cfg, rx, events, cancel));
    DriverHandle {
        device,
        caps,
        commands: tx,
    }
}

/// The handles of one modem: its SMS device and, with `voice` on, its voice device.
#[derive(Clone, Debug)]
pub struct ModemHandles {
    /// The SMS side (`Bearer::Sms`).
    pub sms: DriverHandle,
    /// The voice side (`Bearer::Voice`), when `voice` is on.
    pub voice: Option<DriverHandle>,
}

/// Starts the driver task for one modem with both its sides. The voice device is
/// `voice_device` (the daemon names it, e.g. `modem-1-voice`); calls play what `prompts`
/// renders (the built-in tone when `None`). The task ends when `cancel` fires or every
/// command sender of both handles is dropped.
pub fn spawn_modem_pair(
    device: DeviceId,
    voice_device: DeviceId,
    cfg: ModemConfig,
    prompts: Option<Arc<dyn PromptSource>>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> ModemHandles {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let sms = DriverHandle {
        device: device.clone(),
        caps: cfg.capabilities(),
        commands: tx,
    };
    let (voice, voice_rx) = if cfg.voice {
        let (vtx, vrx) = mpsc::channel(COMMAND_QUEUE);
        let handle = DriverHandle {
            device: voice_device.clone(),
            caps: cfg.voice_capabilities(),
            commands: vtx,
        };
        (Some(handle), Some(vrx))
    } else {
        (None, None)
    };
    let prompts = prompts.unwrap_or_else(|| Arc::new(ToneSource::new(cfg.prompt_secs)));
    let modem = Modem::with_prompts(cfg.clone(), Clock::start().now(), prompts);
    tokio::spawn(run(
        Devices {
            sms: device,
            voice: voice_device,
        },
        cfg,
        modem,
        rx,
        voice_rx,
        events,
        cancel,
    ));
    ModemHandles { sms, voice }
}

/// The driver task for the SMS side only. See the module documentation for the drain
/// order.
pub async fn run_modem(
    device: DeviceId,
    cfg: ModemConfig,
    commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let modem = Modem::new(cfg.clone(), Clock::start().now());
    let devices = Devices {
        voice: DeviceId(format!("{device}-voice")),
        sms: device,
    };
    run(devices, cfg, modem, commands, None, events, cancel).await;
}

/// The two device ids one modem reports under.
struct Devices {
    sms: DeviceId,
    voice: DeviceId,
}

/// What the audio writer reports.
type AudioStatus = Result<(), String>;

/// Owns the audio port: opens it (and reopens it after a loss, with backoff), writes the
/// frames it is given, and reports open / lost.
async fn audio_writer(
    clock: Clock,
    path: String,
    baud: u32,
    mut frames: mpsc::Receiver<Vec<u8>>,
    status: mpsc::Sender<AudioStatus>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let mut port = match open_serial(&path, baud) {
            Ok(p) => {
                backoff.reset();
                if status.send(Ok(())).await.is_err() {
                    return;
                }
                p
            }
            Err(e) => {
                if status.send(Err(e.to_string())).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = sleep_until(Some(clock.instant_now() + backoff.failed())) => {}
                }
                continue;
            }
        };
        loop {
            let frame = tokio::select! {
                () = cancel.cancelled() => return,
                f = frames.recv() => match f {
                    Some(f) => f,
                    None => return,
                },
            };
            if let Err(e) = port.write_all(&frame).await {
                tracing::warn!(%path, %e, "audio port write failed");
                if status.send(Err(e.to_string())).await.is_err() {
                    return;
                }
                break;
            }
        }
    }
}

/// The driver task. See the module documentation for the drain order.
#[allow(
    clippy::too_many_lines,
    reason = "one select loop: splitting it would scatter the drain order"
)]
async fn run(
    devices: Devices,
    cfg: ModemConfig,
    mut modem: Modem,
    commands: mpsc::Receiver<DriverCommand>,
    voice_commands: Option<mpsc::Receiver<DriverCommand>>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let device = devices.sms.clone();
    let clock = Clock::start();
    let mut commands = Some(commands);
    let mut voice_commands = voice_commands;
    let (audio_tx, mut audio_status) = match (&cfg.audio_path, cfg.voice) {
        (Some(path), true) => {
            let (ftx, frx) = mpsc::channel(AUDIO_QUEUE);
            let (stx, srx) = mpsc::channel(8);
            tokio::spawn(audio_writer(
                clock,
                path.clone(),
                cfg.baud,
                frx,
                stx,
                cancel.child_token(),
            ));
            (Some(ftx), Some(srx))
        }
        _ => (None, None),
    };
    let mut dropped_frames: u64 = 0;
    let mut port: Option<SerialStream> = None;
    let mut reopen = Reopen::new(clock.now());
    let mut buf = vec![0u8; 4096];
    loop {
        // 1. transmit
        while let Some(bytes) = modem.poll_transmit() {
            let Some(p) = port.as_mut() else { break };
            if let Err(e) = write_flush(p, &bytes).await {
                tracing::warn!(%device, %e, "modem port write failed");
                port = None;
                modem.handle_port_lost(clock.now());
                reopen.lost(clock.now());
            }
        }
        // 2. audio
        while let Some(frame) = modem.poll_audio() {
            if let Some(tx) = &audio_tx
                && tx.try_send(frame).is_err()
            {
                dropped_frames += 1;
                if dropped_frames.is_power_of_two() {
                    tracing::warn!(%device, dropped_frames, "audio port behind: frames dropped");
                }
            }
        }
        // 3. events
        let now = || clock.now();
        if !tocsin_channel::forward_events(&events, &devices.sms, now, || modem.poll_event()).await
            || !tocsin_channel::forward_events(&events, &devices.voice, now, || {
                modem.poll_voice_event()
            })
            .await
        {
            return; // The gateway is gone.
        }
        if commands.is_none() && voice_commands.is_none() {
            return; // Every sender is gone.
        }
        // 4. timeout
        let deadline = [
            modem.poll_timeout(),
            if port.is_none() {
                reopen.deadline()
            } else {
                None
            },
        ]
        .into_iter()
        .flatten()
        .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = recv_or_pending(&mut commands) => match cmd {
                Some(cmd) => {
                    // Take whatever else the router queued (a commit's releases come
                    // together) so it goes out batched: one AT+CMGD line, not one each.
                    let mut batch = vec![cmd];
                    while batch.len() < COMMAND_BATCH {
                        match commands.as_mut().map(mpsc::Receiver::try_recv) {
                            Some(Ok(cmd)) => batch.push(cmd),
                            _ => break,
                        }
                    }
                    modem.submit_all(clock.now(), batch);
                }
                None => commands = None,
            },
            cmd = recv_or_pending(&mut voice_commands) => match cmd {
                Some(cmd) => modem.submit_voice(clock.now(), cmd),
                None => voice_commands = None,
            },
            status = recv_or_pending(&mut audio_status) => match status {
                Some(status) => {
                    if let Err(e) = &status {
                        tracing::warn!(%device, %e, "audio port not open");
                    }
                    modem.handle_audio_port(clock.now(), status);
                }
                None => audio_status = None,
            },
            read = read_or_pending(&mut port, &mut buf) => match read {
                Ok(n) if n > 0 => modem.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::warn!(%device, ?other, "modem port lost");
                    port = None;
                    modem.handle_port_lost(clock.now());
                    reopen.lost(clock.now());
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if port.is_none() && reopen.due(now) {
                    match open_serial(&cfg.path, cfg.baud) {
                        Ok(p) => {
                            tracing::info!(%device, path = %cfg.path, "modem port open");
                            port = Some(p);
                            reopen.opened();
                            modem.handle_port_opened(now);
                        }
                        Err(e) => {
                            modem.handle_open_failed(now, &e.to_string());
                            reopen.failed(now);
                        }
                    }
                }
                modem.handle_timeout(now);
            }
        }
    }
}
