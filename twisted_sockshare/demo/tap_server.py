"""
C{twistd sockshare-server}: see L{twisted_sockshare.demo.tap}.
"""

from .tap import ServerOptions as Options
from .tap import makeServerService as makeService

__all__ = ["Options", "makeService"]
