"""
The request object: one per request, kept small.
"""

from __future__ import annotations

import gc
import sys

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare._request import _Request


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


class SharedKeysTests(SynchronousTestCase):
    def test_noDictPerRequest(self) -> None:
        """After a flood of fired requests, a request still shares its class's instance keys (no dict of its own)."""
        if sys.version_info < (3, 13):
            # Where CPython has the effect, prove the check sees it.
            self.assertTrue(_hasOwnDict(_PlainRequest))
        self.assertFalse(_hasOwnDict(_Request))
