# -*- test-case-name: tests.test_lifecycle_tables -*-
"""
Lifecycles as declared tables: for each (state, input) pair, the action that
runs and the state that follows.

A shared client (L{twisted_sockshare.SockShareClientFactory}) and each of its
connections (L{twisted_sockshare.SockShareClientProtocol}) go through their
lives by the rows of L{CLIENT} and L{CONNECTION}: an input is looked up here,
the action the row names runs, and a move to another state is checked
against the row.  An input a state does not declare raises
L{UndeclaredTransition}: nothing is silently ignored.  Which input an event
is (a request while connect attempts back off, say) is decided by the
caller, as Automat's callers choose among inputs.

C{python -m twisted_sockshare._lifecycle} prints the tables as
C{docs/sharing.rst} shows them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple


class UndeclaredTransition(RuntimeError):
    """
    An input reached a state whose lifecycle does not declare it, or an
    action moved to a state its row does not name: a bug in this package.
    """


class Transition(NamedTuple):
    """
    One row of a lifecycle.

    @ivar action: the name of the method that runs.
    @ivar next: the state that follows.
    @ivar says: what happens, in words.
    """

    action: str
    next: str
    says: str


class Lifecycle:
    """
    A declared table of (state, input) -> (action, next state).

    @ivar name: what lives it (for messages).
    @ivar states: the states, in order.
    @ivar inputs: the inputs, in order of their first row.
    """

    def __init__(self, name: str, states: Sequence[str], rows: Sequence[tuple[str, str, str, str, str]]) -> None:
        """
        @param rows: (state, input, action, next state, what happens) each.
        @raise ValueError: if a row names an unknown state or repeats a pair.
        """
        self.name = name
        self.states = tuple(states)
        self._rows: dict[tuple[str, str], Transition] = {}
        inputs: dict[str, None] = {}
        for state, input, action, next, says in rows:
            if state not in self.states or next not in self.states:
                raise ValueError(f"{name}: unknown state in row {(state, input, next)}")
            if (state, input) in self._rows:
                raise ValueError(f"{name}: ({state}, {input}) is declared twice")
            self._rows[state, input] = Transition(action, next, says)
            inputs[input] = None
        self.inputs = tuple(inputs)

    def step(self, state: str, input: str) -> Transition:
        """
        The row for C{input} in C{state}.

        @raise UndeclaredTransition: if the state does not accept the input.
        """
        try:
            return self._rows[state, input]
        except KeyError:
            raise UndeclaredTransition(f"{self.name}: {input!r} is not an input the state {state!r} accepts") from None

    def check(self, state: str, input: str, next: str) -> None:
        """
        Check that C{input} moves C{state} to C{next}.

        @raise UndeclaredTransition: if no row says so.
        """
        row = self.step(state, input)
        if row.next != next:
            raise UndeclaredTransition(f"{self.name}: {input!r} moves {state!r} to {row.next!r}, not {next!r}")

    def __iter__(self) -> Iterator[tuple[str, str, Transition]]:
        """
        Every row, by state then input, in the order declared.
        """
        for state in self.states:
            for input in self.inputs:
                row = self._rows.get((state, input))
                if row is not None:
                    yield state, input, row

    def asText(self) -> str:
        """
        The table as a reStructuredText C{list-table}.
        """
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 12 14 14 60",
            "",
            "   * - state",
            "     - input",
            "     - next",
            "     - what happens",
        ]
        for state, input, row in self:
            lines += [f"   * - {state}", f"     - {input}", f"     - {row.next}", f"     - {row.says}"]
        return "\n".join(lines) + "\n"


#: The shared client's life (L{twisted_sockshare.SockShareClientFactory}).
#: C{send} is a request with no usable connection at hand (the first one, a
#: resend, the end of a wait); C{sendBackingOff} the same while connect
#: attempts back off after failures; C{quiet} the pending count reaching
#: zero; C{idle} zero for C{idleTimeout}; C{unusable} the usable
#: connection leaving C{live}; C{drained} nothing pending and no connection
#: or attempt left.
CLIENT = Lifecycle(
    "client",
    ("idle", "connecting", "connected", "closing", "closed"),
    [
        ("idle", "send", "startAttempt", "connecting", "start one connect attempt; the request waits for it"),
        ("idle", "sendBackingOff", "failFast", "idle",
         "fail with ConnectFailed at once, or (waitForReady) wait for the end of the backoff"),
        ("idle", "quiet", "stopDeadlines", "idle", "stop the request-timeout timer"),
        ("idle", "close", "startClosing", "closing", "take no request; close() fires once all is gone"),
        ("connecting", "send", "queue", "connecting", "wait for the attempt, in order"),
        ("connecting", "sendBackingOff", "queue", "connecting", "wait for the attempt, in order"),
        ("connecting", "quiet", "keepConnecting", "connecting", "let the attempt finish: its connection lingers"),
        ("connecting", "connected", "useConnection", "connected", "write the waiting requests, in order"),
        ("connecting", "connectFailed", "failWaiting", "idle",
         "back off; the waiting requests fail with ConnectFailed (or wait for the next attempt)"),
        ("connecting", "close", "startClosing", "closing", "the attempt's requests are sent, then it retires"),
        ("connected", "quiet", "linger", "connected", "idle now (idleTimeout=0) or after idleTimeout, or never (None)"),
        ("connected", "idle", "closeConnection", "idle", "close the connection gracefully"),
        ("connected", "unusable", "forgetConnection", "idle", "the next request connects afresh"),
        ("connected", "close", "startClosing", "closing", "retire every connection"),
        ("closing", "send", "refuse", "closing", "fail with ClientClosed"),
        ("closing", "sendBackingOff", "refuse", "closing", "fail with ClientClosed"),
        ("closing", "quiet", "abandonAttempt", "closing", "cancel the attempt under way; drained when all is gone"),
        ("closing", "connected", "sendLast", "closing", "write the waiting requests, then retire the connection"),
        ("closing", "connectFailed", "failWaiting", "closing", "the waiting requests fail with ConnectFailed"),
        ("closing", "close", "addWaiter", "closing", "return a Deferred that fires when closed"),
        ("closing", "closeTimeout", "failPending", "closing",
         "fail what is pending with ClientClosed and abort every connection"),
        ("closing", "drained", "finishClosing", "closed", "fire every close() Deferred"),
        ("closed", "send", "refuse", "closed", "fail with ClientClosed"),
        ("closed", "sendBackingOff", "refuse", "closed", "fail with ClientClosed"),
        ("closed", "quiet", "stayClosed", "closed", "nothing: all is gone (a callback closed the client)"),
        ("closed", "close", "alreadyClosed", "closed", "return a fired Deferred"),
    ],
)  # fmt: skip

#: One connection's life (L{twisted_sockshare.connection.ConnectionState});
#: a connection never goes back.  C{lost} is C{connectionLost}.
CONNECTION = Lifecycle(
    "connection",
    ("live", "retiring", "closing", "lost"),
    [
        ("live", "retire", "stopTaking", "retiring",
         "take no new request; close once the ones here are answered"),
        ("live", "close", "closeGracefully", "closing",
         "the peer reads what is left; aborted after closeTimeout"),
        ("live", "abort", "abortNow", "closing", "abort the transport; the requests here fail"),
        ("live", "lost", "lose", "lost", "each request here fails (or is sent again)"),
        ("retiring", "retire", "ignore", "retiring", "nothing: already retiring"),
        ("retiring", "close", "closeGracefully", "closing",
         "the peer reads what is left; aborted after closeTimeout"),
        ("retiring", "abort", "abortNow", "closing", "abort the transport; the requests here fail"),
        ("retiring", "lost", "lose", "lost", "each request here fails (or is sent again)"),
        ("closing", "retire", "ignore", "closing", "nothing: already closing"),
        ("closing", "close", "ignore", "closing", "nothing: already closing"),
        ("closing", "abort", "abortTransport", "closing", "abort the graceful close under way"),
        ("closing", "lost", "lose", "lost", "each request here fails (or is sent again)"),
        ("lost", "retire", "ignore", "lost", "nothing: gone"),
        ("lost", "close", "ignore", "lost", "nothing: gone"),
        ("lost", "abort", "ignore", "lost", "nothing: gone"),
    ],
)  # fmt: skip


def main() -> None:
    """
    Print both tables, as C{docs/sharing.rst} shows them.
    """
    print(CLIENT.asText())
    print(CONNECTION.asText(), end="")


if __name__ == "__main__":
    main()
