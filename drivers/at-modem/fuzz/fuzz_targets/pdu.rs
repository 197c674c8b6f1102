//! PDU decoding on arbitrary bytes, as a modem or a hostile SMSC could hand them over:
//! never a panic, whether read with an SMSC part, without one, or as an `AT+CMGS` body.
//!
//! `cargo +nightly fuzz run pdu seeds/pdu` (seeded with the protocol brief's SUBMIT,
//! DELIVER and STATUS-REPORT vectors, as raw octets).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_at_modem::pdu::{hex_decode, parse_cmgs_pdu, parse_pdu, parse_tpdu};

fuzz_target!(|data: &[u8]| {
    let _ = parse_pdu(data, true);
    let _ = parse_pdu(data, false);
    let _ = parse_tpdu(data);
    let at_length = usize::from(data.first().copied().unwrap_or(0));
    let _ = parse_cmgs_pdu(data, at_length);
    // The modem hands PDUs over as hex text: the same bytes read as hex must not panic either.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bytes) = hex_decode(text)
    {
        let _ = parse_pdu(&bytes, true);
    }
});
