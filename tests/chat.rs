//! `wharf chat`: a line-based room over real loopback sockets.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A chat client reading whole lines, each with a bounded wait.
struct Member {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Member {
    fn join(server: &Server) -> Member {
        let stream = connect(server.addr());
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        Member {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    fn say(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).expect("write");
        self.writer.write_all(b"\n").expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a line");
        assert!(n > 0, "end of stream while waiting for a line");
        line
    }

    /// Reads lines until one starts with `prefix`, and returns it.
    fn line_starting(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

fn chat_server(extra: &[&str]) -> Server {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start("chat", &args)
}

#[test]
fn chat_announces_joins_relays_lines_to_others_and_announces_leaves() {
    let server = chat_server(&[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    assert_eq!(alice.line(), "* user2 joined\n");
    alice.say("hello bob");
    assert_eq!(bob.line(), "<user1> hello bob\n");
    bob.say("hi\r"); // a CRLF client
    assert_eq!(alice.line(), "<user2> hi\n");
    drop(bob);
    assert_eq!(alice.line(), "* user2 left\n");
    // Nothing of alice's own came back to her: the next line is the reply to /who.
    alice.say("/who");
    assert_eq!(alice.line(), "* online: user1\n");
}

#[test]
fn nick_renames_refuses_bad_or_taken_names_and_who_lists_everyone() {
    let server = chat_server(&[]);
    let mut alice = Member::join(&server);
    let mut bob = Member::join(&server);
    alice.line_starting("* user2 joined");
    alice.say("/nick alice");
    assert_eq!(alice.line(), "* user1 is now alice\n");
    assert_eq!(bob.line(), "* user1 is now alice\n");
    bob.say("/nick alice");
    assert_eq!(bob.line(), "ERR name alice is taken\n");
    bob.say("/nick no spaces");
    assert!(bob.line().starts_with("ERR invalid name"));
    bob.say(&format!("/nick {}", "b".repeat(33)));
    assert!(bob.line().starts_with("ERR invalid name"));
    bob.say("/who");
    assert_eq!(bob.line(), "* online: alice user2\n");
    bob.say("after");
    assert_eq!(alice.line(), "<user2> after\n", "errors went to bob only");
}

#[test]
fn every_line_reaches_every_other_client_exactly_once_in_order() {
    const CLIENTS: usize = 100;
    const LINES: usize = 5;
    let server = chat_server(&[]);
    let mut members: Vec<Member> = (0..CLIENTS).map(|_| Member::join(&server)).collect();
    // Everyone is in the room once the first member has seen the last one join.
    members[0].line_starting(&format!("* user{CLIENTS} joined"));
    for (i, member) in members.iter_mut().enumerate() {
        for seq in 0..LINES {
            member.say(&format!("from {i} seq {seq}"));
        }
    }
    for (i, member) in members.iter_mut().enumerate() {
        let mut next_seq: HashMap<usize, usize> = HashMap::new();
        let mut received = 0;
        while received < (CLIENTS - 1) * LINES {
            let line = member.line();
            if line.starts_with('*') {
                continue; // joins
            }
            let text = line.split_once("> ").expect("a <NAME> message").1;
            let mut words = text.split_whitespace();
            let (sender, seq): (usize, usize) =
                match (words.next(), words.next(), words.next(), words.next()) {
                    (Some("from"), Some(s), Some("seq"), Some(q)) => {
                        (s.parse().unwrap(), q.parse().unwrap())
                    }
                    _ => panic!("client {i}: unexpected line {line:?}"),
                };
            assert_ne!(sender, i, "client {i} got its own line back");
            let expected = next_seq.entry(sender).or_insert(0);
            assert_eq!(seq, *expected, "client {i}: lines of {sender} out of order");
            *expected += 1;
            received += 1;
        }
        assert!(next_seq.values().all(|n| *n == LINES));
    }
}

#[test]
fn a_reader_that_stops_reading_is_dropped_while_the_room_keeps_flowing() {
    let server = chat_server(&["--max-outbuf", "65536"]);
    let mut observer = Member::join(&server);
    // A small receive buffer fills the kernel's side quickly; this client never reads.
    let slow =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    slow.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    slow.connect(&server.addr().into()).expect("connect");
    observer.line_starting("* user2 joined");
    let mut sender = Member::join(&server);
    observer.line_starting("* user3 joined");

    // 4 MiB of chat, read by the observer on a thread while the sender sends.
    const LINES: usize = 4096;
    let payload = "x".repeat(1000);
    let reading = std::thread::spawn(move || {
        let (mut count, mut slow_left) = (0, false);
        while count < LINES || !slow_left {
            let line = observer.line();
            if line == "* user2 left\n" {
                slow_left = true;
            } else if line.starts_with("<user3> ") {
                assert_eq!(line.len(), "<user3> ".len() + 1000 + 1);
                count += 1;
            }
        }
        count
    });
    for _ in 0..LINES {
        sender.say(&payload);
    }
    assert_eq!(reading.join().expect("observer thread"), LINES);
    server.wait_for_log("dropped: a slow reader", Duration::from_secs(20));
    drop(slow);
}
