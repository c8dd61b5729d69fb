"""
The package's folders show its architecture, and this keeps them honest:
the library imports only Twisted (with zope.interface) and itself; the demo
application and the benchmark sit on top of it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import twisted_sockshare

PACKAGE = Path(twisted_sockshare.__file__).parent
#: What the library may import besides the standard library and itself
#: (pyOpenSSL only to recognise TLS errors, when TLS is in use).
ALLOWED = {"twisted", "zope", "OpenSSL"}
#: Modules that exist for a third-party package, importable when it is installed.
OPTIONAL = {"metrics.py": {"prometheus_client"}}


def importsOf(path: Path) -> set[str]:
    """
    The modules a file imports, relative ones as C{.name} or C{..name}.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                names.update("." * node.level + (module or alias.name) for alias in node.names)
            else:
                names.add(module)
    return names


class LayoutTests(SynchronousTestCase):
    def test_libraryImportsOnlyTwistedAndItself(self) -> None:
        """No library module imports the demo, the benchmark, or a third-party package but Twisted's."""
        library = [path for path in PACKAGE.glob("*.py") if path.name != "__main__.py"]
        self.assertIn("client.py", {path.name for path in library})
        for path in library:
            for name in importsOf(path):
                top = name.lstrip(".").split(".")[0]
                if name.startswith("."):
                    self.assertNotIn(top, {"demo", "bench"}, (path.name, name))
                elif top != "twisted_sockshare":
                    allowed = ALLOWED | OPTIONAL.get(path.name, set())
                    self.assertTrue(top in allowed or top in sys.stdlib_module_names, (path.name, name))
                else:
                    self.assertNotRegex(name, r"^twisted_sockshare\.(demo|bench)\b", path.name)

    def test_demoDoesNotImportBenchmark(self) -> None:
        """The demo application uses the library, never the benchmark."""
        for path in (PACKAGE / "demo").glob("*.py"):
            for name in importsOf(path):
                self.assertNotRegex(name, r"^(\.\.bench|twisted_sockshare\.bench)\b", path.name)

    def test_checkCanFail(self) -> None:
        """The import scanner sees relative and absolute imports."""
        self.assertIn("..demo.convert", importsOf(PACKAGE / "bench" / "cli.py"))
        self.assertIn("twisted.internet.defer", importsOf(PACKAGE / "client.py"))


class DocsTests(SynchronousTestCase):
    def test_sharingDiagramNamesTheCodesStates(self) -> None:
        """docs/sharing.rst draws every state the client and the connection have, by the code's names."""
        from twisted_sockshare import _states as client
        from twisted_sockshare.connection import ConnectionState

        text = (PACKAGE.parent / "docs" / "sharing.rst").read_text()
        diagrams = " ".join("".join(text.split("::\n")[1:3]).split())
        # The client's states are the small slotted classes _states.py defines.
        states = [
            name[1:]
            for name, value in vars(client).items()
            if isinstance(value, type) and value.__module__ == client.__name__ and "__slots__" in vars(value)
        ]
        self.assertEqual(sorted(states), ["Closed", "Closing", "Connected", "Connecting", "Idle"])
        for name in states:
            self.assertIn(f"| {name} |", diagrams)
        for state in ConnectionState:
            self.assertIn(f"| {state.name} |", diagrams)
