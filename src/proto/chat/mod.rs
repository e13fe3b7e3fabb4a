//! A line-based chat room, in the spirit of `ncat --chat`: the room as a sans-IO state
//! machine ([`Room`], in `room.rs`), and [`Chat`], the handler `wharf chat` runs on it.
//!
//! The room knows its members and their names, and turns what they do (join, send lines,
//! leave) into [`Delivery`]s: a message and who gets it. It never sees a socket, and the
//! only clock it reads is the one it is given. A message for many recipients is built once,
//! as one shared `Arc<[u8]>`: a broadcast to a thousand members costs one allocation, not a
//! thousand copies.
//!
//! The protocol, line by line (lines end with `\n`; a `\r` before it is dropped):
//! - on joining, a member is named `userN`, or by the name it authenticated as
//!   ([`Room::join_as`]), and the others get `* NAME joined`;
//! - a line is delivered to every *other* member as `<NAME> line`, never echoed to its sender,
//!   with control characters other than TAB shown in caret notation, as `cat -v` shows them
//!   (`\r` as `^M`, ESC as `^[`, NUL as `^@`, DEL as `^?`; a C1 control encoded in UTF-8 as
//!   `M-^[` and so on), so that no member can forge a line, move a cursor or clear a screen;
//! - `/nick NAME` renames (1–32 of `A-Z a-z 0-9 _ -`, not taken); everyone, the sender
//!   included, gets `* OLD is now NEW`; a bad or taken name gets an `ERR` line, to the
//!   sender only; a member named by authentication keeps its name (`ERR` to `/nick`); at
//!   most one rename a second is taken per member (`ERR /nick is allowed once a second`);
//! - names have owners: a member that authenticates as NAME gets NAME even when a member
//!   who did not authenticate took it with `/nick`; that one is renamed `userN`, and
//!   everyone gets `* NAME is now userN`;
//! - `/who` answers the sender with `* online: NAME NAME ...`, each name once, sorted, at
//!   most [`WHO_MAX_NAMES`] of them (then `(and N more)`); at most one `/who` a second is
//!   answered per member, others get `ERR /who ...`;
//! - another line starting with `/` gets `ERR unknown command`;
//! - on leaving, the others get `* NAME left`.
//!
//! **Batches.** Lines are collected, whoever sent them, into one message until
//! [`Room::flush`], which the caller makes once per loop iteration (or until the batch
//! reaches [`MAX_BATCH`]): one allocation for the whole batch, and one queued chunk per
//! recipient, or a few for a member who sent some of the lines, which its copy leaves out
//! ([`Recipients::AllBut`]). However many members speak at once, each member gets one
//! message per loop iteration. Join, leave and rename notices are batched the same way, so
//! that a thousand members joining cost each member one message, not a thousand. Nothing is
//! reordered: a pending batch is handed over before any other delivery, and a member that
//! joined during a batch gets only the notices after its own ([`Recipients::AllSince`]).
//!
//! Line framing and the line-length limit are the line protocol's ([`super::line`](crate::proto::line)).

use std::net::SocketAddr;
use std::time::Instant;

use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::handler::{Context, Handler};
use crate::log_limit::LogLimit;
use crate::proto::line::{refuse_overlong_line, LineCursor, LineEcho, LineStep};

mod room;

pub use room::*;

/// Bytes of fan-out (what each line adds to the batch, times members) one member's callback
/// may cause before the rest of its input waits for the next turn
/// ([`Context::yield_rest`]): about 4 ms of kernel copying, so a member flooding a room of
/// 500 with empty lines (each `<NAME> ` to 499 others) cannot stall the room for the rest
/// of its 64 KiB read (360 MB of writes).
const FANOUT_BUDGET: usize = 4 << 20;

/// What a line costs each recipient beyond its bytes, for the fan-out budget: even an empty
/// line is a share of a queue slot and of a write.
const SLOT_COST_PER_LINE: usize = 16;

/// A chat room: every complete line a member sends goes to every other member as
/// `<NAME> line` (see [`crate::proto::chat`] for the protocol). Lines are framed like
/// [`Line`](crate::proto::line::Line)'s, with the same limit.
///
/// The lines of all members go out as one shared chunk per loop iteration
/// ([`Handler::on_flush`]), and so do join and leave notices. A member whose own answers
/// (`/who`, errors) pass the output limit is read no further until it reads them; one that
/// falls behind on what others say is dropped as a slow reader.
///
/// ```
/// # use wharf::{Config, Reactor, service::Chat};
/// let reactor = Reactor::new(Config::default(), Chat::new(1024))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Chat {
    room: Room,
    framing: LineEcho,
    /// The connection of each member, by member index.
    conns: Vec<Option<ConnId>>,
    /// Deliveries of the current callback, reused.
    out: Vec<Delivery>,
    /// By member index, for a batch some members get in part: where a joiner's part starts,
    /// or where a sender's own ranges are listed (+1; 0: the member gets it whole). All zero
    /// between batches.
    marks: Vec<usize>,
    overlong_log: LogLimit,
    /// Lines members sent (commands included).
    lines: u64,
    /// Chunks queued to members: one per member per batch or answer.
    deliveries: u64,
}

/// What the chat service keeps per connection.
#[derive(Debug)]
pub struct ChatSession {
    member: MemberId,
    cursor: LineCursor,
}

impl Chat {
    /// A chat room whose lines may hold at most `max_line` bytes before the `\n`.
    pub fn new(max_line: usize) -> Chat {
        Chat {
            room: Room::default(),
            framing: LineEcho::new(max_line),
            conns: Vec::new(),
            out: Vec::new(),
            marks: Vec::new(),
            overlong_log: LogLimit::per_second(module_path!(), log::Level::Info, "overlong lines"),
            lines: 0,
            deliveries: 0,
        }
    }

    /// Members in the room now.
    pub fn members(&self) -> usize {
        self.room.len()
    }

    /// Lines members have sent since the room opened (commands included).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Deliveries queued since the room opened: one per member for each batch of lines
    /// (or answer) it is sent, however many lines the batch holds.
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Writes this callback's deliveries: each message is one shared chunk for all its
    /// recipients.
    fn deliver(&mut self, ctx: &mut Context<'_>) {
        let mut delivered = 0;
        for Delivery { to, message } in self.out.drain(..) {
            // How many it was sent to: 1 or 0.
            let send = |ctx: &mut Context<'_>, conn: &Option<ConnId>| match conn {
                Some(conn) => {
                    ctx.write_shared(*conn, &message);
                    1
                }
                None => 0,
            };
            match to {
                Recipients::Only(member) => delivered += send(ctx, &self.conns[member.index()]),
                Recipients::AllExcept(sender) => {
                    for (index, conn) in self.conns.iter().enumerate() {
                        if index != sender.index() {
                            delivered += send(ctx, conn);
                        }
                    }
                }
                Recipients::All => {
                    delivered += self.conns.iter().map(|conn| send(ctx, conn)).sum::<u64>()
                }
                Recipients::AllSince(joiners) => {
                    self.marks.resize(self.conns.len(), 0);
                    for (member, from) in &joiners {
                        self.marks[member.index()] = from + 1;
                    }
                    for (conn, mark) in self.conns.iter().zip(&mut self.marks) {
                        match (std::mem::take(mark), conn) {
                            (0, _) => delivered += send(ctx, conn),
                            (from, Some(conn)) => {
                                ctx.write_shared_range(*conn, &message, from - 1..message.len());
                                delivered += 1;
                            }
                            (_, None) => {}
                        }
                    }
                }
                Recipients::AllBut(mut senders) => {
                    // Each sender's ranges together, in order, so its copy is the gaps.
                    senders.sort_by_key(|(member, range)| (member.index(), range.start));
                    self.marks.resize(self.conns.len(), 0);
                    for (at, (member, _)) in senders.iter().enumerate().rev() {
                        self.marks[member.index()] = at + 1;
                    }
                    for (index, (conn, mark)) in self.conns.iter().zip(&mut self.marks).enumerate()
                    {
                        match (std::mem::take(mark), conn) {
                            (0, _) => delivered += send(ctx, conn),
                            (first, Some(conn)) => {
                                let mut from = 0;
                                let own = senders[first - 1..]
                                    .iter()
                                    .take_while(|(member, _)| member.index() == index);
                                for (_, range) in own {
                                    ctx.write_shared_range(*conn, &message, from..range.start);
                                    from = range.end;
                                }
                                ctx.write_shared_range(*conn, &message, from..message.len());
                                delivered += 1;
                            }
                            (_, None) => {}
                        }
                    }
                }
            }
        }
        self.deliveries += delivered;
    }
}

impl Handler for Chat {
    type Session = ChatSession;

    fn on_open(&mut self, ctx: &mut Context<'_>, _peer: SocketAddr) -> ChatSession {
        // An authenticated member is called by the name it authenticated as.
        let member = match ctx.identity() {
            Some(name) => self.room.join_as(name, &mut self.out),
            None => self.room.join(&mut self.out),
        };
        // What joining handed over (lines said before this member arrived) goes to the
        // others only: deliver it before the newcomer is a recipient.
        self.deliver(ctx);
        if self.conns.len() <= member.index() {
            self.conns.resize(member.index() + 1, None);
        }
        self.conns[member.index()] = Some(ctx.id());
        ChatSession {
            member,
            cursor: LineCursor::default(),
        }
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, session: &mut ChatSession, input: &[u8]) -> usize {
        let (lines, too_long) = match self.framing.on_input(&mut session.cursor, input) {
            LineStep::Echo(lines) => (lines, false),
            LineStep::TooLong { lines } => (lines, true),
        };
        let now = Instant::now();
        let mut consumed = 0;
        // What one callback may cost: the bytes each line adds to the batch (its sender's
        // name, escapes and all) times the members who will be sent it.
        let members = self.room.len().max(1);
        let mut fanout = 0usize;
        for line in lines.split_inclusive(|&b| b == b'\n') {
            // Answers to this member (`/who`, errors) past the output limit: the rest
            // waits until it reads them.
            if ctx.backlogged() {
                break;
            }
            // A burst of lines to a big room: the rest after the others had their turn.
            if fanout >= FANOUT_BUDGET {
                ctx.yield_rest();
                break;
            }
            self.lines += 1;
            let added = self
                .room
                .line(session.member, &line[..line.len() - 1], now, &mut self.out);
            fanout += (added + SLOT_COST_PER_LINE) * members;
            if !self.out.is_empty() {
                self.deliver(ctx);
            }
            consumed += line.len();
        }
        // The lines go out with the batch, in `on_flush`.
        if consumed < lines.len() {
            // The next input starts with lines the cursor has not seen as such.
            session.cursor = LineCursor::default();
            return consumed;
        }
        if !too_long {
            return lines.len();
        }
        refuse_overlong_line(ctx, &self.framing, &mut self.overlong_log);
        input.len()
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_>, session: &mut ChatSession, rest: &[u8]) {
        // Complete lines the member sent before it finished (left while its own output was
        // backlogged) are lines like any; a last line without its newline still counts, as
        // in line mode.
        let now = Instant::now();
        for line in rest.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            self.lines += 1;
            self.room.line(session.member, line, now, &mut self.out);
            if !self.out.is_empty() {
                self.deliver(ctx);
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, session: ChatSession, _reason: CloseReason) {
        self.conns[session.member.index()] = None;
        self.room.leave(session.member, &mut self.out);
        self.deliver(ctx);
    }

    fn on_flush(&mut self, ctx: &mut Context<'_>) {
        self.room.flush(&mut self.out);
        if !self.out.is_empty() {
            self.deliver(ctx);
        }
    }
}
