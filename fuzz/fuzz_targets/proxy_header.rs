//! Fuzzes the PROXY protocol header reader (`src/proxy.rs`) the way the reactor drives it:
//! every prefix of what a connection sends, as it arrives.
//!
//! Oracle: no panic; a header is never longer than what arrived nor than the cap; "more"
//! only under the cap; and once a prefix reads as a header (or as invalid), every longer
//! input reads the same: what arrives after a header can never change it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::proxy::{examine, Header, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    let mut settled: Option<Header> = None;
    for end in 0..=data.len().min(MAX_HEADER + 16) {
        let answer = examine(&data[..end]);
        match &answer {
            Header::Read { len, .. } => assert!(*len <= end && *len <= MAX_HEADER),
            Header::More => assert!(end < MAX_HEADER, "more past the cap"),
            Header::Invalid(_) => {}
        }
        match (&settled, &answer) {
            (Some(Header::Read { .. }), _) => assert_eq!(settled.as_ref(), Some(&answer)),
            (Some(Header::Invalid(_)), Header::Read { .. }) => {
                panic!("a prefix was invalid, a longer input is a header")
            }
            _ => {}
        }
        if settled.is_none() && answer != Header::More {
            settled = Some(answer);
        }
    }
});
