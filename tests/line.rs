//! `wharf line`: each complete `\n`-terminated line echoed byte-exact,
//! the final unterminated line echoed on half-close, overlong lines answered
//! with an error and the connection closed.

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

fn line_server() -> Server {
    Server::start("line", &["--listen", "127.0.0.1:0"])
}

fn line_server_max_16() -> Server {
    Server::start("line", &["--listen", "127.0.0.1:0", "--max-line", "16"])
}

const ERR_16: &[u8] = b"ERR line too long (max 16 bytes)\n";

#[test]
fn hello_then_half_close_is_echoed_like_nc() {
    // `printf 'hello\n' | nc -q1 127.0.0.1 PORT`
    let server = line_server();
    let got = send_and_half_close(server.addr(), b"hello\n");
    assert_bytes_eq("hello", b"hello\n", &got);
}

#[test]
fn complete_line_is_echoed_while_connection_stays_open() {
    let server = line_server();
    let mut stream = connect(server.addr());
    for round in 0..5 {
        let line = format!("line number {round}\n");
        stream.write_all(line.as_bytes()).expect("write");
        let got = read_exactly(&mut stream, line.len(), IO_TIMEOUT);
        assert_bytes_eq(&format!("round {round}"), line.as_bytes(), &got);
    }
}

#[test]
fn pipelined_lines_in_one_write_are_echoed_in_order() {
    let server = line_server();
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend_from_slice(format!("pipelined line {i}\n").as_bytes());
    }
    let mut stream = connect(server.addr());
    stream.write_all(&input).expect("write all lines at once");
    // The echo of every line arrives before we half-close.
    let got = read_exactly(&mut stream, input.len(), IO_TIMEOUT);
    assert_bytes_eq("pipelined lines", &input, &got);
    stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let rest = read_to_eof(&mut stream, IO_TIMEOUT);
    assert_bytes_eq("nothing after the lines", b"", &rest);
}

#[test]
fn crlf_lines_keep_their_carriage_returns() {
    let server = line_server();
    let input = b"one\r\ntwo\r\n\r\nthree\r\n";
    let got = send_and_half_close(server.addr(), input);
    assert_bytes_eq("CRLF lines", input, &got);
}

#[test]
fn empty_lines_are_echoed() {
    let server = line_server();
    let input = b"\n\n\nx\n\n";
    let got = send_and_half_close(server.addr(), input);
    assert_bytes_eq("empty lines", input, &got);
}

#[test]
fn nul_and_non_utf8_bytes_pass_through_unchanged() {
    let server = line_server();
    let input = b"a\0b\n\xff\xfe\x80\n\0\n\xc3\x28 invalid utf-8\n\x1b[31m\n";
    let got = send_and_half_close(server.addr(), input);
    assert_bytes_eq("binary lines", input, &got);
}

#[test]
fn lines_split_across_tiny_writes_are_reassembled() {
    let server = line_server();
    let mut rng = seeded_rng("lines_split_across_tiny_writes_are_reassembled");
    let mut input = Vec::new();
    for i in 0..200 {
        input.extend_from_slice(format!("tiny write line {i} {}\n", "z".repeat(i % 37)).as_bytes());
    }
    let mut stream = connect(server.addr());
    // 1..=3 bytes per write with TCP_NODELAY, so lines arrive in many pieces
    // and newlines land at every position within a read. The total is small
    // (a few KiB), so not reading while writing cannot deadlock.
    let mut pos = 0;
    while pos < input.len() {
        let n = rng.usize(1..=3).min(input.len() - pos);
        stream.write_all(&input[pos..pos + n]).expect("tiny write");
        pos += n;
    }
    stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let got = read_to_eof(&mut stream, IO_TIMEOUT);
    assert_bytes_eq("lines from tiny writes", &input, &got);
}

#[test]
fn final_unterminated_line_is_echoed_on_half_close() {
    let server = line_server();
    let input = b"first\nlast line without newline";
    let got = send_and_half_close(server.addr(), input);
    assert_bytes_eq("unterminated final line", input, &got);
}

#[test]
fn overlong_line_gets_error_then_close_without_waiting_for_newline() {
    // 17 content bytes > 16, no newline and no half-close: the error must be
    // sent as soon as the 17th byte arrives, then the server closes.
    let server = line_server_max_16();
    let mut stream = connect(server.addr());
    stream
        .write_all(b"ok\nxxxxxxxxxxxxxxxxx")
        .expect("write line + overlong partial line");
    let got = read_to_eof(&mut stream, IO_TIMEOUT);
    let expected = [b"ok\n".as_slice(), ERR_16].concat();
    assert_bytes_eq("overlong unterminated line", &expected, &got);
}

#[test]
fn overlong_complete_line_gets_error_then_close() {
    // The lines after the overlong one in the same write are not echoed: the
    // connection is closed once the error is flushed.
    let server = line_server_max_16();
    let mut stream = connect(server.addr());
    stream
        .write_all(b"ok\nxxxxxxxxxxxxxxxxx\nafter\n")
        .expect("write lines");
    let got = read_to_eof(&mut stream, IO_TIMEOUT);
    let expected = [b"ok\n".as_slice(), ERR_16].concat();
    assert_bytes_eq("overlong complete line", &expected, &got);
}

#[test]
fn error_survives_a_peer_that_keeps_sending_after_an_overlong_line() {
    // The peer sends 4 MiB without a newline, and keeps sending after the server has
    // refused the line. Closing with that input unread would make the kernel reset the
    // connection and could destroy the error line before the peer reads it; the server
    // lingers instead (shuts down writing, discards input until the peer's end of stream).
    let server = line_server_max_16();
    let stream = connect(server.addr());
    let mut reader = stream.try_clone().expect("clone stream");
    let mut writer = stream;
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            if writer.write_all(&chunk).is_err() {
                return false;
            }
        }
        writer.shutdown(std::net::Shutdown::Write).is_ok()
    });
    let got = read_to_eof(&mut reader, IO_TIMEOUT);
    assert_bytes_eq("error after a flood", ERR_16, &got);
    assert!(
        sender.join().expect("sender thread"),
        "the server reset the connection instead of discarding the rest of the input"
    );
}

#[test]
fn line_of_exactly_max_line_bytes_is_echoed() {
    let server = line_server_max_16();
    let mut stream = connect(server.addr());
    let line = b"0123456789abcdef\n"; // 16 content bytes
    stream.write_all(line).expect("write");
    let got = read_exactly(&mut stream, line.len(), IO_TIMEOUT);
    assert_bytes_eq("16-byte line", line, &got);
    // A 16-byte final unterminated line is fine too.
    stream.write_all(b"fedcba9876543210").expect("write");
    stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let got = read_to_eof(&mut stream, IO_TIMEOUT);
    assert_bytes_eq("16-byte unterminated line", b"fedcba9876543210", &got);
}

#[test]
fn default_max_line_is_64_kib() {
    let server = line_server();

    // 65536 content bytes: echoed.
    let mut line = vec![b'a'; 65536];
    line.push(b'\n');
    let mut stream = connect(server.addr());
    stream.write_all(&line).expect("write 64 KiB line");
    let got = read_exactly(&mut stream, line.len(), IO_TIMEOUT);
    assert_bytes_eq("65536-byte line", &line, &got);
    drop(stream);

    // 65537 bytes without a newline: the error, then EOF. (No more bytes than
    // that are sent, so the server has read everything when it closes and
    // the close cannot turn into a reset.)
    let mut stream = connect(server.addr());
    stream
        .write_all(&vec![b'b'; 65537])
        .expect("write 64 KiB + 1");
    let got = read_to_eof(&mut stream, IO_TIMEOUT);
    assert_bytes_eq(
        "65537-byte line",
        b"ERR line too long (max 65536 bytes)\n",
        &got,
    );
}

#[test]
fn error_on_one_connection_does_not_affect_others() {
    let server = line_server_max_16();
    let mut bystander = connect(server.addr());
    bystander.write_all(b"before\n").expect("write");
    assert_bytes_eq(
        "before",
        b"before\n",
        &read_exactly(&mut bystander, 7, IO_TIMEOUT),
    );

    let got = send_and_half_close(server.addr(), b"this line is much too long\n");
    assert_bytes_eq("overlong", ERR_16, &got);

    bystander.write_all(b"after\n").expect("write");
    assert_bytes_eq(
        "after",
        b"after\n",
        &read_exactly(&mut bystander, 6, IO_TIMEOUT),
    );
}

#[test]
fn concurrent_connections_with_random_lines_and_fragments_round_trip() {
    // Random lines (random bytes other than '\n', mostly short, some long
    // but under the default 64 KiB limit), sometimes ending with an
    // unterminated line, written in random fragments over 50 concurrent
    // connections: line echo of such a stream is the identity.
    let server = line_server();
    let mut rng = seeded_rng("concurrent_connections_with_random_lines_and_fragments_round_trip");
    let payloads: Vec<Vec<u8>> = (0..50)
        .map(|_| {
            let target = rng.usize(0..=128 * 1024);
            let mut stream = Vec::with_capacity(target + 70_000);
            while stream.len() < target {
                let len = if rng.u8(..) < 8 {
                    rng.usize(1000..=65536)
                } else {
                    rng.usize(0..=200)
                };
                stream.extend((0..len).map(|_| loop {
                    let b = rng.u8(..);
                    if b != b'\n' {
                        break b;
                    }
                }));
                stream.push(b'\n');
            }
            if rng.bool() && stream.last() == Some(&b'\n') {
                stream.pop(); // final line left unterminated
            }
            stream
        })
        .collect();
    assert_round_trips(
        server.addr(),
        payloads,
        2048,
        &mut rng,
        Duration::from_secs(60),
    );
}
