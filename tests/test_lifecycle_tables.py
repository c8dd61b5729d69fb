"""
The declared lifecycles (twisted_sockshare._lifecycle): the client and each
connection move only by the rows of their table, an undeclared input raises,
and docs/sharing.rst shows the tables the code runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_sockshare import SockShareClientFactory, SockShareClientProtocol
from twisted_sockshare._lifecycle import CLIENT, CONNECTION, Lifecycle, UndeclaredTransition
from twisted_sockshare.connection import ConnectionState

from .helpers import ClientTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "twisted_sockshare"


class LifecycleTests(SynchronousTestCase):
    """
    The table itself.
    """

    def setUp(self) -> None:
        self.life = Lifecycle("door", ("open", "shut"), [("open", "push", "swing", "shut", "it shuts")])

    def test_step(self) -> None:
        """A declared pair gives its row."""
        self.assertEqual(self.life.step("open", "push"), ("swing", "shut", "it shuts"))

    def test_undeclaredInputRaises(self) -> None:
        """An input the state does not declare raises, naming both."""
        error = self.assertRaises(UndeclaredTransition, self.life.step, "shut", "push")
        self.assertEqual(str(error), "door: 'push' is not an input the state 'shut' accepts")

    def test_checkNext(self) -> None:
        """A move to a state the row does not name raises."""
        self.life.check("open", "push", "shut")
        self.assertRaises(UndeclaredTransition, self.life.check, "open", "push", "open")

    def test_badRows(self) -> None:
        """Unknown states and repeated pairs are refused when the table is made."""
        self.assertRaises(ValueError, Lifecycle, "x", ("a",), [("a", "i", "f", "b", "")])
        self.assertRaises(ValueError, Lifecycle, "x", ("a",), [("a", "i", "f", "a", ""), ("a", "i", "g", "a", "")])

    def test_actionsExist(self) -> None:
        """Every action a table names is a method of what lives it."""
        for table, cls in ((CLIENT, SockShareClientFactory), (CONNECTION, SockShareClientProtocol)):
            for state, input, row in table:
                self.assertTrue(callable(getattr(cls, "_" + row.action, None)), (table.name, state, input, row))

    def test_connectionStatesAreTheEnum(self) -> None:
        """The connection's table has the states of ConnectionState, in order."""
        self.assertEqual(CONNECTION.states, tuple(state.value for state in ConnectionState))

    def test_everyStateReachedAndLeft(self) -> None:
        """Every state but the last is left by some input and reached by some other state's."""
        for table in (CLIENT, CONNECTION):
            moves = {(state, row.next) for state, _, row in table if state != row.next}
            for state in table.states[1:]:
                self.assertIn(state, {after for _, after in moves}, table.name)
            for state in table.states[:-1]:
                self.assertIn(state, {before for before, _ in moves}, table.name)

    def test_docsShowTheTables(self) -> None:
        """docs/sharing.rst shows the tables the code runs (python -m twisted_sockshare._lifecycle)."""
        docs = (ROOT / "docs" / "sharing.rst").read_text()
        self.assertIn(CLIENT.asText(), docs)
        self.assertIn(CONNECTION.asText(), docs)

    def test_onlyMoveToAssignsTheState(self) -> None:
        """
        The client's state and a connection's are assigned in one method
        each (_moveTo, which checks the row), besides the first assignment.
        """
        for module, target in (("client.py", "_state"), ("connection.py", "state")):
            tree = ast.parse((PACKAGE / module).read_text())
            for function in ast.walk(tree):
                if not isinstance(function, ast.FunctionDef):
                    continue
                for node in ast.walk(function):
                    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                        for each in targets:
                            if (
                                isinstance(each, ast.Attribute)
                                and each.attr == target
                                and isinstance(each.value, ast.Name)
                                and each.value.id == "self"
                            ):
                                self.assertIn(function.name, ("_moveTo", "__init__"), (module, node.lineno))


class ClientLifecycleTests(ClientTestCase):
    """
    A client goes through the rows of CLIENT, and nothing else.
    """

    def test_walk(self) -> None:
        """Idle, connecting, connected, idle again, closing, closed: as the rows say."""
        client = self.makeClient(idleTimeout=0)
        names = [client._state.name]
        client.request(b"x")
        names.append(client._state.name)
        attempt = self.endpoint.last
        attempt.succeed()
        names.append(client._state.name)
        ((requestId, _),) = attempt.sentRequests()
        attempt.respond(requestId, b"y")
        names.append(client._state.name)
        closed = client.close()
        names.append(client._state.name)
        attempt.lose()
        names.append(client._state.name)
        self.assertEqual(names, ["idle", "connecting", "connected", "idle", "closing", "closed"])
        self.assertIsNone(self.successResultOf(closed))

    def test_undeclaredInputRaises(self) -> None:
        """
        An input the state does not accept raises rather than being ignored:
        a connected client is never sent a request through "send" (it writes
        at once), and a client that is not connecting has no attempt to end.
        """
        client = self.makeClient()
        client.request(b"x").addErrback(lambda _: None)
        attempt = self.endpoint.last
        protocol, _ = attempt.succeed()
        self.assertRaises(UndeclaredTransition, client._on, "send", None)
        client.close()
        attempt.lose()
        self.assertEqual(client._state.name, "closed")
        self.assertRaises(UndeclaredTransition, client._on, "connected", protocol, None)
        self.assertRaises(UndeclaredTransition, client._on, "closeTimeout")

    def test_closeFromEveryState(self) -> None:
        """close() is an input of every state, and calling it again is harmless."""
        for steps in (0, 1, 2):
            client = self.makeClient()
            if steps:
                client.request(b"x").addErrback(lambda _: None)
            if steps == 2:
                self.endpoint.last.succeed()
            before = client._state.name
            first, second = client.close(), client.close()
            self.assertIn((before, "close"), {(state, input) for state, input, _ in CLIENT})
            self.clock.advance(client.closeTimeout)
            if steps == 2:
                self.endpoint.last.lose()
            self.assertIsNone(self.successResultOf(first))
            self.assertIsNone(self.successResultOf(second))
            self.assertIsNone(self.successResultOf(client.close()))


class ConnectionLifecycleTests(ClientTestCase):
    """
    A connection goes through the rows of CONNECTION, and nothing else.
    """

    def test_lostTwiceRaises(self) -> None:
        """connectionLost on a lost connection is an undeclared input: it raises."""
        client = self.makeClient()
        client.request(b"x").addErrback(lambda _: None)
        protocol, _ = self.endpoint.last.succeed()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIs(protocol.state, ConnectionState.LOST)
        self.assertRaises(UndeclaredTransition, protocol.connectionLost, Failure(ConnectionDone()))

    def test_declaredNoOps(self) -> None:
        """retire, close and abort of a connection already gone are declared: they do nothing."""
        client = self.makeClient()
        client.request(b"x").addErrback(lambda _: None)
        protocol, transport = self.endpoint.last.succeed()
        protocol.retire()
        self.assertIs(protocol.state, ConnectionState.RETIRING)
        protocol.retire()
        protocol.abort()
        self.assertIs(protocol.state, ConnectionState.CLOSING)
        self.assertTrue(transport.aborted)
        protocol.close()
        self.assertIs(protocol.state, ConnectionState.CLOSING)
        protocol.connectionLost(Failure(ConnectionDone()))
        for input in (protocol.retire, protocol.close, protocol.abort):
            input()
            self.assertIs(protocol.state, ConnectionState.LOST)
