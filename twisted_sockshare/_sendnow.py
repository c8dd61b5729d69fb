"""
Sending at once what a connection writes at the end of a chunk.

A Twisted transport buffers every C{write()} until the reactor's next turn:
it starts watching the socket for writability (a system call), the reactor
turns once more, the bytes are sent, and it stops watching (another system
call).  That lets the writes of one turn go out together, but when the
writer knows it has nothing more to add - a connection writing the requests
its replies' callbacks made, after the last reply of a chunk - waiting buys
nothing: the bytes are sent at once, with one C{send()}, if nothing is
buffered before them.  What the socket does not take, and anything after an
error, goes to C{write()} as usual, so the bytes keep their order and errors
are found by the reactor as always.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor


def canSendNow(transport: object) -> bool:
    """
    Whether L{sendNow} works with C{transport}: a socket of the reactor's own
    (TCP or UNIX; a TLS transport, or a test's, is not one).
    """
    return (
        isinstance(transport, FileDescriptor)
        and isinstance(getattr(transport, "dataBuffer", None), bytes)
        and isinstance(getattr(transport, "_tempDataBuffer", None), list)
    )


def sendNow(transport: Any, data: bytes) -> None:
    """
    Write C{data} on C{transport} (one L{canSendNow} accepts), sending at
    once as much as the socket takes if nothing is buffered before it.
    """
    if transport.connected and not transport.dataBuffer and not transport._tempDataBuffer:
        sent = transport.writeSomeData(data)
        if type(sent) is int:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)
