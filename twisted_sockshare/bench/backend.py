# -*- test-case-name: tests.test_bench -*-
"""
The benchmark backend: the same echo service behind three protocols, so
every contender is measured against the same work.

    - the sockshare wire format (L{SockShareServerFactory} with the demo
      handler, so C{!sleep} and C{!stats} work);
    - Twisted AMP, one C{Echo} command;
    - HTTP/1.1 (twisted.web), C{POST /} echoes its body.

Run as C{python -m twisted_sockshare.bench.backend [--delay S] [--cpu N] [--ports JSON]}:
it listens on loopback ports (ephemeral unless --ports gives them), prints them as one JSON line on
standard output, and runs until it is sent SIGTERM or its standard input
closes (so it never outlives the load generator).
"""

from __future__ import annotations

import json
import os
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


def factories(reactor: IReactorTime, delay: float) -> dict[str, Any]:
    """
    The backend's three services, by protocol name: C{sockshare}, C{amp} and
    C{http}.
    """
    sockshare = SockShareServerFactory(DemoBackend(reactor, delay))
    sockshare.handler.stats = sockshare.stats  # type: ignore[attr-defined]
    site = Site(_EchoResource(reactor, delay))
    site.noisy = False
    return {
        "sockshare": sockshare,
        "amp": Factory.forProtocol(lambda: amp.AMP(locator=_EchoLocator(reactor, delay))),
        "http": site,
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
