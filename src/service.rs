//! The built-in services: the sans-IO protocols of [`crate::proto`] wired to the reactor as
//! [`Handler`]s. These are what `wharf echo`, `wharf line` and `wharf chat` run.

use std::net::SocketAddr;
use std::time::Instant;

use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::handler::{Context, Handler};
use crate::log_limit::LogLimit;
use crate::proto::chat::{Delivery, MemberId, Recipients, Room};
use crate::proto::echo::Echo as EchoProtocol;
use crate::proto::line::{LineCursor, LineEcho, LineStep};

/// Echo (RFC 862): every byte back, in order.
///
/// ```
/// # use wharf::{Config, Reactor, service::Echo};
/// let reactor = Reactor::new(Config::default(), Echo)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    type Session = ();

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) {}

    fn on_data(&mut self, ctx: &mut Context<'_>, _session: &mut (), input: &[u8]) -> usize {
        let step = EchoProtocol.on_input(input);
        ctx.write(step.reply);
        step.consumed
    }

    /// UDP echo (RFC 862 over UDP): every datagram back to its sender, never a byte more
    /// than it brought (an echo must not amplify). Not to the ports of the other
    /// small services (echo 7, daytime 13, chargen 19, time 37): a datagram forged to come
    /// from one of them would start two servers answering each other forever.
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], reply: &mut Vec<u8>) -> bool {
        if LOOPING_PORTS.contains(&from.port()) {
            return false;
        }
        reply.extend_from_slice(EchoProtocol.on_input(data).reply);
        true // an empty datagram is echoed too
    }
}

/// Source ports UDP echo never answers: the small services that would answer back.
const LOOPING_PORTS: [u16; 4] = [7, 13, 19, 37];

/// Line echo: complete lines back byte-exact; an overlong line gets an error and a close.
///
/// ```
/// # use wharf::{Config, Reactor, service::Line};
/// let reactor = Reactor::new(Config::default(), Line::new(1024))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Line {
    protocol: LineEcho,
    /// Overlong lines are a client's doing: at most one log line per second about them.
    overlong_log: LogLimit,
}

impl Line {
    /// Line echo that accepts lines of at most `max_line` bytes before the `\n`.
    pub fn new(max_line: usize) -> Line {
        Line {
            protocol: LineEcho::new(max_line),
            overlong_log: LogLimit::per_second(),
        }
    }
}

impl Default for Line {
    fn default() -> Line {
        Line::new(crate::proto::line::DEFAULT_MAX_LINE)
    }
}

impl Handler for Line {
    type Session = LineCursor;

    fn on_open(&mut self, _ctx: &mut Context<'_>, _peer: SocketAddr) -> LineCursor {
        LineCursor::default()
    }

    fn on_data(&mut self, ctx: &mut Context<'_>, cursor: &mut LineCursor, input: &[u8]) -> usize {
        match self.protocol.on_input(cursor, input) {
            LineStep::Echo(lines) => {
                ctx.write(lines);
                lines.len()
            }
            LineStep::TooLong { lines } => {
                ctx.write(lines);
                refuse_overlong_line(ctx, &self.protocol, &mut self.overlong_log);
                input.len()
            }
        }
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_>, _: &mut LineCursor, unconsumed: &[u8]) {
        ctx.write(self.protocol.on_peer_closed(unconsumed));
    }
}

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
/// [`Line`]'s, with the same limit.
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
            overlong_log: LogLimit::per_second(),
        }
    }

    /// Members in the room now.
    pub fn members(&self) -> usize {
        self.room.len()
    }

    /// Writes this callback's deliveries: each message is one shared chunk for all its
    /// recipients.
    fn deliver(&mut self, ctx: &mut Context<'_>) {
        for Delivery { to, message } in self.out.drain(..) {
            let send = |ctx: &mut Context<'_>, conn: &Option<ConnId>| {
                if let Some(conn) = conn {
                    ctx.write_shared(*conn, &message);
                }
            };
            match to {
                Recipients::Only(member) => send(ctx, &self.conns[member.index()]),
                Recipients::AllExcept(sender) => {
                    for (index, conn) in self.conns.iter().enumerate() {
                        if index != sender.index() {
                            send(ctx, conn);
                        }
                    }
                }
                Recipients::All => self.conns.iter().for_each(|conn| send(ctx, conn)),
                Recipients::AllSince(joiners) => {
                    self.marks.resize(self.conns.len(), 0);
                    for (member, from) in &joiners {
                        self.marks[member.index()] = from + 1;
                    }
                    for (conn, mark) in self.conns.iter().zip(&mut self.marks) {
                        match (std::mem::take(mark), conn) {
                            (0, _) => send(ctx, conn),
                            (from, Some(conn)) => {
                                ctx.write_shared_range(*conn, &message, from - 1..message.len())
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
                            (0, _) => send(ctx, conn),
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
                            }
                            (_, None) => {}
                        }
                    }
                }
            }
        }
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

/// Line mode's rule for a line over the limit, shared by line echo and chat: the error line,
/// a close once it is sent, and a log line at most once a second (a client can trigger it
/// at will).
fn refuse_overlong_line(ctx: &mut Context<'_>, framing: &LineEcho, log: &mut LogLimit) {
    ctx.write(framing.error_line());
    ctx.close();
    if let Some(count) = log.hit(Instant::now()) {
        log::info!(
            "conn={} closing: line longer than {} bytes ({count} such in the last second)",
            ctx.id(),
            framing.max_line()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_echo_answers_with_what_came_and_never_to_the_looping_ports() {
        let mut reply = Vec::new();
        let from: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert!(Echo.on_datagram(from, b"ping", &mut reply));
        assert_eq!(reply, b"ping");
        for port in [7, 13, 19, 37] {
            let mut reply = Vec::new();
            let from = SocketAddr::new(from.ip(), port);
            assert!(!Echo.on_datagram(from, b"loop?", &mut reply), "port {port}");
            assert!(reply.is_empty());
        }
    }
}
