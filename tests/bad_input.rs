//! Bad input, in both modes: binary garbage, NUL bytes and invalid UTF-8 are echoed
//! byte-exact; 10 MB without a newline in line mode gets one error line and a close. The
//! server keeps serving everyone else throughout, and never panics.

mod common;

use common::*;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const MODES: [&str; 2] = ["echo", "line"];
const LINE_TOO_LONG: &[u8] = b"ERR line too long (max 65536 bytes)\n";
const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a server in `mode` with a bystander connection that has been served once.
fn server_with_bystander(mode: &str) -> (Server, TcpStream) {
    let server = Server::start(mode, &["--listen", "127.0.0.1:0"]);
    let mut bystander = connect(server.addr());
    assert_eq!(round_trip(&mut bystander, b"bystander\n"), b"bystander\n");
    (server, bystander)
}

/// The bystander is still served, and the server never panicked.
fn assert_still_serving(server: &Server, bystander: &mut TcpStream, mode: &str) {
    assert_bytes_eq(
        &format!("{mode}: bystander afterwards"),
        b"still here\n",
        &round_trip(bystander, b"still here\n"),
    );
    assert_no_panic(&server.stderr_text());
}

/// Every byte value in order, a shuffled copy, then random bytes: in line mode a newline
/// comes about every 256 bytes, so no line is anywhere near the 64 KiB limit.
fn garbage(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut all: Vec<u8> = (0..=255).collect();
    let mut data = all.clone();
    rng.shuffle(&mut all);
    data.extend(&all);
    data.extend(random_bytes(rng, len));
    data
}

#[test]
fn binary_garbage_is_echoed_byte_exact() {
    let mut rng = seeded_rng("binary_garbage_is_echoed_byte_exact");
    for mode in MODES {
        let (server, mut bystander) = server_with_bystander(mode);
        // Several connections at once, each a different stream of garbage in random
        // fragments; in line mode, what follows the last newline is echoed on half-close.
        let payloads: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let len = rng.usize(1..=256 * 1024);
                garbage(&mut rng, len)
            })
            .collect();
        assert_round_trips(server.addr(), payloads, 4096, &mut rng, DRIVER_TIMEOUT);
        assert_still_serving(&server, &mut bystander, mode);
    }
}

#[test]
fn nul_bytes_are_echoed_byte_exact() {
    let mut rng = seeded_rng("nul_bytes_are_echoed_byte_exact");
    for mode in MODES {
        let (server, mut bystander) = server_with_bystander(mode);
        let mut payload = Vec::new();
        payload.extend_from_slice(b"\0\n\0\0\0\n\n\0a\0b\0\n");
        payload.extend_from_slice(&[0u8; 60_000]); // one long line of NULs, under the limit
        payload.push(b'\n');
        payload.extend_from_slice(b"\0\0\0"); // a final unterminated line of NULs
        let got = send_and_half_close(server.addr(), &payload);
        assert_bytes_eq(&format!("{mode}: NUL bytes"), &payload, &got);
        // And in small writes, so NULs and newlines land at every position of a read.
        assert_round_trips(
            server.addr(),
            vec![payload.clone()],
            7,
            &mut rng,
            DRIVER_TIMEOUT,
        );
        assert_still_serving(&server, &mut bystander, mode);
    }
}

#[test]
fn invalid_utf8_is_echoed_byte_exact() {
    let mut rng = seeded_rng("invalid_utf8_is_echoed_byte_exact");
    let samples: &[&[u8]] = &[
        b"\xff\xfe\xfd\xfc",               // bytes that never occur in UTF-8
        b"\x80\x81\xbf",                   // lone continuation bytes
        b"\xc0\xaf \xe0\x80\xaf",          // overlong encodings of '/'
        b"\xed\xa0\x80\xed\xbf\xbf",       // UTF-16 surrogates
        b"\xf4\x90\x80\x80",               // beyond U+10FFFF
        b"\xc3\x28 \xe2\x28\xa1",          // invalid continuation
        b"caf\xc3",                        // truncated at the end of a line
        b"\xef\xbb\xbfBOM then \xe9t\xe9", // a BOM, then Latin-1
        b"\x1b[31mred\x1b[0m\r",           // escapes and a carriage return
    ];
    for mode in MODES {
        let (server, mut bystander) = server_with_bystander(mode);
        let mut payload = Vec::new();
        for sample in samples {
            payload.extend_from_slice(sample);
            payload.push(b'\n');
        }
        payload.extend_from_slice(b"\xe2\x82"); // a final line cut inside a character
        let got = send_and_half_close(server.addr(), &payload);
        assert_bytes_eq(&format!("{mode}: invalid UTF-8"), &payload, &got);
        // Split between the bytes of each sequence.
        assert_round_trips(
            server.addr(),
            vec![payload.clone(); 4],
            3,
            &mut rng,
            DRIVER_TIMEOUT,
        );
        assert_still_serving(&server, &mut bystander, mode);
    }
}

#[test]
fn ten_megabytes_without_a_newline_get_the_line_too_long_error_then_eof() {
    let (server, mut bystander) = server_with_bystander("line");
    let stream = connect(server.addr());
    let mut reader = stream.try_clone().expect("clone the client socket");
    let mut writer = stream;

    // 10 MB of random bytes without a newline, from a thread: the server answers and closes
    // long before the client is done, and the rest of the writes may then fail. (The server
    // lingers, discarding input up to a limit, so usually they do not.)
    let mut rng = seeded_rng("ten_megabytes_without_a_newline");
    let mut chunk = random_bytes(&mut rng, 64 * 1024);
    for b in &mut chunk {
        if *b == b'\n' {
            *b = b'.';
        }
    }
    let error_seen = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&error_seen);
    let sender = thread::spawn(move || {
        let mut sent = 0;
        while sent < 10_000_000 {
            let n = chunk.len().min(10_000_000 - sent);
            if let Err(e) = writer.write_all(&chunk[..n]) {
                assert!(
                    seen.load(Ordering::SeqCst),
                    "a write failed ({e}) after {sent} bytes, before the error line arrived"
                );
                return;
            }
            sent += n;
        }
        let _ = writer.shutdown(Shutdown::Write);
    });

    // Meanwhile the bystander is served.
    assert_eq!(round_trip(&mut bystander, b"during\n"), b"during\n");

    let error = read_exactly(&mut reader, LINE_TOO_LONG.len(), IO_TIMEOUT);
    error_seen.store(true, Ordering::SeqCst);
    assert_bytes_eq(
        "the reply to 10 MB without a newline",
        LINE_TOO_LONG,
        &error,
    );
    // Then EOF (the server shut down its side), or a reset if it gave up lingering: either
    // way nothing more.
    let mut rest = Vec::new();
    reader
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    match std::io::Read::read_to_end(&mut reader, &mut rest) {
        Ok(_) => assert_bytes_eq("after the error line", b"", &rest),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            assert_bytes_eq("after the error line, before the reset", b"", &rest)
        }
        Err(e) => panic!("reading after the error line: {e}"),
    }
    sender.join().expect("the sender thread");
    // The operator hears about it, once.
    server.wait_for_log("closing: line longer than 65536 bytes", IO_TIMEOUT);

    assert_still_serving(&server, &mut bystander, "line");
}
