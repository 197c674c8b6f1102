//! RTCP from speakers: the compound parser, and the driver fed the same bytes as a
//! receiver report, must never panic. Run: `cargo +nightly fuzz run rtcp seeds/rtcp`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_core::Timestamp;
use tocsin_speaker::config::SpeakerConfig;
use tocsin_speaker::proto::Speakers;
use tocsin_speaker::wire::{RtcpPacket, parse_compound};

fuzz_target!(|data: &[u8]| {
    let (packets, _) = parse_compound(data);
    // What parses re-emits to bytes that parse to the same packets.
    let mut out = Vec::new();
    for p in &packets {
        p.emit(&mut out);
    }
    let (again, err) = parse_compound(&out);
    assert!(err.is_none());
    assert_eq!(again.len(), packets.len());
    let _ = RtcpPacket::parse(data);
    if let Ok(addr) = "127.0.0.1:5004".parse() {
        let mut s = Speakers::new(SpeakerConfig::new(addr), "fuzz", 1, Timestamp::ZERO);
        s.handle_rtcp(Timestamp::ZERO, addr, data);
        while s.poll_event().is_some() {}
    }
});
