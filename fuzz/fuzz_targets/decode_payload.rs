//! The payload decoder (version byte + postcard body), as used on delimited substreams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lloom_core::WireLimits;
use lloom_core::wire::decode_payload;

fuzz_target!(|data: &[u8]| {
    let _ = decode_payload(data, &WireLimits::default());
});
