//! The tokio task that runs [`Webhook`] against a real app backend: an HTTP client for
//! the pushes and an HTTP listener for the callbacks.
//!
//! After every input (a router command, a push's outcome, a callback request, a
//! deadline) the task drains the state machine in one fixed order: **transmit** (start
//! one HTTP request task per push), then **replies** (answer waiting callback requests),
//! then **events** (stamp and forward to the gateway), then **timeout** (sleep until the
//! next deadline). Real time enters only here.
//!
//! Pushes run as separate tasks (at most `max_in_flight`, which the state machine
//! bounds) and report their outcome through a channel; each has reqwest's own timeout as
//! well as the state machine's deadline. Redirects are not followed and no proxy from
//! the environment is used: the push goes exactly where `url` says.
//!
//! The listener (`callback_bind`) hands each request to the task with a one-shot channel
//! for its answer and waits for it — for a callback, until the gateway has committed the
//! reply it carries. A body longer than `max_body_bytes` is not read. If the address
//! cannot be bound, the device reports itself down and the task tries again every 5 s.
//!
//! If the key cannot be loaded (`secret_file` unreadable), the device reports itself
//! down and fails every send for good: nothing can be signed.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use tocsin_channel::{
    COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverEvent, DriverHandle, Health,
};
use tocsin_core::DeviceId;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::proto::{
    CallbackId, CallbackRequest, CallbackResponse, Method, PushOutcome, PushRequest, RequestId,
    Webhook,
};
use crate::sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

pub use tocsin_serial::Clock;
use tocsin_serial::{recv_or_pending, sleep_until};

/// Wait between attempts to bind the callback listener.
const REBIND: Duration = Duration::from_secs(5);
/// Callback requests waiting for the task; beyond that the app is told to retry.
const CALLBACK_QUEUE: usize = 256;
/// Bytes of a backend's answer kept (for the reference or the failure reason).
const ANSWER_BYTES: usize = 4096;

/// One callback request and where its answer goes.
type Incoming = (CallbackRequest, oneshot::Sender<CallbackResponse>);

/// Starts the driver task for one app backend and returns the gateway's handle on it.
/// The task ends when `cancel` fires or every command sender is dropped.
pub fn spawn_webhook(
    device: DeviceId,
    cfg: WebhookConfig,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let caps = cfg.capabilities();
    tokio::spawn(run_webhook(device.clone(), cfg, rx, events, cancel));
    DriverHandle {
        device,
        caps,
        commands: tx,
    }
}

/// The driver task. See the module documentation for the drain order.
pub async fn run_webhook(
    device: DeviceId,
    cfg: WebhookConfig,
    commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let secret = match cfg.load_secret() {
        Ok(s) => s,
        Err(e) => return run_disabled(device, e.to_string(), commands, events, cancel).await,
    };
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout())
        .connect_timeout(cfg.connect_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("HTTP client: {}", chain(&e));
            return run_disabled(device, reason, commands, events, cancel).await;
        }
    };
    let mut proto = Webhook::new(cfg.clone(), secret, clock.now());
    let mut commands = Some(commands);
    let (done_tx, mut done_rx) = mpsc::channel::<(RequestId, PushOutcome)>(COMMAND_QUEUE);
    let (cb_tx, mut cb_rx) = mpsc::channel::<Incoming>(CALLBACK_QUEUE);
    let mut waiting: HashMap<CallbackId, oneshot::Sender<CallbackResponse>> = HashMap::new();
    let mut next_callback: CallbackId = 1;
    let mut server: Option<JoinHandle<Result<(), String>>> = None;
    let mut rebind_at = Some(clock.now());
    loop {
        // 1. transmit
        while let Some(req) = proto.poll_transmit() {
            let (client, done) = (client.clone(), done_tx.clone());
            tokio::spawn(async move {
                let id = req.id;
                let outcome = push(&client, req).await;
                let _ = done.send((id, outcome)).await;
            });
        }
        // 2. replies
        while let Some((id, resp)) = proto.poll_reply() {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(resp);
            }
        }
        // 3. events
        if !tocsin_channel::forward_events(&events, &device, || clock.now(), || proto.poll_event())
            .await
        {
            return; // The gateway is gone.
        }
        if commands.is_none() {
            return; // Every sender is gone.
        }
        // 4. timeout
        let deadline = [proto.poll_timeout(), rebind_at]
            .into_iter()
            .flatten()
            .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => break,
            cmd = recv_or_pending(&mut commands) => match cmd {
                Some(cmd) => proto.submit(clock.now(), cmd),
                None => commands = None,
            },
            Some((id, outcome)) = done_rx.recv() => proto.handle_response(clock.now(), id, outcome),
            Some((req, tx)) = cb_rx.recv() => {
                let id = next_callback;
                next_callback += 1;
                waiting.insert(id, tx);
                proto.handle_callback(clock.now(), id, req);
            }
            ended = join_or_pending(&mut server) => {
                server = None;
                let reason = match ended {
                    Ok(Ok(())) => "stopped".to_owned(),
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                };
                tracing::warn!(%device, %reason, "callback listener stopped");
                proto.handle_listener_failed(clock.now(), &reason);
                rebind_at = Some(clock.now() + REBIND);
            }
            () = sleep_until(wake) => {
                let now = clock.now();
                if rebind_at.is_some_and(|t| t <= now) {
                    match TcpListener::bind(&cfg.callback_bind).await {
                        Ok(listener) => {
                            let local = listener.local_addr().unwrap_or_else(|_| {
                                std::net::SocketAddr::from(([127, 0, 0, 1], 0))
                            });
                            tracing::info!(%device, bind = %cfg.callback_bind, "callback listener open");
                            server = Some(tokio::spawn(serve(
                                listener,
                                cb_tx.clone(),
                                cfg.max_body_bytes,
                                cfg.commit_wait() + Duration::from_secs(5),
                                cancel.child_token(),
                            )));
                            rebind_at = None;
                            proto.handle_listener_opened(now, local);
                        }
                        Err(e) => {
                            let reason = format!("bind {}: {e}", cfg.callback_bind);
                            tracing::warn!(%device, %reason, "callback listener not open");
                            proto.handle_listener_failed(now, &reason);
                            rebind_at = Some(now + REBIND);
                        }
                    }
                }
                proto.handle_timeout(now);
            }
        }
    }
    if let Some(s) = server {
        s.abort();
    }
}

/// Without a key (or an HTTP client) nothing can be sent: down, and every send fails.
async fn run_disabled(
    device: DeviceId,
    reason: String,
    mut commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    tracing::error!(%device, %reason, "webhook device cannot run");
    let say = |event| DeviceEvent {
        device: device.clone(),
        at: clock.now(),
        event,
    };
    let down = DriverEvent::Health(Health {
        last_error: Some(reason.clone()),
        ..Health::default()
    });
    if events.send(say(down)).await.is_err() {
        return;
    }
    loop {
        let cmd = tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
        };
        let attempt = match cmd {
            DriverCommand::Send(o) => o.attempt,
            DriverCommand::SendFrame(f) => f.attempt,
            DriverCommand::Cancel(_) | DriverCommand::Release(_) => continue,
        };
        let failed = DriverEvent::Failed {
            attempt,
            retryable: false,
            reason: reason.clone(),
        };
        if events.send(say(failed)).await.is_err() {
            return;
        }
    }
}

/// Performs one push.
async fn push(client: &reqwest::Client, req: PushRequest) -> PushOutcome {
    let sent = client
        .post(&req.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, &req.timestamp)
        .header(SIGNATURE_HEADER, &req.signature)
        .body(req.body)
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => return classify_error(&e),
    };
    let code = resp.status().as_u16();
    let mut body = Vec::new();
    while body.len() < ANSWER_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            // The status is what counts; a body cut short only shortens the reason.
            Err(_) => break,
        }
    }
    body.truncate(ANSWER_BYTES);
    PushOutcome::Status { code, body }
}

fn classify_error(e: &reqwest::Error) -> PushOutcome {
    if e.is_timeout() {
        PushOutcome::Timeout
    } else if e.is_connect() {
        PushOutcome::Connect(chain(e))
    } else {
        PushOutcome::Broken(chain(e))
    }
}

/// An error with its causes, for a reason an operator can act on ("connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

async fn join_or_pending<T>(h: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

/// What the listener's handler needs.
#[derive(Clone)]
struct Listener {
    to_driver: mpsc::Sender<Incoming>,
    max_body: usize,
    wait: Duration,
}

/// Serves the callback listener until `cancel` fires.
async fn serve(
    listener: TcpListener,
    to_driver: mpsc::Sender<Incoming>,
    max_body: usize,
    wait: Duration,
    cancel: CancellationToken,
) -> Result<(), String> {
    let app = axum::Router::new()
        .fallback(on_request)
        .with_state(Listener {
            to_driver,
            max_body,
            wait,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(|e| e.to_string())
}

/// Every request on the listener: read (bounded), hand to the driver, wait for its answer.
async fn on_request(State(st): State<Listener>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = match parts.method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        other => Method::Other(other.to_owned()),
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (body, oversized) = if declared.is_some_and(|n| n > st.max_body as u64) {
        (Vec::new(), true)
    } else {
        match axum::body::to_bytes(body, st.max_body).await {
            Ok(b) => (b.to_vec(), false),
            // Over the limit, or the body broke off: nothing trustworthy was read.
            Err(_) => (Vec::new(), true),
        }
    };
    let request = CallbackRequest {
        method,
        path: parts.uri.path().to_owned(),
        timestamp: header_text(&parts.headers, TIMESTAMP_HEADER),
        signature: header_text(&parts.headers, SIGNATURE_HEADER),
        body,
        oversized,
    };
    let (tx, rx) = oneshot::channel();
    if st.to_driver.try_send((request, tx)).is_err() {
        return busy();
    }
    match tokio::time::timeout(st.wait, rx).await {
        Ok(Ok(answer)) => respond(answer),
        _ => busy(),
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn respond(answer: CallbackResponse) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, answer.content_type);
    if let Some(secs) = answer.retry_after {
        b = b.header(header::RETRY_AFTER, secs.to_string());
    }
    b.body(Body::from(answer.body)).unwrap_or_else(|_| busy())
}

fn busy() -> Response {
    let mut r = Response::new(Body::from(r#"{"error":"busy; try again"}"#));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    r
}
