//! The far end's SDP on arbitrary bytes: never a panic, and a negotiated codec is one we
//! offered.
//!
//! `cargo +nightly fuzz run sdp seeds/sdp` (seeded with the protocol brief's offer).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_sip::g711::Codec;
use tocsin_sip::sdp::negotiate;

fuzz_target!(|data: &[u8]| {
    for acceptable in [&[Codec::Pcma, Codec::Pcmu][..], &[Codec::Pcmu][..], &[][..]] {
        if let Ok(n) = negotiate(data, acceptable) {
            assert!(acceptable.contains(&n.codec));
        }
    }
});
