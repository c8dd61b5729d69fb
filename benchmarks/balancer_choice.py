"""
What a balancer's choice of endpoint costs per request, by membership size:
the first choice while every endpoint is up (running weights, binary
searches) beside the full choice (a scan of the endpoints that are up).

    python benchmarks/balancer_choice.py
"""

from __future__ import annotations

import timeit

from twisted.internet.task import Clock

from twisted_sockshare import SockShareBalancer


def perChoice(balancer: SockShareBalancer) -> tuple[float, float]:
    """
    Microseconds per first choice and per full choice.
    """

    def first() -> object:
        return balancer._firstChoice(0.0)

    def full() -> object:
        return balancer._choose(balancer._available(set()), 0.0)

    fast, slow = (min(timeit.repeat(choice, number=20_000, repeat=5)) / 20_000 * 1e6 for choice in (first, full))
    return fast, slow


def main() -> None:
    for size in (3, 30, 300):
        times = perChoice(SockShareBalancer([f"tcp:127.0.0.1:{9000 + i}" for i in range(size)], Clock()))
        print(f"{size:4} endpoints: first choice {times[0]:6.2f} us, full choice {times[1]:7.2f} us")


if __name__ == "__main__":
    main()
