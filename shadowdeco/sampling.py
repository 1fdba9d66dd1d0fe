"""Samplers decide which live calls are shadowed.

>>> from shadowdeco import sampling
>>> sampler = sampling.rate(0.1) & sampling.per_second(50)
>>> sampler
rate(0.1) & per_second(50)
>>> beta = sampling.by_key(lambda user, **_: user, 0.25) | (lambda user, **kw: kw.get("beta"))
>>> beta("alice", beta=True)
True
>>> sampling.rate(1.0) & sampling.NEVER
NEVER

A sampler is called with the live call's arguments (``*args, **kwargs``, without the bound
instance; for HTTP middleware, with the request) and returns a bool. Anything that accepts a
sampler also accepts a :data:`SamplerLike`: a float is a rate, a plain callable is a predicate.

- :func:`rate` samples a random fraction of calls.
- :func:`by_key` samples a stable fraction of *keys*: the same user gets the same decision in
  every process, on every replica and after restarts.
- :func:`per_second` caps the number of samples per second (a token bucket).
- :func:`when` samples the calls for which a predicate is true (a header, a route).

Samplers compose with ``&`` and ``|``, which short-circuit left to right.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeAlias

__all__ = [
    "ALWAYS",
    "NEVER",
    "AllOf",
    "AnyOf",
    "ByKey",
    "Header",
    "Path",
    "PerSecond",
    "Rate",
    "Sampler",
    "SamplerLike",
    "When",
    "by_key",
    "coerce",
    "header",
    "path",
    "per_second",
    "rate",
    "when",
]


class Sampler:
    """Decides from a call's arguments whether to shadow it; composes with ``&`` and ``|``."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")

    def __and__(self, other: SamplerLike) -> Sampler:
        return _all_of(self, coerce(other, param="operand"))

    def __rand__(self, other: SamplerLike) -> Sampler:
        return _all_of(coerce(other, param="operand"), self)

    def __or__(self, other: SamplerLike) -> Sampler:
        return _any_of(self, coerce(other, param="operand"))

    def __ror__(self, other: SamplerLike) -> Sampler:
        return _any_of(coerce(other, param="operand"), self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


SamplerLike: TypeAlias = float | Sampler | Callable[..., object]


class _Always(Sampler):
    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALWAYS"

    def __reduce__(self) -> str:
        # Pickle and copy by name, so the singleton stays a singleton (``is ALWAYS`` keeps working).
        return "ALWAYS"


class _Never(Sampler):
    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return "NEVER"

    def __reduce__(self) -> str:
        return "NEVER"


ALWAYS: Sampler = _Always()
NEVER: Sampler = _Never()


class AllOf(Sampler):
    """Samples when every sampler does; stops at the first that declines."""

    __slots__ = ("samplers",)

    samplers: tuple[Sampler, ...]

    def __init__(self, *samplers: Sampler) -> None:
        # Flatten ``(a & b) & c`` into one loop: one frame per call instead of one per ``&``.
        self.samplers = tuple(
            part for s in samplers for part in (s.samplers if isinstance(s, AllOf) else (s,))
        )

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return all(sampler(*args, **kwargs) for sampler in self.samplers)

    def __repr__(self) -> str:
        # ``&`` binds tighter than ``|``, so only an ``AnyOf`` operand needs parentheses.
        return " & ".join(f"({s!r})" if isinstance(s, AnyOf) else repr(s) for s in self.samplers)


class AnyOf(Sampler):
    """Samples when any sampler does; stops at the first that accepts."""

    __slots__ = ("samplers",)

    samplers: tuple[Sampler, ...]

    def __init__(self, *samplers: Sampler) -> None:
        self.samplers = tuple(
            part for s in samplers for part in (s.samplers if isinstance(s, AnyOf) else (s,))
        )

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return any(sampler(*args, **kwargs) for sampler in self.samplers)

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.samplers)


def _all_of(left: Sampler, right: Sampler) -> Sampler:
    # Simplify both ways round: ``x & NEVER`` can never sample, so x need not even run.
    if left is NEVER or right is NEVER:
        return NEVER
    if left is ALWAYS:
        return right
    if right is ALWAYS:
        return left
    return AllOf(left, right)


def _any_of(left: Sampler, right: Sampler) -> Sampler:
    if left is ALWAYS or right is ALWAYS:
        return ALWAYS
    if left is NEVER:
        return right
    if right is NEVER:
        return left
    return AnyOf(left, right)


def _check_rate(value: object, param: str) -> float:
    """Return ``value`` as a float in [0, 1], or raise naming ``param`` and the value."""
    # bool is an int, but ``sample=True`` is far more likely a mistake than a rate of 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param} must be a rate between 0 and 1, got {value!r}")
    p = float(value)
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"{param} must be a rate between 0 and 1, got {value!r}")
    return p


def _check_per_second(value: object, param: str) -> float:
    """Return ``value`` as a positive finite float, or raise naming ``param`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param} must be a positive number of samples per second, got {value!r}")
    n = float(value)
    if not (math.isfinite(n) and n > 0.0):
        raise ValueError(f"{param} must be a positive number of samples per second, got {value!r}")
    return n


def _number(x: float) -> str:
    """Format a number for a repr: ``50`` rather than ``50.0``."""
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _name(fn: Callable[..., object]) -> str:
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else repr(fn)


class Rate(Sampler):
    """Samples each call independently with probability ``rate``."""

    __slots__ = ("_rate",)

    def __init__(self, rate: float, *, param: str = "sample") -> None:
        self._rate = _check_rate(rate, param)

    @property
    def rate(self) -> float:
        """The probability that a call is sampled."""
        return self._rate

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return random.random() < self._rate

    def __repr__(self) -> str:
        return f"rate({_number(self._rate)})"


def rate(p: float, *, param: str = "p") -> Sampler:
    """Sample a fraction ``p`` of calls at random; ``param`` names ``p`` in error messages."""
    p = _check_rate(p, param)
    if p == 1.0:
        return ALWAYS
    if p == 0.0:
        return NEVER
    return Rate(p, param=param)


def _key_bytes(value: object) -> bytes:
    """Encode a key the same way in every process (unlike ``hash()``, which is salted)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, tuple):
        # Length-prefix each part so ("a", "bc") and ("ab", "c") encode differently.
        parts = (_key_bytes(item) for item in value)
        return b"(" + b"".join(b"%d:%b" % (len(part), part) for part in parts) + b")"
    if isinstance(value, (set, frozenset)):  # in no order: the encoded items, sorted
        encoded = sorted(_key_bytes(item) for item in value)
        return b"{" + b"".join(b"%d:%b" % (len(part), part) for part in encoded) + b"}"
    if isinstance(value, str):
        text = str.__str__(value)
    elif value is None or isinstance(value, bool):
        text = repr(value)
    # The base reprs, so an IntEnum or a numpy float hashes like the plain number it equals.
    elif isinstance(value, int):
        text = int.__repr__(value)
    elif isinstance(value, float):
        text = float.__repr__(value)
    else:
        cls = type(value)
        if cls.__str__ is object.__str__ and cls.__repr__ is object.__repr__:
            raise TypeError(
                f"by_key: a key of type {cls.__qualname__} has no stable text (its str() is "
                "its address, another in each process): return a str, a number or a tuple"
            )
        text = str(value)  # as stable as the type's str(): fine for UUIDs, dates, enums
    return text.encode("utf-8")


class ByKey(Sampler):
    """Samples the calls whose key falls in a stable ``rate`` fraction of the key space."""

    __slots__ = ("_key", "_rate", "_threshold")

    def __init__(self, key: Callable[..., object], rate: float) -> None:
        if not callable(key):
            raise TypeError(f"key must be a callable, got {key!r}")
        self._key = key
        self._rate = _check_rate(rate, "rate")
        # Compared with a 64-bit hash: 0 never samples, 1 (2**64) always does.
        self._threshold = self._rate * 2.0**64

    @property
    def key(self) -> Callable[..., object]:
        return self._key

    @property
    def rate(self) -> float:
        return self._rate

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        digest = hashlib.blake2b(_key_bytes(self._key(*args, **kwargs)), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._threshold

    def __repr__(self) -> str:
        return f"by_key({_name(self._key)}, {_number(self._rate)})"


def by_key(key: Callable[..., object], rate: float) -> Sampler:
    """Sample a stable fraction ``rate`` of the values of ``key(*args, **kwargs)``."""
    return ByKey(key, rate)


class PerSecond(Sampler):
    """Samples at most ``n`` calls per second on average, in bursts of up to ``max(1, n)``."""

    __slots__ = ("__weakref__", "_capacity", "_last", "_lock", "_n", "_tokens")

    def __init__(self, n: float) -> None:
        self._n = _check_per_second(n, "n")
        # At least one token, or a rate below 1/s could never sample at all.
        self._capacity = max(1.0, self._n)
        self._tokens = self._capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()
        _buckets.add(self)

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        with self._lock:
            # Read the clock under the lock so refills are applied in time order.
            now = time.monotonic()
            tokens = min(self._capacity, self._tokens + (now - self._last) * self._n)
            self._last = now
            if tokens >= 1.0:
                self._tokens = tokens - 1.0
                return True
            self._tokens = tokens
            return False

    def __repr__(self) -> str:
        return f"per_second({_number(self._n)})"


#: Every token bucket, for a forked child: its lock may have been held by a parent thread.
_buckets: weakref.WeakSet[PerSecond] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for bucket in list(_buckets):
        bucket._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def per_second(n: float) -> Sampler:
    """Sample at most ``n`` calls per second on average (a thread-safe token bucket)."""
    return PerSecond(n)


class When(Sampler):
    """Samples the calls for which ``predicate(*args, **kwargs)`` is truthy."""

    __slots__ = ("_predicate",)

    def __init__(self, predicate: Callable[..., object]) -> None:
        if not callable(predicate):
            raise TypeError(f"predicate must be a callable, got {predicate!r}")
        self._predicate = predicate

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._predicate(*args, **kwargs))

    def __repr__(self) -> str:
        return f"when({_name(self._predicate)})"


def when(predicate: Callable[..., object]) -> Sampler:
    """Sample the calls for which ``predicate`` is true; a Sampler is returned unchanged."""
    if isinstance(predicate, Sampler):
        return predicate
    return When(predicate)


class Header(Sampler):
    """For the middleware: samples requests that carry header ``name`` (equal to ``value``)."""

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a header name, got {name!r}")
        if value is not None and not isinstance(value, str):
            raise TypeError(f"value must be a header value (a str) or None, got {value!r}")
        self._name = name.lower()
        self._value = value

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        header = getattr(args[0], "header", None) if args else None
        found = header(self._name) if callable(header) else None
        return found is not None and (self._value is None or found == self._value)

    def __repr__(self) -> str:
        value = "" if self._value is None else f", {self._value!r}"
        return f"header({self._name!r}{value})"


def header(name: str, value: str | None = None) -> Sampler:
    """Sample the requests that carry header ``name`` (with ``value``, if given)."""
    return Header(name, value)


class Path(Sampler):
    """For the middleware: samples requests whose path is one of ``prefixes`` or under one,
    by whole segments (``/predict`` takes ``/predict/batch``, not ``/predictions``)."""

    __slots__ = ("_exact", "_prefixes", "_under")

    def __init__(self, *prefixes: str) -> None:
        if not prefixes or not all(isinstance(p, str) and p.startswith("/") for p in prefixes):
            raise ValueError(f"prefixes must be paths starting with '/', got {prefixes!r}")
        self._prefixes = prefixes
        self._exact = frozenset(prefixes)
        self._under = tuple(p.rstrip("/") + "/" for p in prefixes)

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        path = getattr(args[0], "path", None) if args else None
        return isinstance(path, str) and (path in self._exact or path.startswith(self._under))

    def __repr__(self) -> str:
        return f"path({', '.join(map(repr, self._prefixes))})"


def path(*prefixes: str) -> Sampler:
    """Sample the requests whose path is one of ``prefixes`` or under one (a route, by whole
    path segments)."""
    return Path(*prefixes)


def coerce(value: object, *, param: str = "sample") -> Sampler:
    """Turn a :data:`SamplerLike` into a Sampler: a number is a rate, a callable a predicate."""
    if isinstance(value, Sampler):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return rate(value, param=param)
    if callable(value):
        return when(value)
    raise TypeError(
        f"{param} must be a rate between 0 and 1, a Sampler or a callable, got {value!r}"
    )
