//! The conversation with one app backend as a sans-IO state machine: pushes out, signed
//! callbacks in. No sockets and no clock here; [`crate::io`] performs the HTTP requests
//! this asks for and feeds back what came of them.
//!
//! Inputs: [`Webhook::submit`] (router commands), [`Webhook::handle_response`] (what a
//! push got back), [`Webhook::handle_callback`] (a request on the callback listener),
//! [`Webhook::handle_listener_opened`] / [`Webhook::handle_listener_failed`],
//! [`Webhook::handle_timeout`]. Outputs: [`Webhook::poll_transmit`] (a push to perform),
//! [`Webhook::poll_reply`] (the answer to a callback request), [`Webhook::poll_event`],
//! [`Webhook::poll_timeout`].
//!
//! Events per attempt: `Accepted` when queued, then exactly one of `Sent { reference }`
//! (the backend answered 2xx; the reference is the backend's `id` when it gives one) or
//! `Failed`. A failure is retryable when trying again may work: 5xx, 408, 429, no answer
//! in time, connection refused or reset. Any other 4xx (the backend refuses this push: an
//! unknown subscriber, a bad signature) and 3xx (redirects are not followed) are final,
//! with the status and an excerpt of the body as the reason.
//!
//! Health: the backend is reported down after `down_after` consecutive retryable
//! failures, and up again on the next answer of any status (it is reachable). The
//! listener failing to bind also reports the device down: acks could not come back.
//!
//! A callback (`POST /callback`) is checked in this order: size (413), timestamp and
//! signature (401), JSON and fields (400), token if any (400). A good one becomes an
//! `Inbound` event — the driver never judges whether it is an ack; the router does — and
//! its HTTP answer is held until the gateway releases the event's receipt (the reply is
//! committed): then `200`, or `503` with `Retry-After` if that takes longer than
//! `commit_wait_ms`, so the app retries and nothing it was told is recorded can be lost.
//! A retried callback is judged again; the router counts a duplicate ack once.
//!
//! An ack link (`/ack/<token>`, written into every push): `GET` shows a page with one
//! button, whose `POST` records the ack. A link preview or a prefetching client that only
//! fetches the link never acknowledges a warning for a person who did not see it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tocsin_channel::{DriverCommand, DriverEvent, Health, InboundReceipt, Outbound};
use tocsin_core::{Address, AttemptId, Timestamp};

use crate::config::{MAX_SUBSCRIBER_CHARS, WebhookConfig};
use crate::sign::{self, Secret};
use crate::wire::{Callback, Push, PushAnswer, answer_body, classify};

/// Identifies one push while it is in flight.
pub type RequestId = u64;
/// Identifies one request on the callback listener until it is answered.
pub type CallbackId = u64;

/// Most callbacks held waiting for their commit; beyond that the app is told to retry.
pub const MAX_HELD: usize = 1024;
/// Characters of a backend's answer kept in a failure reason.
const EXCERPT_CHARS: usize = 200;
/// What the app is told to wait before retrying a callback that was not committed.
const RETRY_AFTER_SECS: u64 = 2;

/// One HTTP push for the io task to perform: `POST url` with these headers and body.
#[derive(Clone, Debug, PartialEq)]
pub struct PushRequest {
    /// Give it back with the outcome.
    pub id: RequestId,
    /// The attempt it carries.
    pub attempt: AttemptId,
    /// The backend's push endpoint.
    pub url: String,
    /// `X-Tocsin-Timestamp`.
    pub timestamp: String,
    /// `X-Tocsin-Signature`.
    pub signature: String,
    /// The JSON body ([`Push`]).
    pub body: Vec<u8>,
}

/// What came of one push.
#[derive(Clone, Debug, PartialEq)]
pub enum PushOutcome {
    /// The backend answered with this status and (the start of) this body.
    Status {
        /// HTTP status code.
        code: u16,
        /// The answer's body, possibly cut short by the io task.
        body: Vec<u8>,
    },
    /// No complete answer in time.
    Timeout,
    /// Could not connect (refused, unreachable, DNS).
    Connect(String),
    /// The connection broke or the answer was not HTTP.
    Broken(String),
}

/// The method of a request on the callback listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// Anything else.
    Other(String),
}

/// One request on the callback listener, as the io task read it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallbackRequest {
    /// The method.
    pub method: Method,
    /// The path without the query (`/callback`, `/ack/<token>`).
    pub path: String,
    /// `X-Tocsin-Timestamp`, if sent.
    pub timestamp: Option<String>,
    /// `X-Tocsin-Signature`, if sent.
    pub signature: Option<String>,
    /// The body, when it fit in `max_body_bytes`.
    pub body: Vec<u8>,
    /// The body was longer than `max_body_bytes` (and was not read).
    pub oversized: bool,
}

/// The answer to one callback request.
#[derive(Clone, Debug, PartialEq)]
pub struct CallbackResponse {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Retry-After` seconds, for a 503.
    pub retry_after: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

impl CallbackResponse {
    fn json(status: u16, ok: bool, message: &str) -> Self {
        CallbackResponse {
            status,
            content_type: "application/json",
            retry_after: None,
            body: answer_body(ok, message),
        }
    }

    fn html(status: u16, body: String) -> Self {
        CallbackResponse {
            status,
            content_type: "text/html; charset=utf-8",
            retry_after: None,
            body: body.into_bytes(),
        }
    }

    fn retry(mut self) -> Self {
        self.retry_after = Some(RETRY_AFTER_SECS);
        self
    }
}

/// A push in flight.
#[derive(Clone, Debug)]
struct Flight {
    attempt: AttemptId,
    deadline: Timestamp,
}

/// How a held callback is answered once committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// JSON, for the app backend.
    Json,
    /// A page, for a person who tapped a link.
    Page,
}

/// A callback whose reply waits for its commit.
#[derive(Clone, Debug)]
struct Held {
    callback: CallbackId,
    answer: Answer,
    deadline: Timestamp,
}

/// One app backend's conversation.
#[derive(Debug)]
pub struct Webhook {
    cfg: WebhookConfig,
    secret: Secret,
    base: String,
    queue: VecDeque<Outbound>,
    in_flight: BTreeMap<RequestId, Flight>,
    next_request: RequestId,
    transmits: VecDeque<PushRequest>,
    events: VecDeque<DriverEvent>,
    replies: VecDeque<(CallbackId, CallbackResponse)>,
    held: BTreeMap<String, Held>,
    next_receipt: u64,
    failures: u32,
    backend_up: bool,
    listening: bool,
    health: Health,
}

impl Webhook {
    /// A conversation with the backend `cfg` names, signing with `secret`. The device
    /// counts as down until the listener is open ([`Webhook::handle_listener_opened`]).
    pub fn new(cfg: WebhookConfig, secret: Secret, _now: Timestamp) -> Self {
        let base = cfg.public_base();
        Webhook {
            cfg,
            secret,
            base,
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next_request: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            replies: VecDeque::new(),
            held: BTreeMap::new(),
            next_receipt: 1,
            failures: 0,
            backend_up: true,
            listening: false,
            health: Health::default(),
        }
    }

    /// A router command.
    pub fn submit(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => self.enqueue(now, out),
            DriverCommand::SendFrame(f) => self.events.push_back(f.refused()),
            DriverCommand::Cancel(attempt) => {
                // In flight, the backend has it already: its answer is reported as usual.
                if let Some(i) = self.queue.iter().position(|o| o.attempt == attempt) {
                    self.queue.remove(i);
                    self.events.push_back(DriverEvent::Failed {
                        attempt,
                        retryable: false,
                        reason: "cancelled before it was pushed".to_owned(),
                    });
                }
            }
            DriverCommand::Release(receipt) => {
                if let Some(h) = self.held.remove(&receipt.0) {
                    let answer = match h.answer {
                        Answer::Json => CallbackResponse::json(200, true, "recorded"),
                        Answer::Page => CallbackResponse::html(200, page_done()),
                    };
                    self.replies.push_back((h.callback, answer));
                }
            }
        }
    }

    fn enqueue(&mut self, now: Timestamp, out: Outbound) {
        let fail = |reason: String| DriverEvent::Failed {
            attempt: out.attempt,
            retryable: false,
            reason,
        };
        let sub = match &out.to {
            Address::App(s) => s,
            other => {
                self.events.push_back(fail(format!(
                    "{other:?} is not an app subscriber; this device pushes to apps"
                )));
                return;
            }
        };
        if sub.trim().is_empty() || sub.chars().count() > MAX_SUBSCRIBER_CHARS {
            self.events.push_back(fail(format!(
                "subscriber id must be 1 to {MAX_SUBSCRIBER_CHARS} characters"
            )));
            return;
        }
        if out.text.chars().count() > self.cfg.max_chars {
            self.events.push_back(fail(format!(
                "text longer than {} characters",
                self.cfg.max_chars
            )));
            return;
        }
        if self.queue.len() >= self.cfg.queue_limit {
            self.events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: true,
                reason: "push queue full".to_owned(),
            });
            return;
        }
        self.events.push_back(DriverEvent::Accepted {
            attempt: out.attempt,
        });
        self.queue.push_back(out);
        self.pump(now);
    }

    /// Starts queued pushes while fewer than `max_in_flight` are out.
    fn pump(&mut self, now: Timestamp) {
        while self.in_flight.len() < self.cfg.max_in_flight {
            let Some(out) = self.queue.pop_front() else {
                return;
            };
            let Address::App(sub) = &out.to else {
                continue; // Checked in enqueue.
            };
            let token = sign::token(&self.secret, out.attempt, sub);
            let (kind, grade, exercise) = classify(&out.text);
            let push = Push {
                ack_url: format!("{}/ack/{token}", self.base),
                callback_url: format!("{}/callback", self.base),
                token,
                subscriber: sub.clone(),
                text: out.text.clone(),
                kind,
                grade,
                exercise,
                sent_at: now.as_millis(),
            };
            let mut body = Vec::new();
            push.emit(&mut body);
            let secs = now.as_millis().div_euclid(1000);
            let id = self.next_request;
            self.next_request += 1;
            self.in_flight.insert(
                id,
                Flight {
                    attempt: out.attempt,
                    deadline: now + self.cfg.timeout(),
                },
            );
            self.transmits.push_back(PushRequest {
                id,
                attempt: out.attempt,
                url: self.cfg.url.clone(),
                timestamp: secs.to_string(),
                signature: sign::sign(&self.secret, secs, &body),
                body,
            });
        }
    }

    /// What came of push `id`. An outcome for a push already timed out is ignored.
    pub fn handle_response(&mut self, now: Timestamp, id: RequestId, outcome: PushOutcome) {
        let Some(flight) = self.in_flight.remove(&id) else {
            return;
        };
        let attempt = flight.attempt;
        let failed = |retryable, reason| DriverEvent::Failed {
            attempt,
            retryable,
            reason,
        };
        match outcome {
            PushOutcome::Status { code, body } => {
                // Any answer proves the backend reachable.
                let event = match code {
                    200..=299 => {
                        self.health.sent += 1;
                        let reference = PushAnswer::parse(&body)
                            .id
                            .filter(|id| !id.trim().is_empty())
                            .map(|id| excerpt(id.as_bytes()))
                            .unwrap_or_else(|| format!("http {code}"));
                        DriverEvent::Sent { attempt, reference }
                    }
                    500..=599 | 408 | 429 => {
                        failed(true, format!("http {code}: {}", excerpt(&body)))
                    }
                    300..=399 => failed(
                        false,
                        format!("http {code}: redirects are not followed; check the device's url"),
                    ),
                    _ => failed(false, format!("http {code}: {}", excerpt(&body))),
                };
                // The attempt's outcome first, then what it says about the backend.
                self.events.push_back(event);
                if (500..=599).contains(&code) {
                    self.push_failed(format!("http {code}"));
                } else {
                    self.push_answered();
                }
            }
            PushOutcome::Timeout => {
                let reason = format!("no answer within {} ms", self.cfg.timeout_ms);
                self.events.push_back(failed(true, reason.clone()));
                self.push_failed(reason);
            }
            PushOutcome::Connect(e) => {
                let reason = format!("cannot connect: {e}");
                self.events.push_back(failed(true, reason.clone()));
                self.push_failed(reason);
            }
            PushOutcome::Broken(e) => {
                let reason = format!("connection broke: {e}");
                self.events.push_back(failed(true, reason.clone()));
                self.push_failed(reason);
            }
        }
        self.pump(now);
    }

    fn push_answered(&mut self) {
        self.failures = 0;
        if !self.backend_up {
            self.backend_up = true;
            self.health.last_error = None;
            self.report_health();
        }
    }

    fn push_failed(&mut self, reason: String) {
        self.failures = self.failures.saturating_add(1);
        if self.backend_up && self.failures >= self.cfg.down_after {
            self.backend_up = false;
            self.health.last_error = Some(format!(
                "{} pushes failed in a row; last: {reason}",
                self.failures
            ));
            self.report_health();
        }
    }

    fn report_health(&mut self) {
        self.health.up = self.backend_up && self.listening;
        self.health.registered = self.backend_up;
        self.events
            .push_back(DriverEvent::Health(self.health.clone()));
    }

    /// The callback listener is bound at `local`: acks can come in. Without a
    /// `public_url`, pushes name `local` (so `callback_bind` may use port 0).
    pub fn handle_listener_opened(&mut self, _now: Timestamp, local: std::net::SocketAddr) {
        if self.cfg.public_url.is_none() {
            self.base = format!("http://{local}");
        }
        self.listening = true;
        if self.backend_up {
            self.health.last_error = None;
        }
        self.report_health();
    }

    /// The callback listener could not be bound (or stopped): the device is down.
    pub fn handle_listener_failed(&mut self, _now: Timestamp, reason: &str) {
        let was = self.listening || self.health.last_error.is_none();
        self.listening = false;
        self.health.last_error = Some(format!("callback listener: {reason}"));
        if was {
            self.report_health();
        }
    }

    /// A request on the callback listener. Its answer comes from [`Webhook::poll_reply`]
    /// under the same `id`, at once or when the reply it carries is committed.
    pub fn handle_callback(&mut self, now: Timestamp, id: CallbackId, req: CallbackRequest) {
        let path = req.path.as_str();
        if path == "/callback" {
            if req.method != Method::Post {
                self.replies
                    .push_back((id, CallbackResponse::json(405, false, "use POST")));
                return;
            }
            self.signed_callback(now, id, req);
        } else if let Some(token) = path.strip_prefix("/ack/") {
            let opened = sign::open_token(&self.secret, token);
            match (req.method, opened) {
                (_, Err(_)) => self.replies.push_back((
                    id,
                    CallbackResponse::html(404, page("此链接无效 / This link is not valid.", None)),
                )),
                (Method::Get, Ok(_)) => self
                    .replies
                    .push_back((id, CallbackResponse::html(200, page_confirm()))),
                (Method::Post, Ok((attempt, sub))) => {
                    let evidence = format!(
                        "ack link tapped and confirmed: token verified (HMAC-SHA256) for attempt {attempt}, subscriber {sub:?}"
                    );
                    self.inbound(
                        now,
                        id,
                        Answer::Page,
                        sub,
                        "1".to_owned(),
                        evidence,
                        Some(now),
                        Some(attempt),
                    );
                }
                (Method::Other(_), Ok(_)) => self
                    .replies
                    .push_back((id, CallbackResponse::json(405, false, "use GET or POST"))),
            }
        } else {
            self.replies
                .push_back((id, CallbackResponse::json(404, false, "not found")));
        }
    }

    fn signed_callback(&mut self, now: Timestamp, id: CallbackId, req: CallbackRequest) {
        if req.oversized || req.body.len() > self.cfg.max_body_bytes {
            let msg = format!("body larger than {} bytes", self.cfg.max_body_bytes);
            self.replies
                .push_back((id, CallbackResponse::json(413, false, &msg)));
            return;
        }
        let now_secs = now.as_millis().div_euclid(1000);
        let ts = match sign::verify(
            &self.secret,
            now_secs,
            self.cfg.replay_window_secs,
            req.timestamp.as_deref(),
            req.signature.as_deref(),
            &req.body,
        ) {
            Ok(ts) => ts,
            Err(e) => {
                tracing::warn!(%e, "callback refused");
                self.replies
                    .push_back((id, CallbackResponse::json(401, false, &e.to_string())));
                return;
            }
        };
        let cb = match Callback::parse(&req.body) {
            Ok(cb) => cb,
            Err(e) => {
                self.replies
                    .push_back((id, CallbackResponse::json(400, false, &e.to_string())));
                return;
            }
        };
        let mut in_reply_to = None;
        if let Some(token) = &cb.token {
            match sign::open_token(&self.secret, token) {
                Ok((attempt, sub)) if sub == cb.subscriber => in_reply_to = Some(attempt),
                Ok(_) => {
                    self.replies.push_back((
                        id,
                        CallbackResponse::json(400, false, "token: names another subscriber"),
                    ));
                    return;
                }
                Err(e) => {
                    self.replies.push_back((
                        id,
                        CallbackResponse::json(400, false, &format!("token: {e}")),
                    ));
                    return;
                }
            }
        }
        let text = cb
            .text
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| "1".to_owned());
        let evidence = format!(
            "signed callback: HMAC-SHA256 verified, timestamp {ts} ({:+} s from the gateway){}; body {}",
            ts - now_secs,
            match in_reply_to {
                Some(a) => format!(", token verified for attempt {a}"),
                None => String::new(),
            },
            excerpt(&req.body)
        );
        let sent_at = Some(Timestamp::from_millis(
            cb.sent_at.unwrap_or(ts.saturating_mul(1000)),
        ));
        self.inbound(
            now,
            id,
            Answer::Json,
            cb.subscriber,
            text,
            evidence,
            sent_at,
            in_reply_to,
        );
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one Inbound event's fields, from two routes"
    )]
    fn inbound(
        &mut self,
        now: Timestamp,
        id: CallbackId,
        answer: Answer,
        sub: String,
        text: String,
        evidence: String,
        sent_at: Option<Timestamp>,
        in_reply_to: Option<AttemptId>,
    ) {
        if self.held.len() >= MAX_HELD {
            let busy = match answer {
                Answer::Json => CallbackResponse::json(503, false, "busy; try again"),
                Answer::Page => CallbackResponse::html(
                    503,
                    page("系统繁忙，请稍后重试 / Busy, try again.", None),
                ),
            };
            self.replies.push_back((id, busy.retry()));
            return;
        }
        let receipt = format!("webhook-{}", self.next_receipt);
        self.next_receipt += 1;
        self.held.insert(
            receipt.clone(),
            Held {
                callback: id,
                answer,
                deadline: now + self.cfg.commit_wait(),
            },
        );
        self.health.received += 1;
        self.events.push_back(DriverEvent::Inbound {
            from: Address::App(sub),
            text,
            evidence,
            sent_at,
            receipt: Some(InboundReceipt(receipt)),
            in_reply_to,
        });
    }

    /// Deadlines: pushes without an answer fail as retryable; callbacks not committed in
    /// time are told to retry.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let late: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.handle_response(now, id, PushOutcome::Timeout);
        }
        let stale: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in stale {
            if let Some(h) = self.held.remove(&r) {
                let answer = match h.answer {
                    Answer::Json => {
                        CallbackResponse::json(503, false, "not recorded yet; try again")
                    }
                    Answer::Page => CallbackResponse::html(
                        503,
                        page(
                            "尚未记录，请重试 / Not recorded yet, please try again.",
                            None,
                        ),
                    ),
                };
                self.replies.push_back((h.callback, answer.retry()));
            }
        }
    }

    /// The next push to perform.
    pub fn poll_transmit(&mut self) -> Option<PushRequest> {
        self.transmits.pop_front()
    }

    /// The next answer to a callback request.
    pub fn poll_reply(&mut self) -> Option<(CallbackId, CallbackResponse)> {
        self.replies.pop_front()
    }

    /// The next fact for the gateway.
    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop_front()
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let flights = self.in_flight.values().map(|f| f.deadline);
        let held = self.held.values().map(|h| h.deadline);
        flights.chain(held).min()
    }

    /// Pushes waiting or in flight.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.in_flight.len()
    }

    /// How long a push may take (the io task's own bound on one request).
    pub fn push_timeout(&self) -> Duration {
        self.cfg.timeout()
    }
}

/// The start of a body as one line of text, for a reason or evidence.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        s.push('…');
    }
    s
}

/// A small page for a person's phone.
fn page(message: &str, form: Option<&str>) -> String {
    format!(
        "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Tocsin</title></head><body><p style=\"font-size:1.4em\">{message}</p>{}</body></html>",
        form.unwrap_or("")
    )
}

fn page_confirm() -> String {
    // The form posts to the same path: no token is repeated in the page.
    page(
        "确认已收到预警？ / Confirm you received the warning?",
        Some(
            "<form method=\"post\"><button type=\"submit\" style=\"font-size:1.6em;padding:0.5em 2em\">确认收到 / Acknowledge</button></form>",
        ),
    )
}

fn page_done() -> String {
    page("已确认，谢谢。/ Acknowledged, thank you.", None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_channel::FrameOut;

    const KEY: &str = "tocsin-test-secret-0001";
    const T0: Timestamp = Timestamp(1_700_000_000_000);
    const LOCAL: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        8091,
    ));

    fn webhook() -> Webhook {
        let mut cfg = WebhookConfig::new("http://127.0.0.1:9000/push", KEY);
        cfg.max_in_flight = 2;
        cfg.timeout_ms = 5_000;
        let mut w = Webhook::new(cfg, Secret::new(KEY.as_bytes().to_vec()), T0);
        w.handle_listener_opened(T0, LOCAL);
        assert!(matches!(
            w.poll_event(),
            Some(DriverEvent::Health(Health { up: true, .. }))
        ));
        w
    }

    fn send(w: &mut Webhook, now: Timestamp, attempt: u64, sub: &str, text: &str) {
        w.submit(
            now,
            DriverCommand::Send(Outbound {
                attempt: AttemptId(attempt),
                to: Address::App(sub.into()),
                text: text.into(),
                want_report: false,
            }),
        );
    }

    fn events(w: &mut Webhook) -> Vec<DriverEvent> {
        std::iter::from_fn(|| w.poll_event()).collect()
    }

    fn signed(body: &[u8], ts_secs: i64, key: &str) -> CallbackRequest {
        let secret = Secret::new(key.as_bytes().to_vec());
        CallbackRequest {
            method: Method::Post,
            path: "/callback".into(),
            timestamp: Some(ts_secs.to_string()),
            signature: Some(sign::sign(&secret, ts_secs, body)),
            body: body.to_vec(),
            oversized: false,
        }
    }

    #[test]
    fn a_push_is_built_signed_and_sent_on_2xx() {
        let mut w = webhook();
        send(
            &mut w,
            T0,
            42,
            "u-1001",
            "【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认",
        );
        assert_eq!(
            events(&mut w),
            vec![DriverEvent::Accepted {
                attempt: AttemptId(42)
            }]
        );
        let req = w.poll_transmit().unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9000/push");
        assert_eq!(req.timestamp, "1700000000");
        let secret = Secret::new(KEY.as_bytes().to_vec());
        assert_eq!(req.signature, sign::sign(&secret, 1_700_000_000, &req.body));
        let token = "42.752d31303031.5da85a7bceb5ff6b4e423454a15027a4";
        let expected = format!(
            r#"{{"token":"{token}","subscriber":"u-1001","text":"【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认","kind":"warning","grade":"red","exercise":false,"sent_at":1700000000000,"ack_url":"http://127.0.0.1:8091/ack/{token}","callback_url":"http://127.0.0.1:8091/callback"}}"#
        );
        assert_eq!(String::from_utf8(req.body.clone()).unwrap(), expected);
        assert_eq!(w.poll_timeout(), Some(T0 + Duration::from_secs(5)));
        w.handle_response(
            T0,
            req.id,
            PushOutcome::Status {
                code: 202,
                body: br#"{"id":"n-77"}"#.to_vec(),
            },
        );
        assert_eq!(
            events(&mut w),
            vec![DriverEvent::Sent {
                attempt: AttemptId(42),
                reference: "n-77".into()
            }]
        );
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn statuses_map_to_final_or_retryable_failures() {
        let mut w = webhook();
        for (i, (outcome, retryable, says)) in [
            (
                PushOutcome::Status {
                    code: 404,
                    body: b"no such subscriber".to_vec(),
                },
                false,
                "http 404: no such subscriber",
            ),
            (
                PushOutcome::Status {
                    code: 401,
                    body: b"bad signature\n".to_vec(),
                },
                false,
                "http 401: bad signature ",
            ),
            (
                PushOutcome::Status {
                    code: 301,
                    body: vec![],
                },
                false,
                "redirects",
            ),
            (
                PushOutcome::Status {
                    code: 429,
                    body: vec![],
                },
                true,
                "http 429",
            ),
            (
                PushOutcome::Status {
                    code: 503,
                    body: b"down".to_vec(),
                },
                true,
                "http 503: down",
            ),
            (
                PushOutcome::Connect("refused".into()),
                true,
                "cannot connect: refused",
            ),
            (
                PushOutcome::Broken("reset".into()),
                true,
                "connection broke: reset",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let attempt = i as u64 + 1;
            send(&mut w, T0, attempt, "u-1", "hi");
            let req = w.poll_transmit().unwrap();
            w.handle_response(T0, req.id, outcome);
            let failed = events(&mut w)
                .into_iter()
                .find_map(|e| match e {
                    DriverEvent::Failed {
                        attempt: a,
                        retryable,
                        reason,
                    } if a.0 == attempt => Some((retryable, reason)),
                    _ => None,
                })
                .unwrap();
            assert_eq!(failed.0, retryable, "{says}");
            assert!(failed.1.contains(says), "{says}: {}", failed.1);
        }
    }

    #[test]
    fn health_goes_down_after_consecutive_failures_and_up_on_the_next_answer() {
        let mut w = webhook();
        let mut downs = 0;
        for attempt in 1..=3 {
            send(&mut w, T0, attempt, "u-1", "hi");
            let req = w.poll_transmit().unwrap();
            w.handle_response(T0, req.id, PushOutcome::Connect("refused".into()));
            for e in events(&mut w) {
                if let DriverEvent::Health(h) = e {
                    assert!(!h.up && !h.registered);
                    assert!(h.last_error.unwrap().contains("3 pushes failed in a row"));
                    downs += 1;
                    assert_eq!(attempt, 3);
                }
            }
        }
        assert_eq!(downs, 1);
        send(&mut w, T0, 4, "u-1", "hi");
        let req = w.poll_transmit().unwrap();
        w.handle_response(
            T0,
            req.id,
            PushOutcome::Status {
                code: 200,
                body: vec![],
            },
        );
        let ev = events(&mut w);
        assert!(
            ev.iter()
                .any(|e| matches!(e, DriverEvent::Health(h) if h.up && h.sent == 1)),
            "{ev:?}"
        );
        assert!(ev.contains(&DriverEvent::Sent {
            attempt: AttemptId(4),
            reference: "http 200".into()
        }));
    }

    #[test]
    fn in_flight_is_bounded_and_a_silent_backend_times_out() {
        let mut w = webhook();
        for a in 1..=3 {
            send(&mut w, T0, a, "u-1", "hi");
        }
        let first = w.poll_transmit().unwrap();
        let second = w.poll_transmit().unwrap();
        assert!(w.poll_transmit().is_none(), "max_in_flight is 2");
        assert_eq!(w.pending(), 3);
        // A cancel takes back the queued one only.
        w.submit(T0, DriverCommand::Cancel(AttemptId(3)));
        w.submit(T0, DriverCommand::Cancel(AttemptId(1)));
        let ev = events(&mut w);
        assert!(ev.contains(&DriverEvent::Failed {
            attempt: AttemptId(3),
            retryable: false,
            reason: "cancelled before it was pushed".into()
        }));
        w.handle_timeout(T0 + Duration::from_millis(4_999));
        assert!(events(&mut w).is_empty());
        w.handle_timeout(T0 + Duration::from_secs(5));
        let ev = events(&mut w);
        let timeouts = ev
            .iter()
            .filter(|e| matches!(e, DriverEvent::Failed { retryable: true, reason, .. } if reason.contains("no answer within 5000 ms")))
            .count();
        assert_eq!(timeouts, 2);
        // A late answer for a timed-out push is ignored.
        w.handle_response(
            T0 + Duration::from_secs(6),
            first.id,
            PushOutcome::Status {
                code: 200,
                body: vec![],
            },
        );
        w.handle_response(
            T0 + Duration::from_secs(6),
            second.id,
            PushOutcome::Status {
                code: 200,
                body: vec![],
            },
        );
        assert!(
            !events(&mut w)
                .iter()
                .any(|e| matches!(e, DriverEvent::Sent { .. }))
        );
    }

    #[test]
    fn wrong_sends_fail_for_good() {
        let mut w = webhook();
        w.submit(
            T0,
            DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::MeshNode(7),
                text: "hi".into(),
                want_report: false,
            }),
        );
        send(&mut w, T0, 2, "", "hi");
        send(&mut w, T0, 3, "u", &"字".repeat(2001));
        w.submit(
            T0,
            DriverCommand::SendFrame(FrameOut {
                attempt: AttemptId(4),
                to: Address::App("u".into()),
                bytes: vec![1],
            }),
        );
        let ev = events(&mut w);
        assert_eq!(ev.len(), 4);
        assert!(ev.iter().all(|e| matches!(
            e,
            DriverEvent::Failed {
                retryable: false,
                ..
            }
        )));
        assert!(w.poll_transmit().is_none());
    }

    #[test]
    fn a_good_callback_is_inbound_and_answered_after_release() {
        let mut w = webhook();
        let body = br#"{"subscriber":"u-1001","text":"1 K7XT"}"#;
        w.handle_callback(T0, 9, signed(body, 1_700_000_010, KEY));
        assert!(w.poll_reply().is_none(), "held until committed");
        let ev = events(&mut w);
        let [
            DriverEvent::Inbound {
                from,
                text,
                evidence,
                sent_at,
                receipt,
                in_reply_to,
            },
        ] = ev.as_slice()
        else {
            panic!("{ev:?}")
        };
        assert_eq!(from, &Address::App("u-1001".into()));
        assert_eq!(text, "1 K7XT");
        assert!(
            evidence
                .starts_with("signed callback: HMAC-SHA256 verified, timestamp 1700000010 (+10 s"),
            "{evidence}"
        );
        assert_eq!(*sent_at, Some(Timestamp(1_700_000_010_000)));
        assert_eq!(*in_reply_to, None);
        w.submit(T0, DriverCommand::Release(receipt.clone().unwrap()));
        let (id, resp) = w.poll_reply().unwrap();
        assert_eq!((id, resp.status), (9, 200));
        assert_eq!(resp.body, br#"{"status":"recorded"}"#);
    }

    #[test]
    fn a_callback_not_committed_in_time_is_told_to_retry() {
        let mut w = webhook();
        let body = br#"{"subscriber":"u-1","text":"1"}"#;
        w.handle_callback(T0, 1, signed(body, 1_700_000_000, KEY));
        let receipt = match events(&mut w).pop() {
            Some(DriverEvent::Inbound { receipt, .. }) => receipt.unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(w.poll_timeout(), Some(T0 + Duration::from_secs(10)));
        w.handle_timeout(T0 + Duration::from_secs(10));
        let (id, resp) = w.poll_reply().unwrap();
        assert_eq!((id, resp.status, resp.retry_after), (1, 503, Some(2)));
        // A release after that answers nothing twice.
        w.submit(T0, DriverCommand::Release(receipt));
        assert!(w.poll_reply().is_none());
    }

    #[test]
    fn bad_callbacks_are_refused_without_an_event() {
        let mut w = webhook();
        let body = br#"{"subscriber":"u-1","text":"1 K7XT"}"#;
        let mut oversized = signed(body, 1_700_000_000, KEY);
        oversized.oversized = true;
        let mut unsigned = signed(body, 1_700_000_000, KEY);
        unsigned.signature = None;
        let mut get = signed(body, 1_700_000_000, KEY);
        get.method = Method::Get;
        let mut elsewhere = signed(body, 1_700_000_000, KEY);
        elsewhere.path = "/admin".into();
        let token = sign::token(&Secret::new(KEY.as_bytes().to_vec()), AttemptId(5), "u-2");
        let others_token = format!(r#"{{"subscriber":"u-1","token":"{token}"}}"#);
        for (req, status, says) in [
            (
                signed(body, 1_700_000_000, "not-the-shared-key-000"),
                401,
                "signature does not match",
            ),
            (signed(body, 1_699_999_000, KEY), 401, "-1000 s away"),
            (signed(body, 1_700_000_400, KEY), 401, "400 s away"),
            (unsigned, 401, "no X-Tocsin-Signature"),
            (oversized, 413, "larger than 16384"),
            (
                signed(b"{\"subscriber\":", 1_700_000_000, KEY),
                400,
                "bad JSON",
            ),
            (
                signed(&[0xff, 0x00, 0x13], 1_700_000_000, KEY),
                400,
                "bad JSON",
            ),
            (
                signed(
                    br#"{"subscriber":"u-1","token":"1.2.3"}"#,
                    1_700_000_000,
                    KEY,
                ),
                400,
                "token: not a Tocsin token",
            ),
            (
                signed(others_token.as_bytes(), 1_700_000_000, KEY),
                400,
                "another subscriber",
            ),
            (get, 405, "POST"),
            (elsewhere, 404, "not found"),
        ] {
            w.handle_callback(T0, 1, req);
            let (_, resp) = w.poll_reply().unwrap();
            let body = String::from_utf8(resp.body).unwrap();
            assert_eq!(resp.status, status, "{says}: {body}");
            assert!(body.contains(says), "{says}: {body}");
        }
        assert!(events(&mut w).is_empty());
    }

    #[test]
    fn a_callback_with_its_push_token_answers_that_attempt() {
        let mut w = webhook();
        let token = sign::token(&Secret::new(KEY.as_bytes().to_vec()), AttemptId(5), "u-1");
        let body = format!(r#"{{"subscriber":"u-1","token":"{token}","sent_at":1700000000500}}"#);
        w.handle_callback(T0, 1, signed(body.as_bytes(), 1_700_000_000, KEY));
        match events(&mut w).pop() {
            Some(DriverEvent::Inbound {
                text,
                in_reply_to,
                sent_at,
                evidence,
                ..
            }) => {
                assert_eq!(text, "1");
                assert_eq!(in_reply_to, Some(AttemptId(5)));
                assert_eq!(sent_at, Some(Timestamp(1_700_000_000_500)));
                assert!(
                    evidence.contains("token verified for attempt a5"),
                    "{evidence}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ack_link_shows_a_page_and_only_its_post_acknowledges() {
        let mut w = webhook();
        send(&mut w, T0, 7, "u-9", "【黄色预警】大风 回复 1 AB12 确认");
        let req = w.poll_transmit().unwrap();
        let push = Push::parse(&req.body).unwrap();
        assert_eq!(push.grade, Some(tocsin_core::Grade::Yellow));
        let path = push
            .ack_url
            .strip_prefix("http://127.0.0.1:8091")
            .unwrap()
            .to_owned();
        events(&mut w);
        let link = |method| CallbackRequest {
            method,
            path: path.clone(),
            timestamp: None,
            signature: None,
            body: vec![],
            oversized: false,
        };
        w.handle_callback(T0, 1, link(Method::Get));
        let (_, page) = w.poll_reply().unwrap();
        assert_eq!(page.status, 200);
        assert!(
            String::from_utf8(page.body)
                .unwrap()
                .contains("<form method=\"post\">")
        );
        assert!(events(&mut w).is_empty(), "a GET acknowledges nothing");
        w.handle_callback(T0, 2, link(Method::Post));
        let receipt = match events(&mut w).pop() {
            Some(DriverEvent::Inbound {
                from,
                text,
                in_reply_to,
                receipt,
                ..
            }) => {
                assert_eq!(from, Address::App("u-9".into()));
                assert_eq!((text.as_str(), in_reply_to), ("1", Some(AttemptId(7))));
                receipt.unwrap()
            }
            other => panic!("{other:?}"),
        };
        w.submit(T0, DriverCommand::Release(receipt));
        let (id, done) = w.poll_reply().unwrap();
        assert_eq!((id, done.status), (2, 200));
        // A forged link is just not found.
        let mut forged = link(Method::Post);
        forged.path = "/ack/7.752d39.00000000000000000000000000000000".into();
        w.handle_callback(T0, 3, forged);
        assert_eq!(w.poll_reply().unwrap().1.status, 404);
        assert!(events(&mut w).is_empty());
    }

    #[test]
    fn a_listener_that_cannot_bind_reports_the_device_down() {
        let cfg = WebhookConfig::new("http://127.0.0.1:9000/push", KEY);
        let mut w = Webhook::new(cfg, Secret::new(KEY.as_bytes().to_vec()), T0);
        w.handle_listener_failed(T0, "address in use");
        match w.poll_event() {
            Some(DriverEvent::Health(h)) => {
                assert!(!h.up);
                assert_eq!(
                    h.last_error.as_deref(),
                    Some("callback listener: address in use")
                );
            }
            other => panic!("{other:?}"),
        }
        // Retries that fail again say nothing new.
        w.handle_listener_failed(T0, "address in use");
        assert!(w.poll_event().is_none());
        w.handle_listener_opened(T0, LOCAL);
        assert!(matches!(
            w.poll_event(),
            Some(DriverEvent::Health(Health {
                up: true,
                last_error: None,
                ..
            }))
        ));
    }
}
