#!/usr/bin/env python3
"""How evenly do N processes on one port share connections: SO_REUSEPORT or one inherited listener?

A model of wharf's accept loop (epoll, edge-triggered, accept until EAGAIN, at most 256 per
wakeup) in N forked processes, either each with its own SO_REUSEPORT listener ("reuseport") or
all on one listener inherited from the parent ("inherit"). Clients open CONNS connections from
16 source addresses (127.0.0.1-16), CONC at a time, and hold them. Each process reports how
many it accepted, and how many of its wakeups found nothing to accept (the thundering herd).
The numbers in docs/ARCHITECTURE.md ("Why SO_REUSEPORT") come from:

    python3 benches/spread.py reuseport 8 4000 16
    python3 benches/spread.py inherit 8 4000 16
"""

import os
import select
import socket
import sys
import threading
import time

MODE, N, CONNS, CONC = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
assert MODE in ("reuseport", "inherit"), "MODE: reuseport or inherit"


def listener(port, reuseport):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    s.setblocking(False)
    return s


def worker(lsock, index, report, stop):
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN | select.EPOLLET)
    held, accepted, wakeups, empty = [], 0, 0, 0
    while not os.path.exists(stop):
        for _ in ep.poll(0.2):
            wakeups += 1
            got = 0
            for _ in range(256):
                try:
                    conn, _ = lsock.accept()
                except BlockingIOError:
                    break
                held.append(conn)
                got += 1
            accepted += got
            empty += got == 0
    os.write(report, f"process {index}: accepted={accepted} wakeups={wakeups} empty={empty}\n".encode())


def main():
    stop = f"/tmp/spread-{os.getpid()}.stop"
    first = listener(0, MODE == "reuseport")
    port = first.getsockname()[1]
    read_end, write_end = os.pipe()
    pids = []
    for i in range(N):
        pid = os.fork()
        if pid == 0:
            own = first if MODE == "inherit" or i == 0 else listener(port, True)
            worker(own, i, write_end, stop)
            os._exit(0)
        pids.append(pid)
    # The parent's copy of the first socket does not accept: in reuseport mode it is process
    # 0's socket, in inherit mode everyone's.
    time.sleep(0.5)
    held = []

    def client(k, count):
        for j in range(count):
            c = socket.socket()
            c.bind((f"127.0.0.{1 + (k * count + j) % 16}", 0))
            c.connect(("127.0.0.1", port))
            held.append(c)

    threads = [threading.Thread(target=client, args=(k, CONNS // CONC)) for k in range(CONC)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1)  # let the last connections be accepted
    open(stop, "w").close()
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(write_end)
    os.unlink(stop)
    print(f"{MODE}: {N} processes, {CONNS} connections, {CONC} clients")
    print(os.read(read_end, 1 << 16).decode(), end="")


main()
