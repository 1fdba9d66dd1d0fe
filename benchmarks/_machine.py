"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def python() -> str:
    """``CPython 3.11.7``."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def summary() -> str:
    """``nproc: 2; CPU: AMD EPYC; CPython 3.11.7 on linux``."""
    return f"nproc: {os.cpu_count()}; CPU: {cpu_model()}; {python()} on {sys.platform}"
