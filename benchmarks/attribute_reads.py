"""
Why the shared client keeps fewer than 30 attributes of its own: the time
of four attribute reads and one write on an object with N attributes, for N
around the limit, on the Python that runs this.  CPython (3.11 to 3.13)
keeps up to 29 of an object's attributes in its fast layout; from 30 on,
every read is a dict lookup.

    python benchmarks/attribute_reads.py
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable


def hotMethod(attributes: int) -> Callable[[], int]:
    """
    The bound method of an object with C{attributes} attributes that reads
    four of them and writes one, as the client's request path does.
    """
    source = (
        "class Holder:\n    def __init__(self):\n"
        + "".join(f"        self.a{i} = 0\n" for i in range(attributes))
        + "    def hot(self):\n        self.a0 += 1\n        return self.a1 + self.a2 + self.a3\n"
    )
    namespace: dict[str, type] = {}
    exec(source, namespace)
    return namespace["Holder"]().hot  # type: ignore[attr-defined, no-any-return]


def main() -> None:
    print(f"Python {sys.version.split()[0]}")
    for attributes in (10, 28, 29, 30, 31, 42):
        method = hotMethod(attributes)
        best = min(timeit.repeat(method, number=1_000_000, repeat=5))
        print(f"{attributes:3} attributes: {best * 1000:5.1f} ns per call")


if __name__ == "__main__":
    main()
