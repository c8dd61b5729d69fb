"""
An asyncio application using the shared client: Twisted runs on asyncio's
event loop (its asyncio reactor), and every Deferred the client returns
becomes an asyncio future with C{Deferred.asFuture}.  Cancelling the future
cancels the request: it fails alone, the backend is told (CANCEL), and the
connection stays shared.

    python docs/examples/asyncio_app.py
"""

import asyncio

from twisted.internet import asyncioreactor


async def main() -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import maybeDeferred
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.task import deferLater

    from twisted_sockshare import SockShareClientFactory, SockShareServerFactory

    loop = asyncio.get_running_loop()

    # A backend for the example to talk to: "slow" takes 10 s, the rest is echoed in capitals.
    def handler(payload: bytes):  # type: ignore[no-untyped-def]
        if payload == b"slow":
            return deferLater(reactor, 10, lambda: payload)
        return payload.upper()

    port = (
        await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        .listen(SockShareServerFactory(handler))
        .asFuture(loop)
    )

    client = SockShareClientFactory(f"tcp:127.0.0.1:{port.getHost().port}", reactor)
    replies = await asyncio.gather(*(client.request(b"hello %d" % i).asFuture(loop) for i in range(3)))
    print("replies:", [reply.decode() for reply in replies])

    slow = client.request(b"slow").asFuture(loop)
    try:
        await asyncio.wait_for(slow, timeout=0.2)  # cancels the future on timeout
    except TimeoutError:
        print("slow request cancelled after 0.2 s")
    after = await client.request(b"still shared").asFuture(loop)
    print("after cancelling:", after.decode())
    stats = client.stats()
    print(f"cancelled={stats['cancelled']} cancelsSent={stats['cancelsSent']} connections={stats['connectionsOpened']}")

    await client.close().asFuture(loop)
    await maybeDeferred(port.stopListening).asFuture(loop)


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    loop.run_until_complete(main())
