//! Feeds arbitrary bytes to the SLA parser and validator (oakestra-core), as the root reads
//! every deployment descriptor a user posts.
//!
//! Properties: nothing panics; a rejected descriptor has at least one violation with a JSON
//! pointer path; an accepted descriptor serialises to text that is accepted again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oakestra_core::sla;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match sla::parse_and_validate(text) {
        Ok(parsed) => {
            let again = serde_json::to_string(&parsed).expect("serialise");
            let reparsed = sla::parse_and_validate(&again).expect("a valid SLA stays valid");
            assert_eq!(reparsed.applications.len(), parsed.applications.len());
        }
        Err(errors) => {
            assert!(!errors.violations().is_empty());
            for v in errors.violations() {
                assert!(v.path.is_empty() || v.path.starts_with('/'));
            }
        }
    }
    let _ = sla::parse_microservices(text);
});
