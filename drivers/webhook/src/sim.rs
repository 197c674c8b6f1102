//! A simulated app backend as a sans-IO state machine: it takes the gateway's pushes,
//! checks their signatures, answers them (or fails, slowly or not, as its faults say),
//! and for scripted subscribers answers the warning after a delay — by a signed callback
//! carrying the code from the text, a callback with the push's token, or by tapping the
//! ack link. [`crate::backend`] runs it behind a real HTTP listener on 127.0.0.1.
//!
//! Inputs: [`AppBackend::handle_push`], [`AppBackend::handle_callback_answer`] (what the
//! gateway answered a callback), [`AppBackend::handle_timeout`]. Outputs:
//! [`AppBackend::poll_answer`] (the answer to a push, when due),
//! [`AppBackend::poll_callback`] (a request to make to the gateway),
//! [`AppBackend::poll_report`] (what happened, for tests and the `tocsin-sim` printout),
//! [`AppBackend::poll_timeout`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tocsin_core::Timestamp;

use crate::sign::{self, Secret};
use crate::wire::{Callback, Push};

/// Identifies one push until it is answered.
pub type PushId = u64;
/// Identifies one callback the backend makes.
pub type OutId = u64;

/// How a person answers, through the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A signed `POST /callback` with the text (`1 CODE`).
    #[default]
    Callback,
    /// A signed `POST /callback` with the push's token and no text.
    Token,
    /// Taps the ack link: `GET` the page, then `POST` it.
    Link,
}

/// What one subscriber does when a push reaches them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Behaviour {
    /// Reads it and answers nothing.
    Ignore,
    /// Answers after a delay.
    Reply {
        /// Milliseconds from the push to the answer.
        after_ms: u64,
        /// What to answer; `1 <code from the text>` when absent.
        #[serde(default)]
        text: Option<String>,
        /// How.
        #[serde(default)]
        via: Via,
    },
}

/// Faults the backend injects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Answer the first this many pushes `503` (then behave).
    pub fail_first: u32,
    /// Probability of answering a push `503`.
    pub error_rate: f64,
    /// Answer every push this late (the gateway may time out first).
    pub slow: Option<Duration>,
    /// Probability of signing a callback with the wrong key (the gateway must refuse it).
    pub bad_signature_rate: f64,
}

/// The simulated backend's configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The key shared with the gateway.
    pub secret: Secret,
    /// Scripted subscribers.
    pub people: HashMap<String, Behaviour>,
    /// What everyone else does.
    pub default: Behaviour,
    /// Faults.
    pub faults: Faults,
    /// How far a push's timestamp may be from the backend's clock, seconds.
    pub replay_window_secs: u64,
    /// Times a callback answered `503` (or not at all) is tried again.
    pub callback_retries: u32,
    /// RNG seed for the faults.
    pub seed: u64,
}

impl SimConfig {
    /// A backend sharing `secret`, where nobody answers and nothing fails.
    pub fn new(secret: Secret) -> Self {
        SimConfig {
            secret,
            people: HashMap::new(),
            default: Behaviour::Ignore,
            faults: Faults::default(),
            replay_window_secs: 300,
            callback_retries: 5,
            seed: 1,
        }
    }
}

/// A push received, as the backend's HTTP layer read it.
#[derive(Clone, Debug, PartialEq)]
pub struct PushIn {
    /// `X-Tocsin-Timestamp`.
    pub timestamp: Option<String>,
    /// `X-Tocsin-Signature`.
    pub signature: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// The answer to a push.
#[derive(Clone, Debug, PartialEq)]
pub struct PushReply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

/// A request the backend makes to the gateway's listener.
#[derive(Clone, Debug, PartialEq)]
pub struct OutRequest {
    /// Give it back with the answer.
    pub id: OutId,
    /// `GET` (true) or `POST`.
    pub get: bool,
    /// Full URL.
    pub url: String,
    /// `X-Tocsin-Timestamp` and `X-Tocsin-Signature`, for a signed callback.
    pub signed: Option<(String, String)>,
    /// JSON body (empty for a link).
    pub body: Vec<u8>,
}

/// What the backend saw, for tests and the printout.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// A push came and was answered with `status`.
    Pushed {
        /// Subscriber, when the body could be read.
        subscriber: Option<String>,
        /// Text, when the body could be read.
        text: Option<String>,
        /// The answer.
        status: u16,
        /// Why not 2xx (bad signature, injected fault).
        note: Option<String>,
    },
    /// A callback the backend made was answered.
    Answered {
        /// Who it was for.
        subscriber: String,
        /// What it said (`1 K7XT`, `token`, `link`).
        text: String,
        /// The gateway's status (0: no answer).
        status: u16,
        /// Whether the backend signed it with the wrong key on purpose.
        forged: bool,
    },
}

/// One callback being made, kept for retries.
#[derive(Clone, Debug)]
struct Pending {
    subscriber: String,
    text: String,
    via: Via,
    callback_url: String,
    ack_url: String,
    token: String,
    tries: u32,
    forged: bool,
    /// For a link: the page was fetched, the POST comes next.
    page_seen: bool,
}

/// The simulated app backend.
#[derive(Debug)]
pub struct AppBackend {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    pushes: u64,
    answers: BTreeMap<(Timestamp, PushId), PushReply>,
    due: BTreeMap<(Timestamp, OutId), ()>,
    pending: HashMap<OutId, Pending>,
    out: VecDeque<OutRequest>,
    next_out: OutId,
    reports: VecDeque<Report>,
}

impl AppBackend {
    /// A backend with nothing received.
    pub fn new(cfg: SimConfig) -> Self {
        AppBackend {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            pushes: 0,
            answers: BTreeMap::new(),
            due: BTreeMap::new(),
            pending: HashMap::new(),
            out: VecDeque::new(),
            next_out: 1,
            reports: VecDeque::new(),
        }
    }

    /// A push from the gateway; its answer comes from [`AppBackend::poll_answer`].
    pub fn handle_push(&mut self, now: Timestamp, id: PushId, push: PushIn) {
        self.pushes += 1;
        let at = now + self.cfg.faults.slow.unwrap_or_default();
        let now_secs = now.as_millis().div_euclid(1000);
        let reply = |status: u16, body: String| PushReply {
            status,
            body: body.into_bytes(),
        };
        if let Err(e) = sign::verify(
            &self.cfg.secret,
            now_secs,
            self.cfg.replay_window_secs,
            push.timestamp.as_deref(),
            push.signature.as_deref(),
            &push.body,
        ) {
            self.report_push(&push.body, 401, Some(e.to_string()));
            let body = serde_json::json!({ "error": e.to_string() }).to_string();
            self.answers.insert((at, id), reply(401, body));
            return;
        }
        let parsed = match Push::parse(&push.body) {
            Ok(p) => p,
            Err(e) => {
                self.report_push(&push.body, 400, Some(e.to_string()));
                let body = serde_json::json!({ "error": e.to_string() }).to_string();
                self.answers.insert((at, id), reply(400, body));
                return;
            }
        };
        let faults = &self.cfg.faults;
        let injected = self.pushes <= u64::from(faults.fail_first)
            || (faults.error_rate > 0.0 && self.rng.random_bool(faults.error_rate.min(1.0)));
        if injected {
            self.report_push(&push.body, 503, Some("injected fault".into()));
            self.answers
                .insert((at, id), reply(503, r#"{"error":"overloaded"}"#.into()));
            return;
        }
        self.report_push(&push.body, 200, None);
        self.answers.insert(
            (at, id),
            reply(
                200,
                serde_json::json!({ "id": format!("n-{id}") }).to_string(),
            ),
        );
        let behaviour = self
            .cfg
            .people
            .get(&parsed.subscriber)
            .unwrap_or(&self.cfg.default)
            .clone();
        if let Behaviour::Reply {
            after_ms,
            text,
            via,
        } = behaviour
        {
            let text = text.unwrap_or_else(|| answer_for(&parsed.text));
            let forged = self.cfg.faults.bad_signature_rate > 0.0
                && self
                    .rng
                    .random_bool(self.cfg.faults.bad_signature_rate.min(1.0));
            let out = self.next_out;
            self.next_out += 1;
            self.pending.insert(
                out,
                Pending {
                    subscriber: parsed.subscriber,
                    text,
                    via,
                    callback_url: parsed.callback_url,
                    ack_url: parsed.ack_url,
                    token: parsed.token,
                    tries: 0,
                    forged,
                    page_seen: false,
                },
            );
            self.due
                .insert((now + Duration::from_millis(after_ms), out), ());
        }
    }

    fn report_push(&mut self, body: &[u8], status: u16, note: Option<String>) {
        let parsed = Push::parse(body).ok();
        self.reports.push_back(Report::Pushed {
            subscriber: parsed.as_ref().map(|p| p.subscriber.clone()),
            text: parsed.map(|p| p.text),
            status,
            note,
        });
    }

    /// What the gateway answered callback `id` (`0` when nothing came back).
    pub fn handle_callback_answer(&mut self, now: Timestamp, id: OutId, status: u16) {
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        if p.via == Via::Link && !p.page_seen && status == 200 {
            // The page is shown; the person taps the button.
            p.page_seen = true;
            self.pending.insert(id, p);
            self.due.insert((now, id), ());
            return;
        }
        let retry = (status == 503 || status == 0) && p.tries < self.cfg.callback_retries;
        if retry {
            p.tries += 1;
            self.pending.insert(id, p);
            self.due.insert((now + Duration::from_secs(1), id), ());
            return;
        }
        let text = match p.via {
            Via::Callback => p.text,
            Via::Token => "token".to_owned(),
            Via::Link => "link".to_owned(),
        };
        self.reports.push_back(Report::Answered {
            subscriber: p.subscriber,
            text,
            status,
            forged: p.forged,
        });
    }

    /// Makes due callbacks and answers due pushes.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some((&(at, id), _)) = self.due.first_key_value() {
            if at > now {
                break;
            }
            self.due.remove(&(at, id));
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            let req = match p.via {
                Via::Link => OutRequest {
                    id,
                    get: !p.page_seen,
                    url: p.ack_url.clone(),
                    signed: None,
                    body: Vec::new(),
                },
                Via::Callback | Via::Token => {
                    let cb = match p.via {
                        Via::Token => Callback {
                            subscriber: p.subscriber.clone(),
                            text: None,
                            token: Some(p.token.clone()),
                            sent_at: Some(now.as_millis()),
                        },
                        _ => Callback {
                            subscriber: p.subscriber.clone(),
                            text: Some(p.text.clone()),
                            token: None,
                            sent_at: Some(now.as_millis()),
                        },
                    };
                    let mut body = Vec::new();
                    cb.emit(&mut body);
                    let secs = now.as_millis().div_euclid(1000);
                    let key = if p.forged {
                        Secret::new(b"not-the-shared-key-of-this-app".to_vec())
                    } else {
                        self.cfg.secret.clone()
                    };
                    OutRequest {
                        id,
                        get: false,
                        url: p.callback_url.clone(),
                        signed: Some((secs.to_string(), sign::sign(&key, secs, &body))),
                        body,
                    }
                }
            };
            self.out.push_back(req);
        }
    }

    /// The answer to a push, once due (`slow` delays it).
    pub fn poll_answer(&mut self, now: Timestamp) -> Option<(PushId, PushReply)> {
        let (&(at, id), _) = self.answers.first_key_value()?;
        if at > now {
            return None;
        }
        self.answers.remove(&(at, id)).map(|r| (id, r))
    }

    /// A request to make to the gateway.
    pub fn poll_callback(&mut self) -> Option<OutRequest> {
        self.out.pop_front()
    }

    /// What happened.
    pub fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    /// The next due answer or callback.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let a = self.answers.keys().next().map(|(t, _)| *t);
        let d = self.due.keys().next().map(|(t, _)| *t);
        a.into_iter().chain(d).min()
    }

    /// Pushes received so far.
    pub fn pushes(&self) -> u64 {
        self.pushes
    }
}

/// What a person types to acknowledge `text`: `1` and the code after `回复 1` (the
/// router's `回复 1 K7XT 确认` and `回复1 K7XT`), or a bare `1` when there is no code.
pub fn answer_for(text: &str) -> String {
    let code = text.rfind("回复").and_then(|at| {
        let rest = text.get(at + "回复".len()..)?.trim_start();
        let rest = rest.strip_prefix('1')?.trim_start();
        let code: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        (!code.is_empty()).then_some(code)
    });
    match code {
        Some(c) => format!("1 {c}"),
        None => "1".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"tocsin-test-secret-0001";
    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn push_in(sub: &str, text: &str, key: &[u8]) -> PushIn {
        let push = Push {
            token: sign::token(&Secret::new(KEY.to_vec()), tocsin_core::AttemptId(3), sub),
            subscriber: sub.into(),
            text: text.into(),
            kind: crate::wire::MessageKind::Warning,
            grade: None,
            exercise: false,
            sent_at: T0.as_millis(),
            ack_url: "http://gw/ack/x".into(),
            callback_url: "http://gw/callback".into(),
        };
        let mut body = Vec::new();
        push.emit(&mut body);
        PushIn {
            timestamp: Some("1700000000".into()),
            signature: Some(sign::sign(&Secret::new(key.to_vec()), 1_700_000_000, &body)),
            body,
        }
    }

    #[test]
    fn the_code_is_taken_from_the_router_texts() {
        assert_eq!(
            answer_for("【红色预警】山洪：转移 回复 1 K7XT 确认"),
            "1 K7XT"
        );
        assert_eq!(answer_for("【演练】【红色预警】山洪 回复1 K7XT"), "1 K7XT");
        assert_eq!(answer_for("【预警解除】山洪 已取消。"), "1");
    }

    #[test]
    fn a_scripted_person_answers_with_the_code_after_the_delay() {
        let mut cfg = SimConfig::new(Secret::new(KEY.to_vec()));
        cfg.people.insert(
            "u-1".into(),
            Behaviour::Reply {
                after_ms: 3000,
                text: None,
                via: Via::Callback,
            },
        );
        let mut b = AppBackend::new(cfg);
        b.handle_push(
            T0,
            1,
            push_in("u-1", "【红色预警】山洪 回复 1 K7XT 确认", KEY),
        );
        let (id, reply) = b.poll_answer(T0).unwrap();
        assert_eq!((id, reply.status), (1, 200));
        assert_eq!(reply.body, br#"{"id":"n-1"}"#);
        assert_eq!(b.poll_timeout(), Some(T0 + Duration::from_secs(3)));
        b.handle_timeout(T0 + Duration::from_millis(2999));
        assert!(b.poll_callback().is_none());
        let t = T0 + Duration::from_secs(3);
        b.handle_timeout(t);
        let req = b.poll_callback().unwrap();
        assert_eq!(req.url, "http://gw/callback");
        let (ts, sig) = req.signed.clone().unwrap();
        assert_eq!(ts, "1700000003");
        let secret = Secret::new(KEY.to_vec());
        assert!(
            sign::verify(
                &secret,
                1_700_000_003,
                300,
                Some(&ts),
                Some(&sig),
                &req.body
            )
            .is_ok()
        );
        let cb = Callback::parse(&req.body).unwrap();
        assert_eq!(cb.text.as_deref(), Some("1 K7XT"));
        // The gateway was not ready: 503, tried again a second later.
        b.handle_callback_answer(t, req.id, 503);
        b.handle_timeout(t + Duration::from_secs(1));
        let again = b.poll_callback().unwrap();
        b.handle_callback_answer(t, again.id, 200);
        let reports: Vec<Report> = std::iter::from_fn(|| b.poll_report()).collect();
        assert_eq!(
            reports.last(),
            Some(&Report::Answered {
                subscriber: "u-1".into(),
                text: "1 K7XT".into(),
                status: 200,
                forged: false
            })
        );
    }

    #[test]
    fn faults_fail_pushes_delay_them_and_forge_callbacks() {
        let mut cfg = SimConfig::new(Secret::new(KEY.to_vec()));
        cfg.faults = Faults {
            fail_first: 1,
            error_rate: 0.0,
            slow: Some(Duration::from_secs(2)),
            bad_signature_rate: 1.0,
        };
        cfg.default = Behaviour::Reply {
            after_ms: 0,
            text: Some("收到".into()),
            via: Via::Callback,
        };
        let mut b = AppBackend::new(cfg);
        b.handle_push(T0, 1, push_in("u-1", "hi", KEY));
        b.handle_push(T0, 2, push_in("u-1", "hi", KEY));
        b.handle_push(T0, 3, push_in("u-1", "hi", b"a-key-the-gateway-never-had"));
        assert!(b.poll_answer(T0).is_none(), "slow answers");
        let later = T0 + Duration::from_secs(2);
        let answers: Vec<(PushId, u16)> = std::iter::from_fn(|| b.poll_answer(later))
            .map(|(id, r)| (id, r.status))
            .collect();
        assert_eq!(answers, vec![(1, 503), (2, 200), (3, 401)]);
        b.handle_timeout(T0);
        let forged = b.poll_callback().unwrap();
        let (ts, sig) = forged.signed.unwrap();
        let secret = Secret::new(KEY.to_vec());
        assert_eq!(
            sign::verify(
                &secret,
                1_700_000_000,
                300,
                Some(&ts),
                Some(&sig),
                &forged.body
            ),
            Err(sign::SignatureError::Mismatch)
        );
        assert!(
            b.poll_callback().is_none(),
            "only the accepted push is answered"
        );
    }

    #[test]
    fn a_link_is_fetched_then_confirmed() {
        let mut cfg = SimConfig::new(Secret::new(KEY.to_vec()));
        cfg.default = Behaviour::Reply {
            after_ms: 10,
            text: None,
            via: Via::Link,
        };
        let mut b = AppBackend::new(cfg);
        b.handle_push(T0, 1, push_in("u-1", "hi", KEY));
        let t = T0 + Duration::from_millis(10);
        b.handle_timeout(t);
        let get = b.poll_callback().unwrap();
        assert!(get.get && get.signed.is_none());
        assert_eq!(get.url, "http://gw/ack/x");
        b.handle_callback_answer(t, get.id, 200);
        b.handle_timeout(t);
        let post = b.poll_callback().unwrap();
        assert!(!post.get);
        b.handle_callback_answer(t, post.id, 200);
        assert!(
            std::iter::from_fn(|| b.poll_report())
                .any(|r| matches!(r, Report::Answered { text, status: 200, .. } if text == "link"))
        );
    }
}
