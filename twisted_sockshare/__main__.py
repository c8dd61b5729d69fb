"""
C{python -m twisted_sockshare}: the C{sockshare} command.
"""

from .bench.cli import main

main()
