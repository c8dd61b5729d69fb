# -*- test-case-name: tests.test_bench -*-
"""
The benchmark backend: the same echo service behind several servers, so
every contender is measured against the same work.

    - the sockshare wire format (L{SockShareServerFactory} with the demo
      handler, so C{!sleep} and C{!stats} work);
    - Twisted AMP, one C{Echo} command;
    - HTTP/1.1 (twisted.web), C{POST /} echoes its body;
    - for the server's own comparison, the sockshare wire format twice
      more: C{echo}, L{SockShareServerFactory} with its defaults and an
      identity handler, and C{minimal-server}, L{MinimalServerProtocol}, the
      simplest correct server a user could write instead of the library's.

Run as C{python -m twisted_sockshare.bench.backend [--delay S] [--cpu N] [--ports JSON]}:
it listens on loopback ports (ephemeral unless --ports gives them), prints them as one JSON line on
standard output, and runs until it is sent SIGTERM or its standard input
closes (so it never outlives the load generator).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any

from twisted.internet import stdio
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater, react
from twisted.protocols import amp
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..demo.backend import DemoBackend
from ..server import SockShareServerFactory
from ..wire import MAX_PING_PAYLOAD, MIN_LENGTH, PING, PONG, REQUEST, RESPONSE

#: The largest request the sockshare services take (their default).
MAX_PAYLOAD = 1_048_576


class Echo(amp.Command):
    """
    The AMP contender's only command: answer with the payload, after the
    backend's delay.
    """

    arguments = [(b"payload", amp.String())]
    response = [(b"payload", amp.String())]


class _EchoLocator(amp.CommandLocator):
    def __init__(self, reactor: IReactorTime, delay: float) -> None:
        self._reactor = reactor
        self._delay = delay

    @Echo.responder
    def echo(self, payload: bytes) -> Any:
        if self._delay:
            return deferLater(self._reactor, self._delay, lambda: {"payload": payload})
        return {"payload": payload}


class _EchoResource(Resource):
    """
    C{POST /}: the body back, as C{application/octet-stream}.
    """

    isLeaf = True

    def __init__(self, reactor: IReactorTime, delay: float) -> None:
        super().__init__()
        self._reactor = reactor
        self._delay = delay

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        body = request.content.read()
        request.setHeader(b"content-type", b"application/octet-stream")
        if not self._delay:
            return body

        def finish() -> None:
            request.write(body)
            request.finish()

        call = self._reactor.callLater(self._delay, finish)
        # A client gone before the delay is over gets nothing written.
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return NOT_DONE_YET


_HEADER = struct.Struct(">IIB")


class MinimalServerProtocol(Protocol):
    """
    The floor the library's server is measured against: the simplest
    I{correct} server of the wire format a user could write instead.

    It decodes every whole frame of a chunk, answers each REQUEST with its
    payload (after C{delay} seconds, if any) and each PING with a PONG,
    ignores the other kinds, keeps the bytes of an incomplete frame for the
    next chunk, and writes the replies a chunk produced with one
    C{transport.write}; a length outside the wire format's limits drops the
    connection.  No bound on what a client makes it hold, no timeouts, no
    counting, no wire version 3.
    """

    def __init__(self, reactor: IReactorTime, delay: float, maxPayload: int = 1_048_576) -> None:
        self._reactor = reactor
        self._delay = delay
        self._maxLength = maxPayload + MIN_LENGTH
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        data = self._buffer + data if self._buffer else data
        offset, end = 0, len(data)
        replies = []
        while end - offset >= 9:
            length, requestId, kind = _HEADER.unpack_from(data, offset)
            if not MIN_LENGTH <= length <= self._maxLength:
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            stop = offset + 4 + length
            if stop > end:
                break
            if kind == REQUEST:
                reply = _HEADER.pack(length, requestId, RESPONSE) + data[offset + 9 : stop]
                if self._delay:
                    self._reactor.callLater(self._delay, self._later, reply)
                else:
                    replies.append(reply)
            elif kind == PING and length - MIN_LENGTH <= MAX_PING_PAYLOAD:
                replies.append(_HEADER.pack(length, requestId, PONG) + data[offset + 9 : stop])
            offset = stop
        self._buffer = data[offset:]
        if replies:
            self.transport.write(b"".join(replies))  # type: ignore[union-attr]

    def _later(self, reply: bytes) -> None:
        if self.connected:
            self.transport.write(reply)  # type: ignore[union-attr]


def _identity(payload: bytes) -> bytes:
    return payload


def factories(reactor: IReactorTime, delay: float) -> dict[str, Any]:
    """
    The backend's services, by name: C{sockshare}, C{amp}, C{http}, and the
    servers compared side by side, C{echo} (the library's) and
    C{minimal-server}.
    """
    sockshare = SockShareServerFactory(DemoBackend(reactor, delay), maxPayload=MAX_PAYLOAD)
    sockshare.handler.stats = sockshare.stats  # type: ignore[attr-defined]
    site = Site(_EchoResource(reactor, delay))
    site.noisy = False
    echo = SockShareServerFactory(DemoBackend(reactor, delay) if delay else _identity)
    return {
        "sockshare": sockshare,
        "amp": Factory.forProtocol(lambda: amp.AMP(locator=_EchoLocator(reactor, delay))),
        "http": site,
        "echo": echo,
        "minimal-server": Factory.forProtocol(lambda: MinimalServerProtocol(reactor, delay)),
    }


async def listen(
    reactor: IReactorTCP, delay: float, interface: str = "127.0.0.1", ports: dict[str, int] | None = None
) -> dict[str, Any]:
    """
    Listen on a port for each service: the one C{ports} gives for it, or an
    ephemeral one.

    @return: C{{name: port}} of the listening ports (C{IListeningPort}).
    """
    listening = {}
    for name, factory in factories(reactor, delay).items():  # type: ignore[arg-type]
        factory.noisy = False
        number = (ports or {}).get(name, 0)
        listening[name] = await TCP4ServerEndpoint(reactor, number, backlog=1024, interface=interface).listen(factory)
    return listening


class _StopOnEOF(Protocol):
    def __init__(self, done: Deferred[None]) -> None:
        self._done = done

    def connectionLost(self, reason: object = None) -> None:
        if not self._done.called:
            self._done.callback(None)


async def main(reactor: Any, *argv: str) -> None:
    """
    C{python -m twisted_sockshare.bench.backend [--delay S] [--cpu N] [--ports JSON]}.
    """
    options = dict(zip(argv[::2], argv[1::2], strict=False))
    delay = float(options.get("--delay", "0"))
    if "--cpu" in options and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(options["--cpu"])})
    ports = await listen(reactor, delay, ports=json.loads(options.get("--ports", "{}")))
    print(json.dumps({name: port.getHost().port for name, port in ports.items()}), flush=True)
    done: Deferred[None] = Deferred()
    stdio.StandardIO(_StopOnEOF(done), reactor=reactor)
    await done
    for port in ports.values():
        await port.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
