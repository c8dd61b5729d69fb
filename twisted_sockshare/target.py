"""
An endpoint of a balancer, as DNS SRV records describe it.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IStreamClientEndpoint


@dataclass(frozen=True)
class Target:
    """
    An endpoint with its SRV priority (lower first) and weight (a share of
    the requests within its priority).
    """

    endpoint: IStreamClientEndpoint | str
    priority: int = 0
    weight: int = 1


__all__ = ["Target"]
