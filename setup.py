"""
The package's metadata is in pyproject.toml; this file remains for tools
that still run setup.py.
"""

from setuptools import setup

setup()
