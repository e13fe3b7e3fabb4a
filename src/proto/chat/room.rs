//! The room itself: members, names, batches and the rules of the protocol (see
//! [`super`]), sans-IO.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One member.
    Only(MemberId),
    /// Every member but this one.
    AllExcept(MemberId),
    /// Every member.
    All,
    /// Every member, but each member listed joined while this batch of notices was being
    /// collected, and gets only the bytes after the offset beside it: the notices that
    /// came after its own arrival.
    AllSince(Vec<(MemberId, usize)>),
    /// Every member, but each member listed sent the lines in the range beside it, which
    /// its copy leaves out (a member may be listed more than once, ranges in order).
    AllBut(Vec<(MemberId, Range<usize>)>),
}

/// One message for some members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who gets it.
    pub to: Recipients,
    /// The bytes, whole lines with their `\n`, shared by every recipient.
    pub message: Arc<[u8]>,
}

/// Longest name a member may take.
pub const MAX_NAME: usize = 32;

/// Most names a `/who` answer lists: with ten thousand members the whole list would be a
/// 100 KB answer to a five-byte question.
pub const WHO_MAX_NAMES: usize = 1000;

/// Bytes of lines collected before they are handed over even if the loop iteration has not
/// ended: a bound on the batch, and on how long its first line waits.
pub const MAX_BATCH: usize = 64 * 1024;

/// How often a member may rename itself: each rename is a notice to every member.
pub const NICK_INTERVAL: Duration = Duration::from_secs(1);

/// How often a member's `/who` is answered.
pub const WHO_INTERVAL: Duration = Duration::from_secs(1);

/// The chat room: its members and their names.
///
/// ```
/// use std::time::Instant;
/// use wharf::proto::chat::{Recipients, Room};
///
/// let mut room = Room::default();
/// let mut out = Vec::new();
/// let alice = room.join(&mut out);
/// let bob = room.join(&mut out);
/// room.flush(&mut out); // the join notices, once per loop iteration
/// out.clear();
/// room.line(alice, b"hello", Instant::now(), &mut out);
/// room.line(bob, b"hi", Instant::now(), &mut out);
/// room.flush(&mut out); // once per loop iteration: the lines of all in one message
/// assert_eq!(out[0].to, Recipients::AllBut(vec![(alice, 0..14), (bob, 14..25)]));
/// assert_eq!(&*out[0].message, b"<user1> hello\n<user2> hi\n");
/// ```
#[derive(Debug, Default)]
pub struct Room {
    members: Slab<Member>,
    /// How many members have each name: one, except for authenticated names, which one
    /// user may hold in several connections at once. Sorted, for `/who`.
    by_name: BTreeMap<String, u32>,
    /// Number of the next default name (`userN`), counting from 1, never reused.
    next_user: u64,
    /// Join, leave and rename notices not handed over yet.
    notices: Vec<u8>,
    /// Members who joined while `notices` was collected, each with the offset just past its
    /// own join notice.
    joiners: Vec<(MemberId, usize)>,
    /// Lines not handed over yet, as the members will read them.
    lines: Vec<u8>,
    /// Who sent which part of `lines`.
    senders: Vec<(MemberId, Range<usize>)>,
    /// The `/who` answer, until membership or a name changes.
    who: Option<Arc<[u8]>>,
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

    /// A new member joins: it gets a free `userN` name, and the others will be told.
    pub fn join(&mut self, out: &mut Vec<Delivery>) -> MemberId {
        let name = self.free_user_name();
        self.admit(name, false, out)
    }

    /// A member that authenticated as `name` joins under that name, for good: `/nick` is
    /// refused. Several connections of one user may share it. A member who took the name
    /// with `/nick` is renamed `userN`.
    /// A name that is not a valid chat name (a certificate's subject may hold anything, a
    /// newline included) is not used: the member gets a `userN` name instead.
    pub fn join_as(&mut self, name: &str, out: &mut Vec<Delivery>) -> MemberId {
        let Some(name) = valid_name(name.as_bytes()) else {
            return self.join(out);
        };
        let squatter = self
            .members
            .iter()
            .find(|(_, m)| m.name == name && !m.fixed)
            .map(|(key, _)| MemberId(key));
        if let Some(squatter) = squatter {
            let fresh = self.free_user_name();
            self.rename(squatter, fresh, out);
        }
        self.admit(name.to_string(), true, out)
    }

    fn free_user_name(&mut self) -> String {
        loop {
            self.next_user += 1;
            let name = format!("user{}", self.next_user);
            // `userN` may have been taken with /nick: skip to the next number.
            if !self.by_name.contains_key(&name) {
                return name;
            }
        }
    }

    fn admit(&mut self, name: String, fixed: bool, out: &mut Vec<Delivery>) -> MemberId {
        let member = MemberId(self.members.insert(Member {
            name: name.clone(),
            fixed,
            who_at: None,
            nick_at: None,
        }));
        self.notice(format_args!("* {name} joined\n"), out);
        self.joiners.push((member, self.notices.len()));
        *self.by_name.entry(name).or_insert(0) += 1;
        self.who = None;
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

    /// A member leaves (or is dropped): the others will be told.
    pub fn leave(&mut self, member: MemberId, out: &mut Vec<Delivery>) {
        let Some(Member { name, .. }) = self.members.try_remove(member.0) else {
            return;
        };
        self.release_name(&name);
        self.who = None;
        // Its id may be reused by a member joining later in this batch.
        self.joiners.retain(|(joiner, _)| *joiner != member);
        self.notice(format_args!("* {name} left\n"), out);
    }

    /// A member sent one line: `line` is its content, without the `\n`. `now` is the time,
    /// for the `/who` and `/nick` rate limits. A plain line joins the batch that
    /// [`Room::flush`] hands over. Returns the bytes it added to that batch (what each other
    /// member will be sent for it), so the caller can bound the fan-out of one turn.
    pub fn line(
        &mut self,
        member: MemberId,
        line: &[u8],
        now: Instant,
        out: &mut Vec<Delivery>,
    ) -> usize {
        if !self.members.contains(member.0) {
            return 0;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.starts_with(b"/") {
            if !self.notices.is_empty() {
                self.flush(out);
            }
            let start = self.lines.len();
            let name = &self.members[member.0].name;
            self.lines.push(b'<');
            self.lines.extend_from_slice(name.as_bytes());
            self.lines.extend_from_slice(b"> ");
            escape_controls(line, &mut self.lines);
            self.lines.push(b'\n');
            match self.senders.last_mut() {
                Some((last, range)) if *last == member && range.end == start => {
                    range.end = self.lines.len();
                }
                _ => self.senders.push((member, start..self.lines.len())),
            }
            let added = self.lines.len() - start;
            if self.lines.len() >= MAX_BATCH {
                self.flush_lines(out);
            }
            return added;
        }
        // A command: the lines before it go first.
        self.flush_lines(out);
        if let Some(rest) = line.strip_prefix(b"/nick") {
            if rest.is_empty() || rest.starts_with(b" ") {
                self.nick(member, trim(rest), now, out);
                return 0;
            }
        }
        // An answer to the sender alone: the notices before it go first too.
        self.flush(out);
        if line == b"/who" {
            self.who(member, now, out);
        } else {
            let reply = "ERR unknown command (try /nick NAME or /who)\n";
            out.push(deliver(Recipients::Only(member), reply.to_string()));
        }
        0
    }

    /// Hands over the lines collected: one message for all, each sender's copy without its
    /// own lines.
    fn flush_lines(&mut self, out: &mut Vec<Delivery>) {
        if self.senders.is_empty() {
            return;
        }
        let senders = std::mem::take(&mut self.senders);
        out.push(Delivery {
            to: match senders.as_slice() {
                [(only, range)] if range.len() == self.lines.len() => Recipients::AllExcept(*only),
                _ => Recipients::AllBut(senders),
            },
            message: Arc::from(&self.lines[..]),
        });
        self.lines.clear();
        shrink(&mut self.lines);
    }

    /// Hands over everything collected: the batch of lines or the batch of notices (only
    /// one is ever pending). Call it once per loop iteration.
    pub fn flush(&mut self, out: &mut Vec<Delivery>) {
        self.flush_lines(out);
        if self.notices.is_empty() {
            return;
        }
        let joiners = std::mem::take(&mut self.joiners);
        let to = if joiners.is_empty() {
            Recipients::All
        } else {
            Recipients::AllSince(joiners)
        };
        out.push(Delivery {
            to,
            message: Arc::from(&self.notices[..]),
        });
        self.notices.clear();
        shrink(&mut self.notices);
    }

    fn notice(&mut self, text: std::fmt::Arguments<'_>, out: &mut Vec<Delivery>) {
        use std::io::Write as _;
        self.flush_lines(out);
        // Writing to a Vec cannot fail.
        let _ = self.notices.write_fmt(text);
    }

    fn who(&mut self, member: MemberId, now: Instant, out: &mut Vec<Delivery>) {
        let asker = &mut self.members[member.0];
        if asker
            .who_at
            .is_some_and(|at| now.saturating_duration_since(at) < WHO_INTERVAL)
        {
            let text = "ERR /who is answered once a second\n".to_string();
            return out.push(deliver(Recipients::Only(member), text));
        }
        asker.who_at = Some(now);
        let names = &self.by_name;
        let answer = self.who.get_or_insert_with(|| {
            let mut text = String::from("* online:");
            for name in names.keys().take(WHO_MAX_NAMES) {
                text.push(' ');
                text.push_str(name);
            }
            if names.len() > WHO_MAX_NAMES {
                text.push_str(&format!(" (and {} more)", names.len() - WHO_MAX_NAMES));
            }
            text.push('\n');
            Arc::from(text.into_bytes())
        });
        out.push(Delivery {
            to: Recipients::Only(member),
            message: Arc::clone(answer),
        });
    }

    fn nick(&mut self, member: MemberId, wanted: &[u8], now: Instant, out: &mut Vec<Delivery>) {
        let error = |text: String| deliver(Recipients::Only(member), text);
        // Errors go to the sender alone, after the notices before them.
        let Some(wanted) = valid_name(wanted) else {
            self.flush(out);
            return out.push(error(format!(
                "ERR invalid name: use 1 to {MAX_NAME} of A-Z a-z 0-9 _ -\n"
            )));
        };
        if self.members[member.0].fixed {
            self.flush(out);
            let current = &self.members[member.0];
            let text = format!("ERR your name is {}, set by authentication\n", current.name);
            return out.push(error(text));
        }
        if self.members[member.0].name == wanted {
            return; // already called that
        }
        if self.by_name.contains_key(wanted) {
            self.flush(out);
            return out.push(error(format!("ERR name {wanted} is taken\n")));
        }
        let last = self.members[member.0].nick_at;
        if last.is_some_and(|at| now.saturating_duration_since(at) < NICK_INTERVAL) {
            self.flush(out);
            let text = "ERR /nick is allowed once a second\n".to_string();
            return out.push(error(text));
        }
        self.members[member.0].nick_at = Some(now);
        // The notice joins the batch: a thousand renames cost each member one message.
        self.rename(member, wanted.to_string(), out);
    }

    /// Renames a member and tells everyone.
    fn rename(&mut self, member: MemberId, new: String, out: &mut Vec<Delivery>) {
        let old = std::mem::replace(&mut self.members[member.0].name, new.clone());
        self.release_name(&old);
        self.notice(format_args!("* {old} is now {new}\n"), out);
        self.by_name.insert(new, 1);
        self.who = None;
    }
}

/// A member: its name, whether authentication set it, and when its last `/who` was
/// answered and its last `/nick` taken.
#[derive(Debug)]
struct Member {
    name: String,
    fixed: bool,
    who_at: Option<Instant>,
    nick_at: Option<Instant>,
}

fn deliver(to: Recipients, text: String) -> Delivery {
    Delivery {
        to,
        message: text.into_bytes().into(),
    }
}

/// A batch buffer that a spike grew gives its memory back once handed over.
fn shrink(buffer: &mut Vec<u8>) {
    const KEEP: usize = 64 * 1024;
    if buffer.capacity() > 4 * KEEP {
        buffer.shrink_to(KEEP);
    }
}

/// Appends `line` to `out` with control characters other than TAB in caret notation, as
/// `cat -v` shows them: C0 controls as `^@`..`^_`, DEL as `^?`, and C1 controls (U+0080 to
/// U+009F, which some terminals obey; written in UTF-8, or as single bytes 0x80 to 0x9F
/// that are not part of valid UTF-8, which 8-bit terminals obey) as `M-^@`..`M-^_`.
/// Everything else, other invalid UTF-8 included, passes through.
///
/// ```
/// let mut out = Vec::new();
/// wharf::proto::chat::escape_controls(b"a\rb\x1b[2J\tc\xc2\x9b\x9b", &mut out);
/// assert_eq!(out, b"a^Mb^[[2J\tcM-^[M-^[");
/// ```
pub fn escape_controls(line: &[u8], out: &mut Vec<u8>) {
    let suspect = |b: u8| (b < 0x20 && b != b'\t') || (0x7f..=0x9f).contains(&b) || b == 0xc2;
    if !line.iter().any(|&b| suspect(b)) {
        return out.extend_from_slice(line); // the common case: one copy
    }
    let c1 = |out: &mut Vec<u8>, code: u8| out.extend_from_slice(&[b'M', b'-', b'^', code - 0x40]);
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            match u32::from(c) {
                0x09 => out.push(b'\t'),
                code @ 0x00..=0x1f => out.extend_from_slice(&[b'^', code as u8 + 0x40]),
                0x7f => out.extend_from_slice(b"^?"),
                code @ 0x80..=0x9f => c1(out, code as u8),
                _ => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        for &byte in chunk.invalid() {
            match byte {
                0x80..=0x9f => c1(out, byte),
                _ => out.push(byte),
            }
        }
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
            .map(|d| {
                (
                    d.to.clone(),
                    String::from_utf8_lossy(&d.message).into_owned(),
                )
            })
            .collect()
    }

    fn room_of_two() -> (Room, MemberId, MemberId) {
        let mut room = Room::default();
        let mut out = Vec::new();
        let a = room.join(&mut out);
        let b = room.join(&mut out);
        room.flush(&mut out);
        (room, a, b)
    }

    /// One line read from `member`, and the end of that read (and of the loop iteration).
    fn say(room: &mut Room, member: MemberId, line: &[u8], out: &mut Vec<Delivery>) {
        room.line(member, line, Instant::now(), out);
        room.flush(out);
    }

    #[test]
    fn joining_members_get_numbered_names_and_the_others_are_told() {
        let mut room = Room::default();
        let mut out = Vec::new();
        let a = room.join(&mut out);
        let b = room.join(&mut out);
        assert_eq!(room.name(a), Some("user1"));
        assert_eq!(room.name(b), Some("user2"));
        assert!(out.is_empty(), "notices wait for the end of the batch");
        room.flush(&mut out);
        // One message for the batch; each joiner gets what follows its own notice.
        assert_eq!(
            texts(&out),
            [(
                Recipients::AllSince(vec![(a, 15), (b, 30)]),
                "* user1 joined\n* user2 joined\n".into()
            )]
        );
    }

    #[test]
    fn a_line_goes_to_everyone_but_its_sender_with_the_name() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        say(&mut room, a, b"hi there\r", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::AllExcept(a), "<user1> hi there\n".into())]
        );
    }

    #[test]
    fn message_bytes_pass_through_even_when_not_utf8_but_controls_are_escaped() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        say(&mut room, a, b"\xff\x00x", &mut out);
        assert_eq!(&*out[0].message, b"<user1> \xff^@x\n");
    }

    #[test]
    fn nick_renames_and_tells_everyone() {
        let (mut room, a, b) = room_of_two();
        let mut out = Vec::new();
        say(&mut room, a, b"/nick  alice ", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::All, "* user1 is now alice\n".into())]
        );
        out.clear();
        say(&mut room, a, b"hello", &mut out);
        assert_eq!(&*out[0].message, b"<alice> hello\n");
        out.clear();
        // The old name is free again; the new one is taken.
        say(&mut room, b, b"/nick alice", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::Only(b), "ERR name alice is taken\n".into())]
        );
        out.clear();
        say(&mut room, b, b"/nick user1", &mut out);
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
            say(&mut room, a, bad, &mut out);
            assert_eq!(out.len(), 1, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(out[0].to, Recipients::Only(a));
            assert!(out[0].message.starts_with(b"ERR invalid name"));
        }
        let longest = format!("/nick {}", "x".repeat(MAX_NAME));
        let mut out = Vec::new();
        say(&mut room, a, longest.as_bytes(), &mut out);
        assert_eq!(out[0].to, Recipients::All);
    }

    #[test]
    fn who_lists_everyone_to_the_asker() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        say(&mut room, a, b"/who", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::Only(a), "* online: user1 user2\n".into())]
        );
    }

    #[test]
    fn unknown_commands_get_an_error_but_nicknames_need_a_space() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        say(&mut room, a, b"/nickname x", &mut out);
        assert_eq!(out[0].to, Recipients::Only(a));
        assert!(out[0].message.starts_with(b"ERR unknown command"));
    }

    #[test]
    fn leaving_tells_the_others_and_frees_the_name() {
        let (mut room, a, b) = room_of_two();
        let mut out = Vec::new();
        room.leave(a, &mut out);
        room.flush(&mut out);
        assert_eq!(texts(&out), [(Recipients::All, "* user1 left\n".into())]);
        assert_eq!(room.len(), 1);
        out.clear();
        say(&mut room, b, b"/nick user1", &mut out);
        assert_eq!(room.name(b), Some("user1"));
        // Leaving twice, or a line from a member who left, does nothing.
        out.clear();
        room.leave(a, &mut out);
        say(&mut room, a, b"ghost", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_taken_default_name_is_skipped() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        say(&mut room, a, b"/nick user3", &mut out);
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
        room.flush(&mut out);
        assert_eq!(room.name(alice), Some("alice"));
        assert_eq!(room.name(again), Some("alice"));
        out.clear();
        say(&mut room, alice, b"/nick queen", &mut out);
        assert_eq!(
            texts(&out),
            [(
                Recipients::Only(alice),
                "ERR your name is alice, set by authentication\n".into()
            )]
        );
        out.clear();
        say(&mut room, guest, b"/nick alice", &mut out);
        assert_eq!(
            texts(&out),
            [(Recipients::Only(guest), "ERR name alice is taken\n".into())]
        );
        room.leave(alice, &mut out);
        room.flush(&mut out);
        out.clear();
        say(&mut room, guest, b"/nick alice", &mut out);
        assert!(
            texts(&out)[0].1.starts_with("ERR name alice is taken"),
            "one alice left"
        );
        room.leave(again, &mut out);
        room.flush(&mut out);
        out.clear();
        say(&mut room, guest, b"/nick alice", &mut out);
        assert_eq!(texts(&out)[0].1, "* user1 is now alice\n");
    }

    #[test]
    fn an_authenticated_name_that_is_no_valid_chat_name_is_not_used() {
        let mut room = Room::default();
        let mut out = Vec::new();
        let member = room.join_as("eve\n* admin joined", &mut out);
        assert_eq!(room.name(member), Some("user1"));
        room.flush(&mut out);
        assert_eq!(
            texts(&out),
            [(
                Recipients::AllSince(vec![(member, 15)]),
                "* user1 joined\n".into()
            )]
        );
    }

    #[test]
    fn lines_of_one_iteration_become_one_message_and_commands_keep_their_place() {
        let (mut room, a, b) = room_of_two();
        let mut out = Vec::new();
        let now = Instant::now();
        room.line(a, b"one", now, &mut out);
        room.line(a, b"two", now, &mut out);
        assert!(out.is_empty(), "a batch waits for its end");
        room.line(a, b"/who", now, &mut out);
        room.line(a, b"three", now, &mut out);
        room.flush(&mut out);
        assert_eq!(
            texts(&out),
            [
                (
                    Recipients::AllExcept(a),
                    "<user1> one\n<user1> two\n".into()
                ),
                (Recipients::Only(a), "* online: user1 user2\n".into()),
                (Recipients::AllExcept(a), "<user1> three\n".into()),
            ]
        );
        // Lines of several members share the batch; each sender's part is marked.
        out.clear();
        room.line(a, b"x", now, &mut out);
        room.line(b, b"y", now, &mut out);
        room.line(a, b"z", now, &mut out);
        room.flush(&mut out);
        assert_eq!(
            texts(&out),
            [(
                Recipients::AllBut(vec![(a, 0..10), (b, 10..20), (a, 20..30)]),
                "<user1> x\n<user2> y\n<user1> z\n".into()
            )]
        );
    }

    #[test]
    fn a_batch_is_handed_over_when_it_reaches_its_bound() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        let line = [b'x'; 1000];
        while out.is_empty() {
            room.line(a, &line, Instant::now(), &mut out);
        }
        assert!(out[0].message.len() >= MAX_BATCH && out[0].message.len() < MAX_BATCH + 1100);
    }

    #[test]
    fn control_characters_cannot_forge_lines_or_drive_terminals() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        say(
            &mut room,
            a,
            b"a\rb<admin> x\x1b[2J\x07\x00z\tq\x7f\xc2\x9b1m\r",
            &mut out,
        );
        assert_eq!(
            &*out[0].message,
            b"<user1> a^Mb<admin> x^[[2J^G^@z\tq^?M-^[1m\n"
        );
        // A C1 control as a lone byte (8-bit terminals obey it) is escaped too.
        out.clear();
        say(&mut room, a, b"x\x9b2J\x90y", &mut out);
        assert_eq!(&*out[0].message, b"<user1> xM-^[2JM-^Py\n");
        // UTF-8 text is left alone, continuation bytes in 0x80..0x9f included.
        out.clear();
        say(&mut room, a, "caf\u{e9} \u{20ac}".as_bytes(), &mut out);
        assert_eq!(&*out[0].message, "<user1> caf\u{e9} \u{20ac}\n".as_bytes());
    }

    #[test]
    fn notices_come_before_later_lines_and_joiners_hear_only_what_follows_them() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        let c = room.join(&mut out);
        let d = room.join(&mut out);
        room.line(a, b"hi", Instant::now(), &mut out);
        room.flush(&mut out);
        assert_eq!(
            texts(&out),
            [
                (
                    Recipients::AllSince(vec![(c, 15), (d, 30)]),
                    "* user3 joined\n* user4 joined\n".into()
                ),
                (Recipients::AllExcept(a), "<user1> hi\n".into()),
            ]
        );
    }

    #[test]
    fn a_member_who_joins_and_leaves_in_one_batch_is_forgotten_by_the_batch() {
        let (mut room, _, _) = room_of_two();
        let mut out = Vec::new();
        let c = room.join(&mut out);
        room.leave(c, &mut out);
        let e = room.join(&mut out); // may reuse c's number
        room.flush(&mut out);
        assert_eq!(
            texts(&out),
            [(
                Recipients::AllSince(vec![(e, 43)]),
                "* user3 joined\n* user3 left\n* user4 joined\n".into()
            )]
        );
    }

    #[test]
    fn an_authenticated_member_takes_its_name_back_from_a_squatter() {
        let (mut room, a, _) = room_of_two();
        let mut out = Vec::new();
        say(&mut room, a, b"/nick alice", &mut out);
        assert_eq!(room.name(a), Some("alice"));
        out.clear();
        let alice = room.join_as("alice", &mut out);
        room.flush(&mut out);
        assert_eq!(room.name(alice), Some("alice"));
        assert_eq!(room.name(a), Some("user3"));
        assert_eq!(
            texts(&out)[0].1,
            "* alice is now user3\n* alice joined\n".to_string()
        );
        out.clear();
        say(&mut room, a, b"/nick alice", &mut out);
        assert_eq!(texts(&out)[0].1, "ERR name alice is taken\n");
        // A second connection of the same user: /who still lists the name once.
        let _again = room.join_as("alice", &mut out);
        out.clear();
        say(&mut room, alice, b"/who", &mut out);
        assert_eq!(
            texts(&out).last().unwrap().1,
            "* online: alice user2 user3\n"
        );
    }

    #[test]
    fn who_is_answered_once_a_second_from_a_cached_bounded_list() {
        let mut room = Room::default();
        let mut out = Vec::new();
        let members: Vec<MemberId> = (0..WHO_MAX_NAMES + 5)
            .map(|_| room.join(&mut out))
            .collect();
        room.flush(&mut out);
        out.clear();
        let start = Instant::now();
        room.line(members[0], b"/who", start, &mut out);
        room.line(members[1], b"/who", start, &mut out);
        assert!(
            Arc::ptr_eq(&out[0].message, &out[1].message),
            "one answer, shared"
        );
        assert!(out[0].message.ends_with(b" (and 5 more)\n"));
        room.line(members[0], b"/who", start + WHO_INTERVAL / 2, &mut out);
        assert!(out[2].message.starts_with(b"ERR /who"));
        room.line(members[0], b"/who", start + WHO_INTERVAL, &mut out);
        assert!(out[3].message.starts_with(b"* online:"));
    }

    #[test]
    fn renames_are_taken_once_a_second_and_batched_with_the_other_notices() {
        let (mut room, a, b) = room_of_two();
        let mut out = Vec::new();
        let start = Instant::now();
        room.line(a, b"/nick alice", start, &mut out);
        room.line(b, b"/nick bob", start, &mut out);
        assert!(out.is_empty(), "renames wait for the batch");
        room.line(a, b"/nick alicia", start + NICK_INTERVAL / 2, &mut out);
        assert_eq!(
            texts(&out),
            [
                (
                    Recipients::All,
                    "* user1 is now alice\n* user2 is now bob\n".into()
                ),
                (
                    Recipients::Only(a),
                    "ERR /nick is allowed once a second\n".into()
                ),
            ]
        );
        out.clear();
        room.line(a, b"/nick alicia", start + NICK_INTERVAL, &mut out);
        room.flush(&mut out);
        assert_eq!(texts(&out)[0].1, "* alice is now alicia\n");
    }
}
