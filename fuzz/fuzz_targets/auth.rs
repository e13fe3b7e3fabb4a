//! Fuzzes what an unauthenticated client and a token file can feed the server: the AUTH
//! line parser and the token file parser must never panic, and what they return must hold
//! together.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::auth::line::{first_line, AuthStep, MAX_AUTH_LINE};
use wharf::{Authenticator, Tokens};

fuzz_target!(|data: &[u8]| {
    match first_line(data) {
        AuthStep::Incomplete => assert!(data.len() <= MAX_AUTH_LINE && !data.contains(&b'\n')),
        AuthStep::TooLong => assert!(!data[..=MAX_AUTH_LINE].contains(&b'\n')),
        AuthStep::NotAuth { consumed } | AuthStep::Token { consumed, .. } => {
            assert!(consumed <= MAX_AUTH_LINE + 1 && data[consumed - 1] == b'\n');
            assert!(!data[..consumed - 1].contains(&b'\n'));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mut tokens) = Tokens::parse(text) {
            // Every token the file defines lets its owner in.
            for line in text.lines() {
                let line = line.trim_end_matches('\r');
                if let Some((name, token)) = line.split_once(':') {
                    if !line.starts_with('#') && !line.trim().is_empty() {
                        let peer = "127.0.0.1:1".parse().unwrap();
                        let got = tokens.authenticate(peer, token.as_bytes());
                        assert_eq!(got.as_deref(), Some(name));
                    }
                }
            }
        }
    }
});
