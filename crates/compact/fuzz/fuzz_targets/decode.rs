//! Any bytes: `Frame::decode` never panics, and whatever decodes re-encodes to a frame
//! that decodes to the same value. Run: `cargo +nightly fuzz run decode` in this folder;
//! the corpus is seeded with the documented examples.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_compact::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let bytes = frame.encode().expect("a decoded frame re-encodes");
        assert_eq!(Frame::decode(&bytes).expect("re-encoded frame decodes"), frame);
    }
});
