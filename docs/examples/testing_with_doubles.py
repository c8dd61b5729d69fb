"""
Testing your own code against twisted_sockshare with no sockets and no real
time: the code under test takes any ISockShareClient.
"""

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

from twisted_sockshare.interfaces import ISockShareClient
from twisted_sockshare.testing import MemoryBackend, StubSockShareClient


async def greet(client: ISockShareClient, name: str) -> str:
    """The application code under test: one request per call."""
    reply = await client.request(b"HELLO " + name.encode())
    return reply.decode()


# 1. A stub answered by a handler, at once.
stub = StubSockShareClient(bytes.lower)
result = ensureDeferred(greet(stub, "Ada"))
print("stub:", result.result, stub.requests)

# 2. The real client and a real server, in memory, on a fake clock.
backend = MemoryBackend(lambda payload: deferLater(backend.clock, 2.0, payload.title))
client = backend.client(requestTimeout=5)
replies: list[Deferred[str]] = [ensureDeferred(greet(client, name)) for name in ("ada", "grace")]
backend.flush()  # the requests reach the server; its handler waits 2 s
backend.clock.advance(2.0)
backend.flush()  # the replies come back
print("memory:", [d.result for d in replies], "over", backend.serverFactory.stats()["connectionsOpened"], "connection")
