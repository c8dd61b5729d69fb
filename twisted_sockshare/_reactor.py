"""
The one place that reaches for the global reactor, and only when a caller
gave none: every public class takes its reactor (or clock) as an argument.
"""

from __future__ import annotations

from typing import Any


def maybeGlobalReactor(reactor: Any) -> Any:
    """
    @param reactor: the reactor (or clock) a caller passed, or L{None}.
    @return: C{reactor}, or the global reactor if it is L{None}, imported
        only then, so importing this package never installs a reactor.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor
