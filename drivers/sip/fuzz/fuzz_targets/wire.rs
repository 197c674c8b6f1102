//! SIP message parsing on arbitrary datagrams from the trunk: never a panic, a message
//! never claims more bytes than it was given, and the accessors the user agent calls on a
//! parsed message do not panic either.
//!
//! `cargo +nightly fuzz run wire seeds/wire` (seeded with the protocol brief's INVITE and
//! the parser tests' malformed messages).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_sip::wire::{parse, uri_host_port, uri_of};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((m, n))) = parse(data) {
        assert!(n <= data.len());
        let _ = (m.status(), m.method(), m.call_id(), m.cseq());
        let _ = (m.via_branch(), m.to_tag(), m.from_tag());
        for name in ["Contact", "To", "From", "Via"] {
            if let Some(v) = m.header(name) {
                let _ = uri_host_port(uri_of(v));
            }
        }
        let _ = m.to_bytes();
    }
});
