"""
The engine behind C{sockshare bench} and C{sockshare demo}: a load
generator that drives the library's strategies (and other tools, for
reference) against a backend in its own process, and reports figures.
"""
