"""Facts about this process that jobs report in their runtime metrics."""

from __future__ import annotations

import resource


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), in bytes.

    ``getrusage`` is only the fallback: after an exec its peak can be the
    parent's.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
