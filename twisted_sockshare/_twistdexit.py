# -*- test-case-name: tests.test_twistdexit -*-
"""
How the demo servers exit 0 after a complete drain on SIGTERM.

A reactor that stops on SIGTERM or SIGINT remembers the signal
(C{ReactorBase._exitSignal}, Twisted's L{_ISupportsExitSignalCapturing}), and
C{twistd} re-raises it once the reactor has stopped, so the process ends by
that signal (status 143).  After a drain that answered every request the
stop was clean: forgetting the signal makes C{twistd} exit 0.  Twisted
offers no public way to say so; this module is the one place that uses the
attribute, and C{tests/test_twistdexit.py} fails loudly if Twisted changes it.
"""

from __future__ import annotations


def forgetExitSignal(reactor: object) -> None:
    """
    Make C{twistd} exit 0 rather than re-raise the signal that stopped
    C{reactor}; nothing if no signal did, or the reactor does not remember.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None  # type: ignore[attr-defined]
