//! A line-based chat room, in the spirit of `ncat --chat`, as a sans-IO state machine.
//!
//! The room knows its members and their names, and turns what they do (join, send a line,
//! leave) into [`Delivery`]s: a message and who gets it. It never sees a socket. A message
//! for many recipients is built once, as one shared `Arc<[u8]>`: a broadcast to a thousand
//! members costs one allocation, not a thousand copies.
//!
//! The protocol, line by line (lines end with `\n`; a `\r` before it is dropped):
//! - on joining, a member is named `userN`, or by the name it authenticated as
//!   ([`Room::join_as`]), and the others get `* NAME joined`;
//! - a line is delivered to every *other* member as `<NAME> line`, never echoed to its sender;
//! - `/nick NAME` renames (1–32 of `A-Z a-z 0-9 _ -`, not taken); everyone, the sender
//!   included, gets `* OLD is now NEW`; a bad or taken name gets an `ERR` line, to the
//!   sender only; a member named by authentication keeps its name (`ERR` to `/nick`);
//! - `/who` answers the sender with `* online: NAME NAME ...`;
//! - another line starting with `/` gets `ERR unknown command`;
//! - on leaving, the others get `* NAME left`.
//!
//! Line framing and the line-length limit are the line protocol's ([`super::line`]).

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

/// A member of the room, as the room numbers them (reused after a member leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId(usize);

impl MemberId {
    /// A small number, unique among the members present, for indexing a table of them.
    pub fn index(self) -> usize {
        self.0
    }
}

/// Who gets a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipients {
    /// One member.
    Only(MemberId),
    /// Every member but this one.
    AllExcept(MemberId),
    /// Every member.
    All,
}

/// One message for some members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who gets it.
    pub to: Recipients,
    /// The bytes, a whole line with its `\n`, shared by every recipient.
    pub message: Arc<[u8]>,
}

/// Longest name a member may take.
pub const MAX_NAME: usize = 32;

/// The chat room: its members and their names.
///
/// ```
/// use wharf::proto::chat::{Recipients, Room};
///
/// let mut room = Room::default();
/// let mut out = Vec::new();
/// let alice = room.join(&mut out);
/// let bob = room.join(&mut out);
/// out.clear();
/// room.line(alice, b"hello", &mut out);
/// assert_eq!(out[0].to, Recipients::AllExcept(alice));
/// assert_eq!(&*out[0].message, b"<user1> hello\n");
/// # let _ = bob;
/// ```
#[derive(Debug, Default)]
pub struct Room {
    members: Slab<Member>,
    /// How many members have each name: one, except for authenticated names, which one
    /// user may hold in several connections at once.
    by_name: HashMap<String, u32>,
    /// Number of the next default name (`userN`), counting from 1, never reused.
    next_user: u64,
}

impl Room {
    /// Members now in the room.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The name of a member.
    pub fn name(&self, member: MemberId) -> Option<&str> {
        self.members.get(member.0).map(|m| m.name.as_str())
    }

    /// A new member joins: it gets a free `userN` name, and the others are told.
    pub fn join(&mut self, out: &mut Vec<Delivery>) -> MemberId {
        let name = loop {
            self.next_user += 1;
            let name = format!("user{}", self.next_user);
            // `userN` may have been taken with /nick: skip to the next number.
            if !self.by_name.contains_key(&name) {
                break name;
            }
        };
        self.admit(name, false, out)
    }

    /// A member that authenticated as `name` joins under that name, for good: `/nick` is
    /// refused. Several connections of one user may share it.
    /// A name that is not a valid chat name (a certificate's subject may hold anything, a
    /// newline included) is not used: the member gets a `userN` name instead.
    pub fn join_as(&mut self, name: &str, out: &mut Vec<Delivery>) -> MemberId {
        match valid_name(name.as_bytes()) {
            Some(name) => self.admit(name.to_string(), true, out),
            None => self.join(out),
        }
    }

    fn admit(&mut self, name: String, fixed: bool, out: &mut Vec<Delivery>) -> MemberId {
        let member = MemberId(self.members.insert(Member {
            name: name.clone(),
            fixed,
        }));
        out.push(deliver(
            Recipients::AllExcept(member),
            format!("* {name} joined\n"),
        ));
        *self.by_name.entry(name).or_insert(0) += 1;
        member
    }

    fn release_name(&mut self, name: &str) {
        if let Some(count) = self.by_name.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                self.by_name.remove(name);
            }
        }
    }

    /// A member leaves (or is dropped): the others are told.
    pub fn leave(&mut self, member: MemberId, out: &mut Vec<Delivery>) {
        let Some(Member { name, .. }) = self.members.try_remove(member.0) else {
            return;
        };
        self.release_name(&name);
        out.push(deliver(Recipients::All, format!("* {name} left\n")));
    }

    /// A member sent one line: `line` is its content, without the `\n`.
    pub fn line(&mut self, member: MemberId, line: &[u8], out: &mut Vec<Delivery>) {
        let Some(Member { name, .. }) = self.members.get(member.0) else {
            return;
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"/nick") {
            if rest.is_empty() || rest.starts_with(b" ") {
                return self.nick(member, trim(rest), out);
            }
        }
        if line == b"/who" {
            let mut names: Vec<&str> = self.members.iter().map(|(_, m)| m.name.as_str()).collect();
            names.sort_unstable();
            let reply = format!("* online: {}\n", names.join(" "));
            return out.push(deliver(Recipients::Only(member), reply));
        }
        if line.starts_with(b"/") {
            let reply = "ERR unknown command (try /nick NAME or /who)\n";
            return out.push(deliver(Recipients::Only(member), reply.to_string()));
        }
        let mut message = Vec::with_capacity(name.len() + line.len() + 4);
        message.push(b'<');
        message.extend_from_slice(name.as_bytes());
        message.extend_from_slice(b"> ");
        message.extend_from_slice(line);
        message.push(b'\n');
        out.push(Delivery {
            to: Recipients::AllExcept(member),
            message: message.into(),
        });
    }

    fn nick(&mut self, member: MemberId, wanted: &[u8], out: &mut Vec<Delivery>) {
        let error = |text: String| deliver(Recipients::Only(member), text);
        let Some(wanted) = valid_name(wanted) else {
            return out.push(error(format!(
                "ERR invalid name: use 1 to {MAX_NAME} of A-Z a-z 0-9 _ -\n"
            )));
        };
        let current = &self.members[member.0];
        if current.fixed {
            let text = format!("ERR your name is {}, set by authentication\n", current.name);
            return out.push(error(text));
        }
        if current.name == wanted {
            return; // already called that
        }
        if self.by_name.contains_key(wanted) {
            return out.push(error(format!("ERR name {wanted} is taken\n")));
        }
        let old = std::mem::replace(&mut self.members[member.0].name, wanted.to_string());
        self.release_name(&old);
        self.by_name.insert(wanted.to_string(), 1);
        out.push(deliver(
            Recipients::All,
            format!("* {old} is now {wanted}\n"),
        ));
    }
}

/// A member: its name, and whether authentication set it.
#[derive(Debug)]
struct Member {
    name: String,
    fixed: bool,
}

fn deliver(to: Recipients, text: String) -> Delivery {
    Delivery {
        to,
        message: text.into_bytes().into(),
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// The name as text if it is 1 to MAX_NAME of `A-Z a-z 0-9 _ -`.
pub(crate) fn valid_name(bytes: &[u8]) -> Option<&str> {
    let ok = (1..=MAX_NAME).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
    // Only ASCII passed the check, so this cannot fail.
    ok.then(|| std::str::from_utf8(bytes).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deliveries as (recipients, text) pairs, for readable assertions.
    fn texts(out: &[Delivery]) -> Vec<(Recipients, String)> {
        out.iter()
            .map(|d| (d.to, String::from_utf8_lossy(&d.message).into_owned()))
            .collect()
    }

    fn room_of_two() -> (Room, MemberId, MemberId) {
        let mut room = Room::default();
        let mut out = Vec::new();
        let a = room.join(&mut out);
        let b = room.join(&mut out);
        (room, a, b)
    }

    #[test]
    fn joining_members_get_numbered_names_and_the_others_are_told() {
        let mut room = Room::default();
        let mut out = Vec::new();
        let a = room.join(&mut out);
        let b = room.join(&mut out);
        assert_eq!(room.name(a), Some("user1"));
        assert_eq!(room.name(b), Some("user2"));
        assert_eq!(
            texts(&out),
            [
                (Recipients::AllExcept(a), "* user1 joined\n".into()),
                (Recipients::AllExcept(b), "* user2 joined\n".into()),
            ]
        );
    }

    #[test]
    fn a_line_goes_to_everyone_but_its_sender_with_the_name() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        room.line(a, b"hi there\r", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::AllExcept(a), "<user1> hi there\n".into())]
        );
    }

    #[test]
    fn message_bytes_pass_through_even_when_not_utf8() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        room.line(a, b"\xff\x00x", &mut out);
        assert_eq!(&*out[0].message, b"<user1> \xff\x00x\n");
    }

    #[test]
    fn nick_renames_and_tells_everyone() {
        let (mut room, a, b) = room_of_two();
        let mut out = Vec::new();
        room.line(a, b"/nick  alice ", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::All, "* user1 is now alice\n".into())]
        );
        out.clear();
        room.line(a, b"hello", &mut out);
        assert_eq!(&*out[0].message, b"<alice> hello\n");
        out.clear();
        // The old name is free again; the new one is taken.
        room.line(b, b"/nick alice", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::Only(b), "ERR name alice is taken\n".into())]
        );
        out.clear();
        room.line(b, b"/nick user1", &mut out);
        assert_eq!(room.name(b), Some("user1"));
    }

    #[test]
    fn invalid_names_are_refused_to_the_sender_only() {
        let (mut room, a, _) = room_of_two();
        let too_long = format!("/nick {}", "x".repeat(MAX_NAME + 1));
        for bad in [
            &b"/nick"[..],
            b"/nick ",
            b"/nick a b",
            b"/nick caf\xc3\xa9",
            too_long.as_bytes(),
        ] {
            let mut out = Vec::new();
            room.line(a, bad, &mut out);
            assert_eq!(out.len(), 1, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(out[0].to, Recipients::Only(a));
            assert!(out[0].message.starts_with(b"ERR invalid name"));
        }
        let longest = format!("/nick {}", "x".repeat(MAX_NAME));
        let mut out = Vec::new();
        room.line(a, longest.as_bytes(), &mut out);
        assert_eq!(out[0].to, Recipients::All);
    }

    #[test]
    fn who_lists_everyone_to_the_asker() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        room.line(a, b"/who", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::Only(a), "* online: user1 user2\n".into())]
        );
    }

    #[test]
    fn unknown_commands_get_an_error_but_nicknames_need_a_space() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        room.line(a, b"/nickname x", &mut out);
        assert_eq!(out[0].to, Recipients::Only(a));
        assert!(out[0].message.starts_with(b"ERR unknown command"));
    }

    #[test]
    fn leaving_tells_the_others_and_frees_the_name() {
        let (mut room, a, b) = room_of_two();
        let mut out = Vec::new();
        room.leave(a, &mut out);
        assert_eq!(texts(&out), [(Recipients::All, "* user1 left\n".into())]);
        assert_eq!(room.len(), 1);
        out.clear();
        room.line(b, b"/nick user1", &mut out);
        assert_eq!(room.name(b), Some("user1"));
        // Leaving twice, or a line from a member who left, does nothing.
        out.clear();
        room.leave(a, &mut out);
        room.line(a, b"ghost", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_taken_default_name_is_skipped() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        room.line(a, b"/nick user3", &mut out);
        let c = room.join(&mut out);
        assert_eq!(room.name(c), Some("user4"));
    }

    #[test]
    fn authenticated_names_are_kept_and_may_be_shared_by_one_users_connections() {
        let mut room = Room::default();
        let mut out = Vec::new();
        let alice = room.join_as("alice", &mut out);
        let again = room.join_as("alice", &mut out);
        let guest = room.join(&mut out);
        assert_eq!(room.name(alice), Some("alice"));
        assert_eq!(room.name(again), Some("alice"));
        out.clear();
        room.line(alice, b"/nick queen", &mut out);
        assert_eq!(
            texts(&out),
            [(
                Recipients::Only(alice),
                "ERR your name is alice, set by authentication\n".into()
            )]
        );
        out.clear();
        room.line(guest, b"/nick alice", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::Only(guest), "ERR name alice is taken\n".into())]
        );
        room.leave(alice, &mut out);
        out.clear();
        room.line(guest, b"/nick alice", &mut out);
        assert!(
            texts(&out)[0].1.starts_with("ERR name alice is taken"),
            "one alice left"
        );
        room.leave(again, &mut out);
        out.clear();
        room.line(guest, b"/nick alice", &mut out);
        assert_eq!(texts(&out)[0].1, "* user1 is now alice\n");
    }

    #[test]
    fn an_authenticated_name_that_is_no_valid_chat_name_is_not_used() {
        let mut room = Room::default();
        let mut out = Vec::new();
        let member = room.join_as("eve\n* admin joined", &mut out);
        assert_eq!(room.name(member), Some("user1"));
        assert_eq!(
            texts(&out),
            [(Recipients::AllExcept(member), "* user1 joined\n".into())]
        );
    }
}
