//! Modem output framing on arbitrary bytes: never a panic, a frame never claims more bytes
//! than it was given, and the decoder yields the same frames whole and split in two.
//!
//! `cargo +nightly fuzz run wire seeds/wire` (seeded with the protocol brief's sessions).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_at_modem::wire::{Decoder, parse, parse_dte};

fn frames(chunks: &[&[u8]]) -> Vec<String> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(f) = d.next_frame() {
            out.push(format!("{f:?}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Some((_, n))) => assert!(n > 0 && n <= data.len()),
        Err(m) => assert!(m.len > 0 && m.len <= data.len()),
        Ok(None) => {}
    }
    match parse_dte(data) {
        Ok(Some((_, n))) => assert!(n > 0 && n <= data.len()),
        Err(m) => assert!(m.len > 0 && m.len <= data.len()),
        Ok(None) => {}
    }
    let cut = data.first().map(|b| usize::from(*b)).unwrap_or(0) % (data.len() + 1);
    let (a, b) = data.split_at(cut);
    assert_eq!(frames(&[data]), frames(&[a, b]));
});
