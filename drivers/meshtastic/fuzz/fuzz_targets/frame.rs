//! The stream decoder and the FromRadio/ToRadio decoders on arbitrary bytes: never a panic,
//! and the same frames whether the input comes whole or split at the first byte's value.
//! Run: `cargo +nightly fuzz run frame fuzz/seeds/frame` from drivers/meshtastic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tocsin_meshtastic::mesh::{FromRadio, ToRadio};
use tocsin_meshtastic::wire::{Decoder, Frame};

fn frames(chunks: &[&[u8]]) -> Vec<String> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(f) = d.next_frame() {
            if let Ok(Frame::Packet(body)) = &f {
                let _ = FromRadio::decode(body.as_slice());
                let _ = ToRadio::decode(body.as_slice());
            }
            out.push(format!("{f:?}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    assert_eq!(frames(&[data]), frames(&[&data[..cut], &data[cut..]]));
});
