from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import react

from twisted_sockshare import SockShareClientFactory, SockShareServerFactory


async def main(reactor):
    backend = SockShareServerFactory(lambda payload: payload.upper())  # a demo backend
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(backend)
    client = SockShareClientFactory(f"tcp:127.0.0.1:{port.getHost().port}", reactor)
    replies = await gatherResults([client.request(b"hello %d" % i) for i in range(100)])
    print(replies[:3], "...", len(replies), "replies over", client.stats()["connectionsOpened"], "connection")
    await client.close()
    await port.stopListening()


react(main)
