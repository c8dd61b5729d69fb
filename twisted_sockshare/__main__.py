"""
C{python -m twisted_sockshare}: the C{sockshare} command.
"""

from .cli import main

main()
