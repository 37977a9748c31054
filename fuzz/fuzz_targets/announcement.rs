//! The gossip announcement decoder: arbitrary bytes give an announcement or an error, never a
//! panic; a decoded announcement re-encodes to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lloom_core::{AnnouncementLimits, SignedAnnouncement};

fuzz_target!(|data: &[u8]| {
    let limits = AnnouncementLimits::default();
    if let Ok(ann) = SignedAnnouncement::decode(data, &limits) {
        let again = SignedAnnouncement::decode(&ann.encode(), &limits).expect("re-encoded decodes");
        assert_eq!(again, ann);
    }
});
