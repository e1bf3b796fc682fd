"""What every fuzzer here shares: hypothesis settings scaled by the active profile, and a bound on a case's time."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, settings

SCALE = settings.default.max_examples / 100  # the long profile raises max_examples, and every count with it
QUICK = settings(deadline=None, suppress_health_check=list(HealthCheck))


def examples(n: int) -> settings:
    """`n` cases in the default profile (at least one), scaled with the profile's max_examples."""
    return settings(QUICK, max_examples=max(1, int(n * SCALE)))


@contextmanager
def bounded(seconds: int) -> Iterator[None]:
    """Fail the case, rather than the suite, if it does not finish in `seconds` (far above any case's time)."""
    def hang(signum, frame):
        raise TimeoutError(f"a case took over {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
