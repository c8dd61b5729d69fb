"""
One slow request among 1,000 fast ones on one shared connection: with
request timeouts that reset the connection (resetOnTimeout=True, the 0.1.0
default), the fast requests in flight when the slow one times out fail with
it; with the default (CANCEL), only the slow one fails.

    python benchmarks/slow_among_fast.py
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater, react

from twisted_sockshare import SockShareClientFactory, SockShareServerFactory


async def run(reactor: object, resetOnTimeout: bool | None) -> Counter[str]:
    def handler(payload: bytes) -> bytes | Deferred[bytes]:
        if payload == b"slow":
            return deferLater(reactor, 3.0, lambda: payload)  # type: ignore[arg-type]
        return deferLater(reactor, 0.2, lambda: payload)  # type: ignore[arg-type]

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(SockShareServerFactory(handler))
    client = SockShareClientFactory(
        f"tcp:127.0.0.1:{port.getHost().port}", reactor, requestTimeout=1.0, resetOnTimeout=resetOnTimeout
    )
    seen: Counter[str] = Counter()

    def record(result: object, name: str) -> None:
        seen[name + (": ok" if isinstance(result, bytes) else ": " + type(result.value).__name__)] += 1  # type: ignore[attr-defined]

    requests = [client.request(b"slow").addBoth(record, "slow")]
    for _batch in range(40):  # 1,000 fast requests, 25 every 50 ms: some are in flight at any moment
        requests += [client.request(b"fast").addBoth(record, "fast") for _ in range(25)]
        await deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
    await gatherResults(requests)
    await client.close()
    await port.stopListening()
    return seen


async def main(reactor: object) -> None:
    for reset in (True, None):
        seen = await run(reactor, reset)
        print(f"resetOnTimeout={reset!s:5}: {dict(sorted(seen.items()))}")


if __name__ == "__main__":
    react(main)
