"""
The tests of twisted_sockshare.

Hypothesis runs under one of two profiles, chosen with the environment
variable C{SOCKSHARE_HYPOTHESIS}:

    - C{ci} (the default): a fixed, wide set of examples, derandomized, so
      every run of the suite checks the same cases and passes or fails alike;
    - C{search}: the broad random search, many more examples with fresh
      randomness each run, run on purpose (see the README).

Neither keeps an example database, and Hypothesis's own caches go to the
system's temporary directory, never into the working tree.
"""

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "sockshare-hypothesis"))

_COMMON = {"database": None, "deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, max_examples=300, **_COMMON)
settings.register_profile("search", derandomize=False, max_examples=5_000, **_COMMON)
settings.load_profile(os.environ.get("SOCKSHARE_HYPOTHESIS", "ci"))
