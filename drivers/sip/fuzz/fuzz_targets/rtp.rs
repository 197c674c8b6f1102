//! RTP datagrams from the far end on arbitrary bytes: never a panic, a parsed packet
//! re-emits to bytes that parse back to it, and DTMF events read without panicking.
//!
//! `cargo +nightly fuzz run rtp seeds/rtp` (seeded with the protocol brief's RFC 4733
//! key-press packets).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_sip::rtp::{DigitDetector, RtpPacket, TelephoneEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(data) {
        assert_eq!(RtpPacket::parse(&p.to_bytes()).as_ref(), Ok(&p));
        if let Some(ev) = TelephoneEvent::parse(&p.payload) {
            let _ = ev.key();
            assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Some(ev));
        }
        let mut d = DigitDetector::default();
        let _ = d.feed(&p);
    }
});
