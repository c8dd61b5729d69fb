"""Sphinx configuration for twisted_sockshare's documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from twisted_sockshare import __version__  # noqa: E402

project = "twisted_sockshare"
author = "The twisted_sockshare developers"
copyright = "2026, " + author
version = release = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build", "examples"]
html_theme = "alabaster"
nitpicky = False

# Our docstrings are epytext, as in Twisted; turn their fields and markup into
# reStructuredText for autodoc.
import re  # noqa: E402

_FIELD = re.compile(r"^(\s*)@(param|type|return|rtype|raise|ivar|cvar|var)\b\s*([^:]*):")
_MARKUP = re.compile(r"([LCIB])\{([^{}]*)\}")
_ROLES = {"L": "``{}``", "C": "``{}``", "I": "*{}*", "B": "**{}**"}


def _epytextToRest(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        line = _FIELD.sub(lambda m: f"{m.group(1)}:{m.group(2)}{' ' + m.group(3) if m.group(3) else ''}:", line)
        lines[i] = _MARKUP.sub(lambda m: _ROLES[m.group(1)].format(m.group(2)), line)


def setup(app):
    app.connect("autodoc-process-docstring", _epytextToRest)
