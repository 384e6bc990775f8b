"""This process's peak resident memory, in bytes.

Linux's ``VmHWM`` (``/proc/self/status``) belongs to the process image: it starts again
at ``exec``. ``getrusage().ru_maxrss`` does not: a child started by a parent holding
4 GB reports 4 GB before it has done anything, because the forked copy's resident size
is carried across ``exec``. Benchmarks that build their input in the parent and measure
in a child therefore read ``VmHWM`` (``ru_maxrss`` where there is no ``/proc``).
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
