"""
The request object: one per request, kept small.
"""

from __future__ import annotations

import gc
import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import SockShareClientFactory
from twisted_sockshare._request import _Request

from .helpers import FakeEndpoint


def _hasOwnDict(cls: type[Deferred[bytes]]) -> bool:
    """
    Make many instances of C{cls}, fire them all (which gives each a new
    attribute, C{result}), then whether one more, fired, carries a dict of
    its own.
    """
    flood = [cls() for _ in range(300)]
    for d in flood:
        d.addBoth(lambda result: None)
        d.callback(b"")
    last = cls()
    last.addBoth(lambda result: None)
    last.callback(b"")
    return any(isinstance(referent, dict) for referent in gc.get_referents(last))


class _PlainRequest(Deferred[bytes]):
    """A Deferred subclass made the naive way, to show the effect is real."""


def _ownDict(request: object) -> bool:
    return any(isinstance(referent, dict) for referent in gc.get_referents(request))


class SharedKeysTests(SynchronousTestCase):
    def test_noDictPerRequest(self) -> None:
        """After a flood of fired requests, a request still shares its class's instance keys (no dict of its own)."""
        if sys.version_info < (3, 14):
            # Where CPython has the effect (3.11 to 3.13, checked), prove the
            # check sees it.
            self.assertTrue(_hasOwnDict(_PlainRequest))
        self.assertFalse(_hasOwnDict(_Request))

    def test_noDictPerClientRequest(self) -> None:
        """
        The same for requests made and answered by a client, which sets a
        request's own attributes in its own order: none has a dict of its
        own, before or after it is answered.
        """
        client = SockShareClientFactory(FakeEndpoint(), Clock())  # type: ignore[arg-type]
        waiting = client.request(b"first")
        attempt = client._endpoint.last  # type: ignore[attr-defined]
        attempt.succeed()
        flood = [client.request(b"x") for _ in range(300)]
        self.assertEqual([_ownDict(request) for request in [waiting, *flood] if _ownDict(request)], [])
        for requestId in range(301):
            attempt.respond(requestId, b"ok")
        last = client.request(b"last")
        self.assertFalse(_ownDict(last))
        attempt.respond(301, b"ok")
        self.assertEqual(self.successResultOf(last), b"ok")
        self.assertFalse(_ownDict(last))
        self.assertFalse(any(_ownDict(request) for request in flood))
