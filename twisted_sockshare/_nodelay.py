"""
Turning Nagle's algorithm off where there is one.
"""

from __future__ import annotations


def setNoDelay(transport: object) -> None:
    """
    Send small frames at once (C{TCP_NODELAY}) if C{transport} is TCP.  A
    transport with no such option is left alone: a UNIX socket has none,
    and on Twisted 23.10 its C{setTcpNoDelay} raises C{OSError} (EOPNOTSUPP)
    rather than being absent.
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is None:
        return
    try:
        setTcpNoDelay(True)
    except OSError:
        pass
