"""How load-test failures are named, shared by the locust users, the runner and the CI smoke test.
Imports nothing of locust (importing locust monkey-patches the process with gevent)."""

from __future__ import annotations

#: Failures that mean "too much" (the edge shed the frame, its deadline could not be met, the
#: camera's window was full because the link or the edge is behind), not "you are wrong". They
#: are counted in locust's tables like any failure, but expected under load.
SHED_ERRORS = frozenset(
    {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "WINDOW_FULL", "HTTP 429", "HTTP 503"}
)
