"""
A codec of your own for a protocol with a small id space: DNS over TCP
(RFC 1035 section 4.2.2, pipelined as RFC 7766 allows).  Each message is a
2-byte length, then a DNS message whose first 2 bytes are its id: the
request id, so replies may come in any order.  maxRequestId tells the
client that ids are 16 bits: it never has two requests with one id on a
connection, and opens a fresh connection when all 65,536 are held.

The server is Twisted's own DNS server (twisted.names), which knows nothing
of twisted_sockshare; the tests also run this codec against dnsmasq.
"""

import struct

from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import react
from twisted.names import authority, dns, server

from twisted_sockshare import SockShareClientFactory
from twisted_sockshare.codecs import LengthPrefixed


class DNSDecoder:
    """The shipped 2-byte length-prefixed decoder; each message's id is its request's."""

    def __init__(self, maxPayload):
        self._messages = LengthPrefixed(width=2).decoder(maxPayload)
        self._short = None

    @property
    def violation(self):
        return self._short or self._messages.violation

    @property
    def buffered(self):
        return self._messages.buffered

    def feed(self, data):
        replies = []
        for _, kind, message in self._messages.feed(data):
            if len(message) < 12:
                self._short = f"a DNS message of {len(message)} bytes"
                break
            (requestId,) = struct.unpack_from("!H", message)
            replies.append((requestId, kind, message))
        return replies


class DNSCodec:
    ordered = False  # each reply carries its request's id
    maxRequestId = 0xFFFF  # a DNS id is 16 bits

    def encodeRequest(self, requestId, payload):
        # payload: a DNS message; its id is replaced by the request id.
        return struct.pack("!HH", len(payload), requestId) + payload[2:]

    def decoder(self, maxPayload):
        return DNSDecoder(maxPayload)


class Zone(authority.FileAuthority):
    """An authority for the records given, rather than read from a file."""

    def loadFile(self, records):
        self.soa = records[0]
        self.records = {}
        for name, record in records:
            self.records.setdefault(dns.domainString(name).lower(), []).append(record)


def query(name, recordType=dns.A):
    """The bytes of a DNS query for name (its id is set by the codec)."""
    message = dns.Message(recDes=1)
    message.queries = [dns.Query(name, recordType)]
    return message.toStr()


def answerName(reply):
    """The name the first answer of a DNS reply is for."""
    message = dns.Message()
    message.fromStr(reply)
    return message.answers[0].name.name.decode()


async def main(reactor):
    zone = Zone([
        ("example.test", dns.Record_SOA(mname="ns.example.test", rname="root.example.test")),
        *[(f"host{i}.example.test", dns.Record_A(f"10.0.0.{i}")) for i in range(100)],
    ])  # fmt: skip
    names = server.DNSServerFactory(authorities=[zone])
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(names)
    client = SockShareClientFactory(f"tcp:127.0.0.1:{port.getHost().port}", reactor, codec=DNSCodec())
    replies = await gatherResults([client.request(query(f"host{i}.example.test")) for i in range(100)])
    print([answerName(reply) for reply in replies[:2]], "...", len(replies), "answers over",
          client.stats()["connectionsOpened"], "connection")  # fmt: skip
    await client.close()
    await port.stopListening()


if __name__ == "__main__":
    react(main)
