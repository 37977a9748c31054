//! Signature parsing and recovery over arbitrary 65-byte inputs and digests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lloom_core::{B256, Signature};

fuzz_target!(|data: &[u8]| {
    if data.len() < 97 {
        let _ = Signature::from_bytes(data);
        return;
    }
    let (sig, digest) = data.split_at(65);
    if let Ok(sig) = Signature::from_bytes(sig) {
        let digest = B256::from_slice(&digest[..32]);
        let _ = sig.recover(&digest);
        assert!(sig.as_bytes()[64] == 27 || sig.as_bytes()[64] == 28);
    }
});
