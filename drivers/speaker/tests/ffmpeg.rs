//! A real receiver: ffmpeg (the Debian package) receives the unicast RTP stream the real
//! driver task sends on loopback, described to it by an SDP file, and writes what it
//! heard to a WAV file. The test checks the file's length and that it is the programme
//! the driver rendered (normalised cross-correlation at the best lag), so the stream is
//! standard RTP/G.711 that a third-party receiver decodes, not just something our own
//! simulator understands.
//!
//! Without ffmpeg on the machine the test prints a note and passes; `scripts/test`
//! installs it.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_speaker::config::{GroupConfig, SpeakerConfig};
use tocsin_speaker::io::{Renderer, spawn_speaker_with_reports};
use tocsin_speaker::proto::{RenderJob, StreamReport};
use tocsin_voice::{Codec, Pcm, Speech, wav};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Generous bound for anything to happen; the test never sleeps, it waits for events.
const PATIENCE: Duration = Duration::from_secs(30);

/// The daemon's renderer with no synthesizer (the test must not depend on espeak-ng),
/// keeping a copy of what it rendered: the reference the received audio is compared with.
struct Recording {
    speech: Speech,
    rendered: Mutex<Vec<Pcm>>,
}

impl Renderer for Recording {
    fn render(&self, job: &RenderJob) -> Result<(Pcm, Vec<String>), String> {
        let (pcm, missing) = Renderer::render(&self.speech, job)?;
        if let Ok(mut r) = self.rendered.lock() {
            r.push(pcm.clone());
        }
        Ok((pcm, missing))
    }
}

fn ffmpeg_installed() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free pair of loopback UDP ports (RTP, and RTP + 1 for RTCP), released
/// again for ffmpeg to bind.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", next)).is_ok() {
            return port;
        }
    }
    panic!("no free RTP/RTCP port pair on loopback");
}

/// The session description a receiver needs: where the stream arrives and its codec
/// (static payload types 8 = PCMA, 0 = PCMU, RFC 3551).
fn sdp(port: u16, codec: Codec) -> String {
    let pt = codec.payload_type();
    let name = match codec {
        Codec::Pcma => "PCMA",
        Codec::Pcmu => "PCMU",
    };
    format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=tocsin speaker test\r\nc=IN IP4 127.0.0.1\r\n\
         t=0 0\r\nm=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\na=recvonly\r\n"
    )
}

/// ffmpeg receiving the stream: the child and what it has printed.
struct Receiver {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

/// Starts ffmpeg on the SDP file, writing at most `secs` seconds to `out`; the second
/// value fires once its input, and so its UDP sockets, is open.
fn start_ffmpeg(sdp_path: &Path, out: &Path, secs: f64) -> (Receiver, oneshot::Receiver<()>) {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "debug"])
        .args(["-protocol_whitelist", "file,udp,rtp"])
        .arg("-i")
        .arg(sdp_path)
        .args(["-t", &format!("{secs:.3}"), "-ar", "8000", "-ac", "1", "-y"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, ready) = oneshot::channel();
    let keep = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // "Input #0, sdp" (info level) and the find_stream_info lines (debug level)
            // are printed once the input is open.
            if (line.contains("Input #0") || line.contains("avformat_find_stream_info()"))
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
            keep.lock().unwrap().push(line);
        }
    });
    (Receiver { child, log }, ready)
}

impl Receiver {
    /// ffmpeg's last lines, for failure messages.
    fn tail(log: &Mutex<Vec<String>>) -> String {
        let log = log.lock().unwrap();
        log.iter()
            .skip(log.len().saturating_sub(40))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Ends ffmpeg at once (the test is failing anyway).
    fn kill(pid: u32) {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }

    /// Waits for `ready`, killing ffmpeg if it never opens its input.
    async fn wait_ready(&self, ready: oneshot::Receiver<()>) {
        if !matches!(tokio::time::timeout(PATIENCE, ready).await, Ok(Ok(()))) {
            Self::kill(self.child.id());
            panic!("ffmpeg did not open its input:\n{}", Self::tail(&self.log));
        }
    }

    /// Waits for ffmpeg to finish on its own (the driver's RTCP BYE ends its input, `-t`
    /// bounds it otherwise), killing it after `limit`. Returns its last lines.
    async fn finish(self, limit: Duration) -> String {
        let Receiver { mut child, log } = self;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(Ok(status))) => status,
            other => {
                Self::kill(pid);
                panic!("ffmpeg did not finish: {other:?}\n{}", Self::tail(&log));
            }
        };
        let tail = Self::tail(&log);
        assert!(status.success(), "ffmpeg exited with {status}:\n{tail}");
        tail
    }
}

/// Normalised cross-correlation of `got` against `want` at the best lag within
/// `max_lag` samples either way: 1.0 is the same waveform, at any level.
fn best_correlation(want: &[i16], got: &[i16], max_lag: i64) -> (f64, i64) {
    let energy = |s: &[i16]| s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
    let norm = (energy(want) * energy(got)).sqrt();
    if norm == 0.0 {
        return (0.0, 0);
    }
    let mut best = (f64::MIN, 0);
    for lag in -max_lag..=max_lag {
        // got[i + lag] against want[i].
        let mut sum = 0.0;
        for (i, &w) in want.iter().enumerate() {
            let Some(j) = usize::try_from(i as i64 + lag).ok() else {
                continue;
            };
            let Some(&g) = got.get(j) else {
                break;
            };
            sum += f64::from(w) * f64::from(g);
        }
        let c = sum / norm;
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

async fn next_matching(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    what: &str,
    pred: impl Fn(&DriverEvent) -> bool,
) -> DriverEvent {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if pred(&e.event) {
                return e.event;
            }
        }
        panic!("event channel closed while waiting for {what}");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tocsin-speaker-ffmpeg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_receives_the_warning_programme_as_rendered() {
    if !ffmpeg_installed() {
        eprintln!(
            "note: ffmpeg is not installed; the real-receiver test is skipped \
             (apt-get install ffmpeg, or run scripts/test)"
        );
        return;
    }
    let dir = tempdir();
    let port = free_port_pair();
    let codec = Codec::Pcma;
    let sdp_path = dir.join("stream.sdp");
    std::fs::write(&sdp_path, sdp(port, codec)).unwrap();
    let out = dir.join("out.wav");
    // A blue warning with no synthesizer: the three chimes and the pause after them,
    // 2.6 s. ffmpeg may write at most 5 s; the stream's end (RTCP BYE) should end it first.
    let (receiver, ready) = start_ffmpeg(&sdp_path, &out, 5.0);
    receiver.wait_ready(ready).await;

    let cancel = CancellationToken::new();
    let rtp: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cfg = SpeakerConfig::new(rtp);
    cfg.groups = vec![GroupConfig {
        name: "ffmpeg".into(),
        rtp,
        rtcp: None,
        speakers: Vec::new(),
    }];
    cfg.codec = codec;
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.rtcp_bind = "127.0.0.1:0".parse().unwrap();
    cfg.repeat = 1;
    cfg.rtcp_interval_secs = 1;
    cfg.report_grace_secs = 1;
    cfg.validate().unwrap();
    let renderer = Arc::new(Recording {
        speech: Speech::new(None, Default::default(), 16),
        rendered: Mutex::new(Vec::new()),
    });
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel::<StreamReport>(16);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers-ffmpeg"),
        cfg,
        renderer.clone(),
        ev_tx,
        Some(rep_tx),
        cancel.clone(),
    );
    next_matching(
        &mut ev,
        "sockets up",
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await;
    driver
        .commands
        .send(DriverCommand::Send(Outbound {
            attempt: AttemptId(1),
            to: Address::Speaker("ffmpeg".into()),
            text: "【蓝色预警】大风蓝色预警：关好门窗。".into(),
            want_report: false,
        }))
        .await
        .unwrap();
    let report = tokio::time::timeout(PATIENCE, reps.recv())
        .await
        .expect("timed out waiting for the stream report")
        .expect("report channel closed");
    assert_eq!(report.attempt, Some(AttemptId(1)));
    assert!(!report.stopped_early, "{report:?}");

    let tail = receiver.finish(PATIENCE).await;
    let programme = renderer.rendered.lock().unwrap().first().cloned().unwrap();
    // 2.6 s: three 400 ms chimes 300 ms apart and the 500 ms after the siren.
    assert_eq!(programme.duration(), Duration::from_millis(2600));
    assert_eq!(report.packets, 130, "20 ms packets");

    let heard = wav::read(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(heard.rate, 8000, "{tail}");
    // ffmpeg ends its input on the RTCP BYE, which goes out with the last RTP packet:
    // it may stop one 20 ms packet short. Without the BYE it would have waited for
    // packets until killed, or written 5 s.
    let diff = heard.duration().abs_diff(programme.duration());
    assert!(
        diff <= Duration::from_millis(40),
        "ffmpeg wrote {:?}, the programme lasts {:?}:\n{tail}",
        heard.duration(),
        programme.duration()
    );
    let (c, lag) = best_correlation(&programme.samples, &heard.samples, 400);
    assert!(
        c > 0.9,
        "correlation {c:.3} at lag {lag} samples; ffmpeg:\n{tail}"
    );
    eprintln!(
        "ffmpeg heard {:?} (programme {:?}); correlation {c:.4} at lag {lag} samples",
        heard.duration(),
        programme.duration()
    );
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
