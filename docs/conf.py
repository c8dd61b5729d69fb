"""Sphinx configuration for twisted_sockshare's documentation."""

import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from twisted_sockshare import __version__  # noqa: E402

project = "twisted_sockshare"
author = "The twisted_sockshare developers"
copyright = "2026, " + author
version = release = __version__

extensions = ["sphinx.ext.intersphinx", "pydoctor.sphinx_ext.build_apidocs"]
exclude_patterns = ["_build", "examples"]
html_theme = "alabaster"
nitpicky = False
intersphinx_mapping: dict = {}

# The API reference is generated from the docstrings (epytext, as in Twisted)
# by pydoctor, as Twisted's own documentation is, into api/ of the HTML
# output; its inventory lets the narrative pages link to it.
pydoctor_args = [
    "--quiet",
    "--project-name=twisted_sockshare",
    f"--project-version={version}",
    "--docformat=epytext",
    f"--project-base-dir={_ROOT}",
    "--html-output={outdir}/api",
    str(_ROOT / "twisted_sockshare"),
]
pydoctor_url_path = "api/"
