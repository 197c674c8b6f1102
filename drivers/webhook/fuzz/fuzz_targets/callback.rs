//! Everything an app backend (or anyone who can reach the callback listener) sends:
//! arbitrary paths, headers and bodies through the driver's callback handling, the body
//! and token parsers and the signature check. Never a panic; every request is answered.
//!
//! Input layout: `path \n timestamp \n signature \n body` (missing parts are absent).
//! `cargo +nightly fuzz run callback seeds/callback`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_core::Timestamp;
use tocsin_webhook::config::WebhookConfig;
use tocsin_webhook::proto::{CallbackRequest, Method, Webhook};
use tocsin_webhook::sign::{self, Secret};
use tocsin_webhook::wire::{Callback, Push, classify};

const KEY: &str = "tocsin-test-secret-0001";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let path = text(parts.next()).unwrap_or_default();
    let timestamp = text(parts.next());
    let signature = text(parts.next());
    let body = parts.next().unwrap_or_default().to_vec();

    let _ = Callback::parse(&body);
    let _ = Push::parse(&body);
    let _ = classify(&String::from_utf8_lossy(&body));
    let secret = Secret::new(KEY.as_bytes().to_vec());
    let _ = sign::open_token(&secret, &path);
    let _ = sign::verify(
        &secret,
        1_700_000_000,
        300,
        timestamp.as_deref(),
        signature.as_deref(),
        &body,
    );

    let now = Timestamp(1_700_000_000_000);
    let cfg = WebhookConfig::new("http://127.0.0.1:9000/push", KEY);
    let mut w = Webhook::new(cfg, secret.clone(), now);
    for (id, method) in [Method::Post, Method::Get].into_iter().enumerate() {
        w.handle_callback(
            now,
            id as u64,
            CallbackRequest {
                method,
                path: path.clone(),
                timestamp: timestamp.clone(),
                signature: signature.clone(),
                body: body.clone(),
                oversized: false,
            },
        );
    }
    // The same body, correctly signed: reaches the JSON and token checks.
    let signed = sign::sign(&secret, 1_700_000_000, &body);
    w.handle_callback(
        now,
        2,
        CallbackRequest {
            method: Method::Post,
            path: "/callback".into(),
            timestamp: Some("1700000000".into()),
            signature: Some(signed),
            body,
            oversized: false,
        },
    );
    w.handle_timeout(now + std::time::Duration::from_secs(60));
    let mut answered = 0;
    while w.poll_reply().is_some() {
        answered += 1;
    }
    assert_eq!(answered, 3, "every request is answered");
    while w.poll_event().is_some() {}
});
