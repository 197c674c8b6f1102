//! Any bytes from a modem, in either mode: the framing never panics and gives the same
//! frames whole or split in two. Run: `cargo +nightly fuzz run wire` in this folder; the
//! corpus is seeded with the protocol brief's vectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_iridium_sbd::wire::{Decoder, Mode};

fn frames(chunks: &[&[u8]], mode: Mode) -> Vec<String> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(f) = d.next_frame(mode) {
            out.push(format!("{f:?}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mode = if first & 1 == 0 { Mode::Lines } else { Mode::Block };
    let cut = usize::from(first >> 1).min(rest.len());
    assert_eq!(frames(&[rest], mode), frames(&[&rest[..cut], &rest[cut..]], mode));
    let mut d = Decoder::new();
    d.push(rest);
    while d.next_dte_frame(Some(usize::from(first))).is_some() {}
});
