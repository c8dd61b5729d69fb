"""
C{twistd sockshare-client}: see L{twisted_sockshare.demo.tap}.
"""

from .tap import ClientOptions as Options
from .tap import makeClientService as makeService

__all__ = ["Options", "makeService"]
