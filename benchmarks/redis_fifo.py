"""
The FIFO codec against redis-server: C{--callers} concurrent callers share
one connection for C{--duration} seconds, each incrementing its own key, so
every reply can be checked against what that caller expects.  Prints
requests/s, the connections opened and any error.

    python benchmarks/redis_fifo.py [--callers 100] [--duration 5]

(Needs redis-server on PATH: apt-get install redis-server.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python.failure import Failure

from twisted_sockshare import SockShareClientFactory
from twisted_sockshare.codecs import Delimited


async def drive(reactor: object, endpoint: str, callers: int, duration: float) -> None:
    client = SockShareClientFactory(endpoint, reactor, codec=Delimited(errorPrefix=b"-"))  # type: ignore[arg-type]
    await client.request(b"FLUSHALL")
    counts = [0] * callers
    outcomes: Counter[str] = Counter()
    done: Deferred[None] = Deferred()
    deadline = time.perf_counter() + duration
    active = callers

    def send(caller: int) -> None:
        client.request(b"INCR caller%d" % caller).addBoth(answered, caller)

    def answered(result: object, caller: int) -> None:
        nonlocal active
        if isinstance(result, Failure):
            outcomes[type(result.value).__name__] += 1
        else:
            counts[caller] += 1
            outcomes["ok" if result == b":%d" % counts[caller] else "WrongReply"] += 1
        if time.perf_counter() < deadline:
            send(caller)
        else:
            active -= 1
            if not active:
                done.callback(None)

    start = time.perf_counter()
    for caller in range(callers):
        send(caller)
    await done
    elapsed = time.perf_counter() - start
    stats = client.stats()
    total = sum(outcomes.values())
    print(
        f"{callers} callers, {elapsed:.1f} s: {total:,} requests, {total / elapsed:,.0f} requests/s, "
        f"{stats['connectionsOpened']} connection(s) opened, peak pending {stats['peakPending']}, "
        f"outcomes {dict(outcomes)}"
    )
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not on PATH: apt-get install redis-server")
    directory = tempfile.mkdtemp(prefix="sockshare-redis-")
    socket = os.path.join(directory, "redis.sock")
    argv = [server, "--port", "0", "--unixsocket", socket, "--save", "", "--appendonly", "no", "--dir", directory]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        while not os.path.exists(socket):
            time.sleep(0.05)
        print(subprocess.run([server, "--version"], capture_output=True, text=True).stdout.strip())
        react(drive, (f"unix:{socket}", args.callers, args.duration))
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(directory, True)


if __name__ == "__main__":
    main()
