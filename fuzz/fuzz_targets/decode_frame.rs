//! Any bytes given to the frame decoder yield a message or an error, never a panic; a decoded
//! message re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lloom_core::WireLimits;
use lloom_core::wire::{decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let limits = WireLimits::default();
    if let Ok((msg, _)) = decode_frame(data, &limits) {
        let frame = encode_frame(&msg, &limits).expect("a decoded message re-encodes");
        let (again, _) = decode_frame(&frame, &limits).expect("a re-encoded message decodes");
        assert_eq!(again, msg);
    }
});
