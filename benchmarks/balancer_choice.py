"""
What a balancer's choice of endpoint costs per request, by membership size:
the first choice while every endpoint is up (running weights, binary
searches) beside the full choice (a scan of the endpoints that are up).

    python benchmarks/balancer_choice.py
"""

from __future__ import annotations

import random
import timeit

from twisted.internet.task import Clock

from twisted_sockshare._membership import Membership
from twisted_sockshare.target import Target


def perChoice(membership: Membership) -> tuple[float, float]:
    """
    Microseconds per first choice and per full choice.
    """

    def first() -> object:
        return membership.firstChoice(0.0)

    def full() -> object:
        return membership.choose(membership.available(set()), 0.0)

    fast, slow = (min(timeit.repeat(choice, number=20_000, repeat=5)) / 20_000 * 1e6 for choice in (first, full))
    return fast, slow


def main() -> None:
    for size in (3, 30, 300):
        membership = Membership(Clock(), {}, random.random, 0.5, 30.0)
        membership.replace([Target(f"tcp:127.0.0.1:{9000 + i}") for i in range(size)])
        times = perChoice(membership)
        print(f"{size:4} endpoints: first choice {times[0]:6.2f} us, full choice {times[1]:7.2f} us")


if __name__ == "__main__":
    main()
