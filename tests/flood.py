"""
A client that floods a sockshare server over one TCP connection, with
blocking sockets, for the server's bound tests (and for measuring a server
by hand):

    python tests/flood.py PORT [--requests 200000] [--size 1024] [--no-read]

It pipelines C{--requests} REQUEST frames of C{--size} bytes as fast as the
socket takes them.  It reads the replies as they come, checks that every
request is answered exactly once, and prints C{answered N}; with
C{--no-read} it never reads, prints C{sent N} once everything was written
(which may never happen: that is the point) and waits to be killed.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct(">IIB")
REQUEST, RESPONSE, ERROR = 1, 2, 3


def send(sock: socket.socket, requests: int, size: int) -> None:
    payload = b"x" * size
    batch: list[bytes] = []
    for requestId in range(requests):
        batch.append(HEADER.pack(5 + size, requestId, REQUEST) + payload)
        if len(batch) == 64:
            sock.sendall(b"".join(batch))
            batch.clear()
    if batch:
        sock.sendall(b"".join(batch))


def receive(sock: socket.socket, requests: int) -> int:
    seen = bytearray(requests)
    answered = 0
    buffer = b""
    while answered < requests:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit(f"connection closed after {answered} answers")
        buffer += chunk
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            length, requestId, kind = HEADER.unpack_from(buffer, offset)
            if len(buffer) - offset < 4 + length:
                break
            if kind not in (RESPONSE, ERROR) or seen[requestId]:
                raise SystemExit(f"bad or repeated answer for request {requestId}")
            seen[requestId] = 1
            answered += 1
            offset += 4 + length
        buffer = buffer[offset:]
    return answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--no-read", action="store_true")
    args = parser.parse_args()
    sock = socket.create_connection(("127.0.0.1", args.port))
    writer = threading.Thread(target=send, args=(sock, args.requests, args.size), daemon=True)
    writer.start()
    if args.no_read:
        writer.join()
        print(f"sent {args.requests}", flush=True)
        while True:
            time.sleep(60)
    print(f"answered {receive(sock, args.requests)}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
