//! Sentence framing and typing on arbitrary bytes: never a panic, the same sentences
//! whole and split, and every typed sentence re-emits to bytes that parse back to it.
//!
//! `cargo +nightly fuzz run sentence seeds/sentence` (seeded with the protocol brief's
//! vectors).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_beidou::wire::{Decoder, Message, parse};

fn sentences(chunks: &[&[u8]]) -> Vec<String> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(s) = d.next_sentence() {
            out.push(format!("{s:?}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map(|b| usize::from(*b)).unwrap_or(0) % (data.len() + 1);
    let (a, b) = data.split_at(cut);
    assert_eq!(sentences(&[data]), sentences(&[a, b]));
    let mut d = Decoder::new();
    d.push(data);
    while let Some(s) = d.next_sentence() {
        let Ok(s) = s else { continue };
        if let Ok(m) = Message::parse(&s) {
            let bytes = m.to_bytes();
            let (back, _) = parse(&bytes)
                .ok()
                .flatten()
                .expect("emitted sentence parses");
            assert_eq!(Message::parse(&back).ok(), Some(m));
        }
    }
});
