"""
L{twisted_sockshare._twistdexit}: the one use of Twisted's private
C{_exitSignal}, and a check that fails loudly if Twisted changes it.
"""

from __future__ import annotations

import inspect
import signal

from twisted.application import app
from twisted.internet.base import ReactorBase
from twisted.internet.testing import MemoryReactor
from twisted.scripts import twistd
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare._twistdexit import forgetExitSignal


class TwistedStillWorksThisWayTests(SynchronousTestCase):
    """
    What the shim relies on in Twisted: if one of these fails, Twisted
    changed how twistd reports the signal that stopped it, and the demo's
    "exit 0 after a complete drain" must be done another way.
    """

    def test_reactorRemembersTheSignal(self) -> None:
        """A reactor stopped by SIGTERM remembers it in _exitSignal."""
        self.assertIn("_exitSignal", vars(ReactorBase))
        self.assertIsNone(ReactorBase._exitSignal)
        self.assertIn("self._exitSignal = number", inspect.getsource(ReactorBase))

    def test_twistdReraisesIt(self) -> None:
        """twistd re-raises the remembered signal after the reactor stops."""
        self.assertIn("_exitSignal", inspect.getsource(twistd.runApp))
        self.assertIn("reactor._exitSignal", inspect.getsource(app.ApplicationRunner))


class ForgetExitSignalTests(SynchronousTestCase):
    def test_forgets(self) -> None:
        """A remembered signal is forgotten: twistd then exits 0."""
        reactor = MemoryReactor()
        reactor._exitSignal = signal.SIGTERM  # type: ignore[attr-defined]
        forgetExitSignal(reactor)
        self.assertIsNone(reactor._exitSignal)  # type: ignore[attr-defined]

    def test_nothingToForget(self) -> None:
        """A reactor without the attribute, or with none remembered, is left alone."""
        reactor = MemoryReactor()
        forgetExitSignal(reactor)
        self.assertFalse(hasattr(reactor, "_exitSignal"))
