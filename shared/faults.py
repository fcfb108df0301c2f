"""Named crash points for tests that must kill a process at one precise instant.

A process started with ``EXCHANGE_CRASH_AT=<name>`` sends itself SIGKILL when it reaches
that point, the way a power cut or OOM kill would. Unset, each check is one comparison.
"""

import os
import signal

_CRASH_AT = os.environ.get("EXCHANGE_CRASH_AT", "")


def crash_point(name: str) -> None:
    """Die at once with SIGKILL if this process was told to crash here."""
    if _CRASH_AT and name == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
