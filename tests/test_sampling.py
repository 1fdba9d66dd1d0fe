"""Specification of shadowdeco.sampling."""

from __future__ import annotations

import copy
import doctest
import hashlib
import math
import os
import pickle
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_script
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowdeco import sampling
from shadowdeco.sampling import (
    ALWAYS,
    NEVER,
    AllOf,
    AnyOf,
    ByKey,
    PerSecond,
    Rate,
    Sampler,
    When,
    by_key,
    coerce,
    per_second,
    rate,
    when,
)

REPO_ROOT = Path(sampling.__file__).resolve().parents[1]
BAD_RATES = [-0.1, 1.1, math.nan, math.inf, True, "0.5", None]


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("shadowdeco.sampling.time.monotonic", fake)
    return fake


@pytest.fixture
def seeded() -> Iterator[None]:
    state = random.getstate()
    random.seed(20240601)
    yield
    random.setstate(state)


class Recorder:
    """A predicate that remembers how often it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        self.calls += 1
        return self.answer


def is_beta(*args: Any, **kwargs: Any) -> bool:
    return bool(kwargs.get("beta"))


def user_id(user: str, **kwargs: Any) -> str:
    return user


# --- the module ----------------------------------------------------------------------------


def test_docstring_example_runs() -> None:
    """The module docstring opens with an example that runs as written."""
    result = doctest.testmod(sampling, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_all_lists_existing_public_names() -> None:
    """Every name in __all__ exists, is public, and is listed once."""
    assert len(set(sampling.__all__)) == len(sampling.__all__)
    for name in sampling.__all__:
        assert not name.startswith("_")
        assert hasattr(sampling, name)
    assert "SamplerLike" in sampling.__all__


def test_base_sampler_is_abstract() -> None:
    """Calling the base Sampler raises NotImplementedError."""
    with pytest.raises(NotImplementedError):
        Sampler()()


def test_samplers_have_slots() -> None:
    """Sampler instances carry no __dict__."""
    samplers = [ALWAYS, NEVER, Rate(0.5), by_key(user_id, 0.5), per_second(5), when(is_beta)]
    samplers += [AllOf(Rate(0.5), when(is_beta)), AnyOf(Rate(0.5), when(is_beta))]
    for sampler in samplers:
        assert not hasattr(sampler, "__dict__"), sampler


# --- validation ----------------------------------------------------------------------------


def _expected_error(value: object) -> type[Exception]:
    return ValueError if isinstance(value, float) else TypeError


@pytest.mark.parametrize("value", BAD_RATES, ids=repr)
def test_rate_rejects_bad_values(value: object) -> None:
    """rate() rejects a value that is not a real number in [0, 1], naming parameter and value."""
    with pytest.raises(_expected_error(value)) as info:
        rate(value)  # type: ignore[arg-type]
    assert str(info.value) == f"p must be a rate between 0 and 1, got {value!r}"


@pytest.mark.parametrize("value", BAD_RATES, ids=repr)
def test_rate_names_the_callers_parameter(value: object) -> None:
    """rate(param=...) names the caller's own parameter in its message."""
    with pytest.raises(_expected_error(value), match=r"^candidate_rate must be a rate"):
        rate(value, param="candidate_rate")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", BAD_RATES, ids=repr)
def test_by_key_rejects_bad_rates(value: object) -> None:
    """by_key() rejects a bad rate with a message naming `rate` and the value."""
    with pytest.raises(_expected_error(value)) as info:
        by_key(user_id, value)  # type: ignore[arg-type]
    assert str(info.value) == f"rate must be a rate between 0 and 1, got {value!r}"


def test_by_key_rejects_a_non_callable_key() -> None:
    """by_key() rejects a key that is not callable, naming `key` and the value."""
    with pytest.raises(TypeError, match=r"^key must be a callable, got 'user'$"):
        by_key("user", 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, -0.1, math.nan, math.inf, True, "5", None], ids=repr)
def test_per_second_rejects_bad_values(value: object) -> None:
    """per_second() rejects anything but a positive finite number, naming `n` and the value."""
    error = (
        ValueError if isinstance(value, (int, float)) and not isinstance(value, bool) else TypeError
    )
    with pytest.raises(error) as info:
        per_second(value)  # type: ignore[arg-type]
    assert str(info.value).startswith("n must be a positive number of samples per second")
    assert str(info.value).endswith(f"got {value!r}")


def test_when_rejects_a_non_callable_predicate() -> None:
    """when() rejects a predicate that is not callable, naming `predicate` and the value."""
    with pytest.raises(TypeError, match=r"^predicate must be a callable, got 3$"):
        when(3)  # type: ignore[arg-type]


# --- rate ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("seeded")
def test_rate_samples_about_the_given_fraction() -> None:
    """A rate of 0.25 samples about a quarter of calls."""
    sampler = rate(0.25)
    hits = sum(sampler() for _ in range(20_000))
    assert 0.23 < hits / 20_000 < 0.27


def test_rate_exposes_its_probability() -> None:
    """A Rate exposes its probability as a read-only float `.rate`."""
    sampler = rate(0.1)
    assert type(sampler) is Rate
    assert isinstance(sampler, Rate)
    assert sampler.rate == 0.1
    assert isinstance(sampler.rate, float)
    with pytest.raises(AttributeError):
        sampler.rate = 0.5  # type: ignore[misc]


def test_rate_accepts_ints_and_float_subclasses() -> None:
    """A rate may be given as an int or a float subclass."""

    class Probability(float):
        pass

    assert rate(1) is ALWAYS
    assert rate(0) is NEVER
    sampler = rate(Probability(0.5))
    assert type(sampler) is Rate
    assert type(sampler.rate) is float


def test_rate_extremes_are_the_singletons() -> None:
    """rate(1.0) is ALWAYS and rate(0.0) is NEVER."""
    assert rate(1.0) is ALWAYS
    assert rate(0.0) is NEVER


def test_rate_ignores_the_call_arguments() -> None:
    """A Rate accepts any arguments and decides by random draw alone."""
    sampler = Rate(0.5)
    assert sampler("x", 1, flag=True) in (True, False)
    assert Rate(1.0)() is True
    assert Rate(0.0)() is False


# --- ALWAYS, NEVER and composition ---------------------------------------------------------


def test_always_and_never_answer_constantly() -> None:
    """ALWAYS always samples and NEVER never does, whatever the arguments."""
    assert ALWAYS("a", key=1) is True
    assert NEVER("a", key=1) is False
    assert repr(ALWAYS) == "ALWAYS"
    assert repr(NEVER) == "NEVER"
    assert type(ALWAYS).__name__ == "_Always"
    assert type(NEVER).__name__ == "_Never"


def test_always_and_never_stay_singletons_through_copy_and_pickle() -> None:
    """Copying or pickling ALWAYS and NEVER gives back the same objects."""
    for singleton in (ALWAYS, NEVER):
        assert copy.copy(singleton) is singleton
        assert copy.deepcopy(singleton) is singleton
        # Loads only the bytes dumped on the line itself.
        assert pickle.loads(pickle.dumps(singleton)) is singleton  # noqa: S301


def test_always_and_never_simplify_composition() -> None:
    """ALWAYS and NEVER are the identities and absorbers of & and |."""
    x = rate(0.3)
    assert ALWAYS & x is x
    assert x & ALWAYS is x
    assert NEVER | x is x
    assert x | NEVER is x
    assert ALWAYS | x is ALWAYS
    assert x | ALWAYS is ALWAYS
    assert NEVER & x is NEVER
    assert x & NEVER is NEVER
    assert ALWAYS & NEVER is NEVER
    assert ALWAYS | NEVER is ALWAYS


def test_floats_and_callables_compose_on_either_side() -> None:
    """Floats become rates and callables become predicates on either side of & and |."""
    combos = [
        rate(0.1) & is_beta,
        is_beta & rate(0.1),
        when(is_beta) & 0.1,
        0.1 & when(is_beta),
        rate(0.1) | is_beta,
        is_beta | rate(0.1),
        when(is_beta) | 0.1,
        0.1 | when(is_beta),
    ]
    reprs = [repr(c) for c in combos]
    assert reprs == [
        "rate(0.1) & when(is_beta)",
        "when(is_beta) & rate(0.1)",
        "when(is_beta) & rate(0.1)",
        "rate(0.1) & when(is_beta)",
        "rate(0.1) | when(is_beta)",
        "when(is_beta) | rate(0.1)",
        "when(is_beta) | rate(0.1)",
        "rate(0.1) | when(is_beta)",
    ]
    assert [type(c) for c in combos] == [AllOf] * 4 + [AnyOf] * 4


def test_float_extremes_simplify_in_composition() -> None:
    """Composing with 1.0 or 0.0 simplifies like ALWAYS and NEVER."""
    beta = when(is_beta)
    assert beta & 1.0 is beta
    assert 1.0 | beta is ALWAYS
    assert 0.0 & beta is NEVER
    assert beta | 0 is beta


def test_composition_rejects_other_operands() -> None:
    """Composing with something that is not sampler-like raises TypeError naming the value."""
    with pytest.raises(TypeError, match=r"got 'beta'$"):
        when(is_beta) & "beta"  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"got True$"):
        True | when(is_beta)
    with pytest.raises(ValueError, match=r"got 1.5$"):
        when(is_beta) & 1.5


def test_and_short_circuits() -> None:
    """In a & b, b is not asked when a declines."""
    left, right = Recorder(False), Recorder(True)
    sampler = when(left) & right
    assert sampler("x") is False
    assert (left.calls, right.calls) == (1, 0)


def test_or_short_circuits() -> None:
    """In a | b, b is not asked when a accepts."""
    left, right = Recorder(True), Recorder(False)
    sampler = left | when(right)
    assert sampler("x") is True
    assert (left.calls, right.calls) == (1, 0)


def test_composites_ask_every_sampler_when_undecided() -> None:
    """A composite asks each sampler in order until one decides."""
    a, b, c = Recorder(True), Recorder(True), Recorder(False)
    assert (when(a) & b & c)() is False
    assert (a.calls, b.calls, c.calls) == (1, 1, 1)
    d, e = Recorder(False), Recorder(False)
    assert (when(d) | e)() is False
    assert (d.calls, e.calls) == (1, 1)


def test_composites_pass_arguments_through() -> None:
    """Every sampler in a composite sees the call's positional and keyword arguments."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def spy(*args: Any, **kwargs: Any) -> bool:
        seen.append((args, kwargs))
        return True

    (when(spy) & spy)("u1", 2, beta=True)
    assert seen == [(("u1", 2), {"beta": True})] * 2


def test_nested_composites_of_the_same_kind_flatten() -> None:
    """(a & b) & c is one AllOf of three samplers, and likewise for |."""
    a, b, c, d = rate(0.1), rate(0.2), per_second(5), when(is_beta)
    conjunction = (a & b) & (c & d)
    assert isinstance(conjunction, AllOf)
    assert conjunction.samplers == (a, b, c, d)
    disjunction = a | (b | c) | d
    assert isinstance(disjunction, AnyOf)
    assert disjunction.samplers == (a, b, c, d)
    assert AllOf(AllOf(a, b), c).samplers == (a, b, c)


def test_mixed_composites_keep_their_structure() -> None:
    """An | inside an & stays nested, and its repr is parenthesised."""
    a, b, c = rate(0.1), per_second(50), when(is_beta)
    mixed = a & (b | c)
    assert isinstance(mixed, AllOf)
    assert len(mixed.samplers) == 2
    assert repr(mixed) == "rate(0.1) & (per_second(50) | when(is_beta))"
    assert repr(a & b | c) == "rate(0.1) & per_second(50) | when(is_beta)"


def test_reprs_read_like_the_code_that_built_them() -> None:
    """Each sampler's repr reads like the expression that built it."""
    assert repr(rate(0.1) & per_second(50)) == "rate(0.1) & per_second(50)"
    assert repr(per_second(2.5)) == "per_second(2.5)"
    assert repr(by_key(user_id, 0.25)) == "by_key(user_id, 0.25)"
    assert repr(when(is_beta)) == "when(is_beta)"
    assert repr(when(lambda request: True)).startswith("when(")
    assert repr(Sampler()) == "<Sampler>"


# --- by_key --------------------------------------------------------------------------------


_SUBPROCESS_SCRIPT = """
from shadowdeco.sampling import by_key
keys = [f"user-{i}" for i in range(500)] + [("tenant", i) for i in range(200)] + list(range(200))
keys += [frozenset({f"a{i}", f"b{i}", f"c{i}"}) for i in range(100)]
keys += [{i, f"s{i}", (i, "t")} for i in range(100)]
sampler = by_key(lambda k: k, 0.3)
print("".join("1" if sampler(k) else "0" for k in keys))
"""


def _decisions_in_subprocess(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": hash_seed}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_by_key_decides_the_same_in_every_process() -> None:
    """by_key gives the same decisions in processes with different hash seeds."""
    first = _decisions_in_subprocess("1")
    second = _decisions_in_subprocess("4242")
    assert first == second
    assert len(first) == 1_100
    assert "0" in first
    assert "1" in first
    keys: list[object] = [f"user-{i}" for i in range(500)]
    keys += [("tenant", i) for i in range(200)] + list(range(200))
    keys += [frozenset({f"a{i}", f"b{i}", f"c{i}"}) for i in range(100)]
    keys += [{i, f"s{i}", (i, "t")} for i in range(100)]
    sampler = by_key(lambda k: k, 0.3)
    assert first == "".join("1" if sampler(k) else "0" for k in keys)


def test_by_key_refuses_a_key_without_stable_text() -> None:
    """An object whose text is only its address would decide at random in each process:
    the sampler raises (the experiment counts it as a sampler error, the call unsampled)."""

    class User:
        pass

    with pytest.raises(TypeError, match="User"):
        by_key(lambda k: k, 0.5)(User())
    with pytest.raises(TypeError, match="User"):
        by_key(lambda k: k, 0.5)(("tenant", User()))


def test_by_key_follows_the_documented_hash() -> None:
    """A str key samples iff its 8-byte big-endian blake2b hash is below rate * 2**64."""
    sampler = by_key(user_id, 0.5)
    for i in range(200):
        key = f"user-{i}"
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        assert sampler(key) is (h < 0.5 * 2**64)


def test_by_key_samples_about_the_given_fraction_of_keys() -> None:
    """Over 10,000 distinct keys, by_key samples close to its rate."""
    sampler = by_key(user_id, 0.2)
    hits = sum(sampler(f"user-{i}") for i in range(10_000))
    assert 0.18 < hits / 10_000 < 0.22


def test_by_key_sampled_keys_grow_with_the_rate() -> None:
    """Raising the rate only adds keys: every key sampled at 0.1 is sampled at 0.3."""
    low, high = by_key(user_id, 0.1), by_key(user_id, 0.3)
    keys = [f"user-{i}" for i in range(2_000)]
    assert {k for k in keys if low(k)} <= {k for k in keys if high(k)}


def test_by_key_calls_key_with_the_call_arguments() -> None:
    """The key function receives the call's positional and keyword arguments."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def key(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "k"

    by_key(key, 0.5)("a", 1, tenant="t")
    assert seen == [(("a", 1), {"tenant": "t"})]


def test_by_key_lets_key_errors_propagate() -> None:
    """An exception raised by the key function reaches the caller unchanged."""

    def key(request: dict[str, str]) -> str:
        return request["user"]

    with pytest.raises(KeyError, match="user"):
        by_key(key, 0.5)({})


def test_key_encoding_is_deterministic_and_unambiguous() -> None:
    """Keys encode to fixed bytes, and differently split tuples encode differently."""
    encode = sampling._key_bytes
    assert encode("é") == "é".encode()
    assert encode(b"\x00\xff") == b"\x00\xff"
    assert encode(42) == b"42"
    assert encode(True) == b"True"
    assert encode(None) == b"None"
    assert encode(0.5) == b"0.5"
    assert encode(("a", "bc")) != encode(("ab", "c"))
    assert encode(("a", ("b",))) != encode((("a",), "b"))
    assert encode(("a", 1)) == encode(("a", 1))


def test_key_encoding_uses_the_plain_value_of_subclasses() -> None:
    """An int or float subclass hashes like the plain number it equals."""

    class Score(float):
        def __repr__(self) -> str:
            return f"Score({float(self)})"

    class Id(int):
        def __repr__(self) -> str:
            return f"Id({int(self)})"

    assert sampling._key_bytes(Score(0.5)) == b"0.5"
    assert sampling._key_bytes(Id(7)) == b"7"


@settings(database=None, max_examples=200)
@given(p=st.floats(min_value=0.0, max_value=1.0), key=st.text())
def test_by_key_is_a_function_of_the_key(p: float, key: str) -> None:
    """by_key repeats its decision for a key; a rate of 0 never and 1 always samples."""
    sampler = by_key(user_id, p)
    assert sampler(key) == sampler(key) == by_key(user_id, p)(key)
    assert by_key(user_id, 0)(key) is False
    assert by_key(user_id, 1)(key) is True


# --- per_second ----------------------------------------------------------------------------


def test_per_second_allows_a_burst_then_declines(clock: FakeClock) -> None:
    """per_second(n) allows a burst of n samples, then declines until time passes."""
    sampler = per_second(3)
    assert [sampler() for _ in range(5)] == [True, True, True, False, False]


def test_per_second_refills_with_time(clock: FakeClock) -> None:
    """Tokens come back at n per second of monotonic time."""
    sampler = per_second(2)
    assert [sampler() for _ in range(3)] == [True, True, False]
    clock.now += 0.25
    assert sampler() is False
    clock.now += 0.25
    assert [sampler(), sampler()] == [True, False]


def test_per_second_burst_is_capped(clock: FakeClock) -> None:
    """A long idle period refills no more than the burst size."""
    sampler = per_second(2)
    clock.now += 3600
    assert [sampler() for _ in range(3)] == [True, True, False]


def test_per_second_below_one_still_samples(clock: FakeClock) -> None:
    """A rate below one per second holds one token and refills it slowly."""
    sampler = per_second(0.5)
    assert [sampler(), sampler()] == [True, False]
    clock.now += 1
    assert sampler() is False
    clock.now += 1
    assert sampler() is True


def test_per_second_never_overdraws_under_threads(clock: FakeClock) -> None:
    """Threads drawing at once never take more tokens than the bucket holds."""
    sampler = PerSecond(100)
    threads_n, draws = 8, 200
    start = threading.Barrier(threads_n)
    counts = [0] * threads_n

    def draw(slot: int) -> None:
        start.wait()
        counts[slot] = sum(sampler() for _ in range(draws))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 100


def test_per_second_is_a_per_second_sampler(clock: FakeClock) -> None:
    """per_second returns a PerSecond that ignores the call arguments."""
    sampler = per_second(1)
    assert isinstance(sampler, PerSecond)
    assert sampler("request", user="u") is True


# --- when and coerce -----------------------------------------------------------------------


def test_when_passes_args_and_kwargs_to_the_predicate() -> None:
    """when() samples the calls for which the predicate, given the arguments, is truthy."""

    def header(request: dict[str, str], *, route: str = "/") -> object:
        return request.get("x-shadow") or route.startswith("/beta")

    sampler = when(header)
    assert isinstance(sampler, When)
    assert sampler({"x-shadow": "1"}) is True
    assert sampler({}) is False
    assert sampler({}, route="/beta/search") is True


def test_when_returns_a_sampler_unchanged() -> None:
    """when() given a Sampler returns that same Sampler."""
    sampler = per_second(5)
    assert when(sampler) is sampler
    assert when(ALWAYS) is ALWAYS


@pytest.mark.parametrize("value", [0.25, 1, 0], ids=repr)
def test_coerce_turns_numbers_into_rates(value: float) -> None:
    """coerce() turns an int or float into rate(value)."""
    coerced = coerce(value)
    assert repr(coerced) == repr(rate(value))


def test_coerce_returns_samplers_unchanged() -> None:
    """coerce() returns a Sampler as is."""
    sampler = by_key(user_id, 0.5)
    assert coerce(sampler) is sampler
    assert coerce(NEVER) is NEVER


def test_coerce_wraps_plain_callables() -> None:
    """coerce() turns a plain callable into a predicate sampler."""
    coerced = coerce(is_beta)
    assert isinstance(coerced, When)
    assert coerced(beta=True) is True


@pytest.mark.parametrize("value", [True, False, "0.5", None, [0.5], object()], ids=repr)
def test_coerce_rejects_everything_else(value: object) -> None:
    """coerce() rejects bools, strings, None and other non-callables, naming param and value."""
    with pytest.raises(TypeError) as info:
        coerce(value, param="shadow_sample")
    message = "shadow_sample must be a rate between 0 and 1, a Sampler or a callable"
    assert str(info.value) == f"{message}, got {value!r}"


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan], ids=repr)
def test_coerce_validates_rates_with_the_given_param(value: float) -> None:
    """coerce() checks a number's range and names the caller's parameter."""
    with pytest.raises(ValueError, match=r"^sample_rate must be a rate between 0 and 1"):
        coerce(value, param="sample_rate")


def test_by_key_instances_are_by_key_samplers() -> None:
    """by_key returns a ByKey, including at rates 0 and 1."""
    assert isinstance(by_key(user_id, 0), ByKey)
    assert isinstance(by_key(user_id, 1), ByKey)


def test_path_matches_whole_path_segments() -> None:
    """A route prefix names a path and what is under it, not every path that begins with
    the same letters (``/predict`` is not ``/predictions-admin``)."""
    from types import SimpleNamespace

    def at(path: str) -> Any:
        return SimpleNamespace(path=path)

    route = sampling.path("/predict", "/v2/")
    assert all(route(at(p)) for p in ("/predict", "/predict/batch", "/v2/x"))
    assert not route(at("/predictions-admin/delete"))
    assert not route(at("/predict-v2"))
    assert not route(at("/v2"))  # "/v2/" names what is under /v2/
    assert sampling.path("/")(at("/anything"))


def test_a_forked_child_samples_per_second_though_a_parent_thread_held_the_lock(
    tmp_path: Path,
) -> None:
    """A fork while another thread was inside per_second's token bucket: the child's first
    sampled call does not wait for ever on a lock no thread of its own will release."""
    done = run_script(
        """
        import os, signal, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        from shadowdeco import sampling

        bucket = sampling.per_second(100)
        holder = threading.Thread(target=bucket._lock.acquire)
        holder.start(); holder.join()
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a deadlock ends the child, not the test run
            os._exit(0 if bucket() is True else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
