"""Shared test configuration.

Hypothesis runs derandomized: every run explores the same examples, so a
failure reproduces on any machine, and its falsifying example (with the
``@reproduce_failure`` blob) is printed. Set ``HYPOTHESIS_PROFILE=explore``
to search fresh random examples, and pass ``--hypothesis-seed`` to replay one.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    print_blob=True,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "explore",
    deadline=None,
    print_blob=True,
    max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
