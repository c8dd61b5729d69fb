"""
A codec of your own: netstrings (b"5:hello,"), replies in request order.
The server is Twisted's NetstringReceiver, which knows nothing of
twisted_sockshare; the shared client pipelines 100 requests over one
connection to it.
"""

from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import react
from twisted.protocols.basic import NetstringReceiver

from twisted_sockshare import SockShareClientFactory
from twisted_sockshare.wire import RESPONSE


class NetstringDecoder:
    violation = None

    def __init__(self, maxPayload):
        self._buffer = b""
        self._maxPayload = maxPayload

    @property
    def buffered(self):
        return len(self._buffer)

    def feed(self, data):
        self._buffer += data
        replies = []
        while self.violation is None:
            length, colon, rest = self._buffer.partition(b":")
            if not colon:
                if len(length) > 10:
                    self.violation = "no length before ':'"
                break
            if not length.isdigit() or int(length) > self._maxPayload:
                self.violation = f"bad netstring length {length[:20]!r}"
                break
            size = int(length)
            if len(rest) < size + 1:
                break
            if rest[size : size + 1] != b",":
                self.violation = "netstring not ended by ','"
                break
            replies.append((-1, RESPONSE, rest[:size]))  # -1: the oldest request's reply
            self._buffer = rest[size + 1 :]
        return replies


class NetstringCodec:
    ordered = True  # replies come in request order, with no id

    def encodeRequest(self, requestId, payload):
        return b"%d:%s," % (len(payload), payload)

    def decoder(self, maxPayload):
        return NetstringDecoder(maxPayload)


class Shout(NetstringReceiver):
    def stringReceived(self, string):
        self.sendString(string.upper())


async def main(reactor):
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Shout))
    client = SockShareClientFactory(f"tcp:127.0.0.1:{port.getHost().port}", reactor, codec=NetstringCodec())
    replies = await gatherResults([client.request(b"hello %d" % i) for i in range(100)])
    print(replies[:2], "...", len(replies), "replies over", client.stats()["connectionsOpened"], "connection")
    await client.close()
    await port.stopListening()


react(main)
