//! RTP into the simulated speaker and the RTP parser: never a panic.
//! Run: `cargo +nightly fuzz run rtp seeds/rtp`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_core::Timestamp;
use tocsin_speaker::sim::{SimConfig, SimSpeaker};
use tocsin_speaker::wire::RtpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(data) {
        let mut out = Vec::new();
        p.emit(&mut out);
        assert!(RtpPacket::parse(&out).is_ok());
    }
    if let Ok(from) = "127.0.0.1:40000".parse() {
        let mut sp = SimSpeaker::new(SimConfig::default(), 1, Timestamp::ZERO);
        // The same datagram twice, as a duplicate would arrive.
        sp.handle_rtp(Timestamp::ZERO, from, data);
        sp.handle_rtp(Timestamp(20), from, data);
        sp.handle_rtcp(Timestamp(40), from, data);
    }
});
