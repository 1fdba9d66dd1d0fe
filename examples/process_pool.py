"""A CPU-bound candidate in a process pool, so it does not fight the live path for the GIL.

The candidate must be importable by the worker processes: a module-level function.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import shadowdeco
from shadowdeco import shadow, sinks


def fib(n: int) -> int:
    """The candidate: pure-Python CPU work."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def main() -> None:
    memory = sinks.Memory()
    # spawn: forking a process that already runs threads is unsafe.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:

        @shadow(candidate=fib, executor=pool, sinks=[memory])
        def live_fib(n: int) -> int:
            a, b = 0, 1
            for _ in range(n):
                a, b = b, a + b
            return a

        print([live_fib(n) for n in range(15, 25)])
        shadowdeco.flush(60)
    print(live_fib.shadow.stats())
    print("all matched:", all(r.match for r in memory.results))


if __name__ == "__main__":
    main()
