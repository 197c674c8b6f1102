//! The driver's state machine fed arbitrary terminal output after a send: never a panic,
//! and an attempt is never reported Sent twice.
//!
//! `cargo +nightly fuzz run terminal seeds/sentence`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_beidou::config::BeidouConfig;
use tocsin_beidou::proto::Terminal;
use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, Timestamp};

fuzz_target!(|data: &[u8]| {
    let now = Timestamp(1_750_000_000_000);
    let mut t = Terminal::new(BeidouConfig::new("fuzz"), now);
    t.handle_port_opened(now);
    t.handle_rx(now, b"$BDICI,0242286,00242286,0000011,6,60,3,N,0*38\r\n");
    t.submit(
        now,
        DriverCommand::Send(Outbound {
            attempt: AttemptId(1),
            to: Address::BeidouCard("0242286".into()),
            text: "收到1".into(),
            want_report: true,
        }),
    );
    for chunk in data.chunks(17) {
        t.handle_rx(now, chunk);
    }
    let sent = std::iter::from_fn(|| t.poll_event())
        .filter(|e| matches!(e, DriverEvent::Sent { .. }))
        .count();
    assert!(sent <= 1);
});
