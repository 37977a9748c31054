//! The async stream reader over arbitrary bytes: every frame read or a clean error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lloom_core::WireLimits;
use lloom_core::wire::read_frame;

fuzz_target!(|data: &[u8]| {
    let limits = WireLimits { max_frame_bytes: 64 * 1024, ..WireLimits::default() };
    let mut reader = futures::io::Cursor::new(data.to_vec());
    futures::executor::block_on(async {
        // A stream may carry several frames; bounded by the input length.
        for _ in 0..data.len() + 1 {
            match read_frame(&mut reader, &limits).await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    });
});
