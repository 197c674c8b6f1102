//! The simulated app backend ([`AppBackend`]) behind a real HTTP listener, for
//! integration tests and `tocsin-sim app`: pushes arrive on `POST /push`, callbacks go
//! out with an HTTP client to the URLs the pushes carry.
//!
//! After every input the task drains in one order: push answers, callbacks (one request
//! task each), reports, then sleeps until the next due answer or callback. Real time
//! enters only here.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::sim::{AppBackend, OutId, PushId, PushIn, PushReply, Report, SimConfig};
use tocsin_serial::{Clock, sleep_until};

/// Reports kept for a reader that is slow; more are dropped (and counted in the log).
const REPORT_QUEUE: usize = 4096;
/// Largest push body read.
const MAX_PUSH_BYTES: usize = 64 * 1024;

/// A running simulated backend.
#[derive(Debug)]
pub struct BackendHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its push endpoint, for a webhook device's `url`.
    pub url: String,
    /// What it saw.
    pub reports: mpsc::Receiver<Report>,
}

/// One push and where its answer goes.
type Incoming = (PushIn, oneshot::Sender<PushReply>);

/// Starts the backend on `bind` (port 0 lets the system choose). It runs until `cancel`.
pub async fn spawn_backend(
    bind: SocketAddr,
    cfg: SimConfig,
    cancel: CancellationToken,
) -> std::io::Result<BackendHandle> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let (push_tx, push_rx) = mpsc::channel::<Incoming>(256);
    let (report_tx, reports) = mpsc::channel(REPORT_QUEUE);
    let app = axum::Router::new()
        .route("/push", axum::routing::post(on_push))
        .with_state(push_tx);
    let serve_cancel = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { serve_cancel.cancelled().await })
            .await;
    });
    tokio::spawn(run(AppBackend::new(cfg), push_rx, report_tx, cancel));
    Ok(BackendHandle {
        addr,
        url: format!("http://{addr}/push"),
        reports,
    })
}

async fn run(
    mut sim: AppBackend,
    mut pushes: mpsc::Receiver<Incoming>,
    reports: mpsc::Sender<Report>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let (answered_tx, mut answered) = mpsc::channel::<(OutId, u16)>(256);
    let mut waiting: std::collections::HashMap<PushId, oneshot::Sender<PushReply>> =
        std::collections::HashMap::new();
    let mut next: PushId = 1;
    let mut dropped: u64 = 0;
    loop {
        let now = clock.now();
        while let Some((id, reply)) = sim.poll_answer(now) {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(reply);
            }
        }
        while let Some(req) = sim.poll_callback() {
            let (client, done) = (client.clone(), answered_tx.clone());
            tokio::spawn(async move {
                let mut r = if req.get {
                    client.get(&req.url)
                } else {
                    client.post(&req.url).body(req.body)
                };
                if let Some((ts, sig)) = req.signed {
                    r = r
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(TIMESTAMP_HEADER, ts)
                        .header(SIGNATURE_HEADER, sig);
                }
                let status = r.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                let _ = done.send((req.id, status)).await;
            });
        }
        while let Some(report) = sim.poll_report() {
            if reports.try_send(report).is_err() {
                dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "simulated app backend: reports dropped");
                }
            }
        }
        let wake = sim.poll_timeout().map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            Some((push, tx)) = pushes.recv() => {
                let id = next;
                next += 1;
                waiting.insert(id, tx);
                sim.handle_push(clock.now(), id, push);
            }
            Some((id, status)) = answered.recv() => sim.handle_callback_answer(clock.now(), id, status),
            () = sleep_until(wake) => sim.handle_timeout(clock.now()),
        }
    }
}

async fn on_push(
    State(to_sim): State<mpsc::Sender<Incoming>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let header_text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_PUSH_BYTES).await else {
        return reply(413, b"{\"error\":\"too large\"}".to_vec());
    };
    let push = PushIn {
        timestamp: header_text(TIMESTAMP_HEADER),
        signature: header_text(SIGNATURE_HEADER),
        body: body.to_vec(),
    };
    let (tx, rx) = oneshot::channel();
    if to_sim.send((push, tx)).await.is_err() {
        return reply(503, b"{\"error\":\"stopped\"}".to_vec());
    }
    match rx.await {
        Ok(r) => reply(r.status, r.body),
        Err(_) => reply(503, b"{\"error\":\"stopped\"}".to_vec()),
    }
}

fn reply(status: u16, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
