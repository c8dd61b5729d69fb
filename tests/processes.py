"""
Run the twistd plugins as real processes on ephemeral loopback ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.task import deferLater

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Twistd:
    """
    One C{twistd -n PLUGIN} process; its port is read from C{--port-file}.
    """

    def __init__(self, plugin: str, *args: str) -> None:
        self.directory = tempfile.mkdtemp(prefix="sockshare-")
        self.portFile = os.path.join(self.directory, "port")
        self.logFile = os.path.join(self.directory, "twistd.log")
        env = dict(os.environ)
        # Make the dropin in ./twisted/plugins visible whatever the install mode.
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        twistd = "from twisted.scripts.twistd import run; run()"
        command = [sys.executable, "-c", twistd, "-n", "--pidfile=", "--logfile", self.logFile]
        self.process = subprocess.Popen(
            [*command, plugin, "--port-file", self.portFile, *args],
            env=env,
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.port = 0

    async def started(self, timeout: float = 20.0) -> int:
        for _ in range(int(timeout / 0.05)):
            if os.path.exists(self.portFile):
                with open(self.portFile) as f:
                    self.port = int(f.read())
                return self.port
            if self.process.poll() is not None:
                raise AssertionError(f"twistd exited with {self.process.returncode}:\n{self.log()}")
            await deferLater(reactor, 0.05)
        raise AssertionError(f"twistd did not start:\n{self.log()}")

    async def exited(self, timeout: float = 20.0) -> int:
        for _ in range(int(timeout / 0.05)):
            if self.process.poll() is not None:
                return self.process.returncode
            await deferLater(reactor, 0.05)
        raise AssertionError(f"twistd did not exit:\n{self.log()}")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """
        Stop the process if it still runs, and remove its files.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(self.logFile) as f:
                return f.read()[-4000:]
        except OSError:
            return "(no log)"
