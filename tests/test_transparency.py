"""I1 Transparency: the decorated callable behaves exactly as the undecorated one."""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import inspect
import multiprocessing
import pickle
import sys
from typing import Any

import pytest
from helpers import KINDS, MODES, build

from shadowdeco import _decorator, shadow, sinks

SENTINEL = object()


class LiveError(Exception):
    pass


@pytest.mark.parametrize("sample", [1.0, 0.0])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_returns_the_very_object(kind: str, mode: str, sample: float) -> None:
    """Sampled or not, the caller gets the very object live returned."""
    memory = sinks.Memory()
    target = build(kind, mode, lambda x: SENTINEL, lambda x: "other", sample=sample, sinks=[memory])
    assert target(1) is SENTINEL
    target.experiment.flush(10)
    assert len(memory) == (1 if sample else 0)


@pytest.mark.parametrize("sample", [1.0, 0.0])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_raises_the_very_exception(kind: str, mode: str, sample: float) -> None:
    """Sampled or not, the caller gets the very exception live raised, and the shadow ran."""
    error = LiveError("live failed")
    memory = sinks.Memory()

    def live(x: Any) -> Any:
        raise error

    target = build(kind, mode, live, lambda x: 1, sample=sample, sinks=[memory])
    with pytest.raises(LiveError) as excinfo:
        target(1)
    assert excinfo.value is error
    target.experiment.flush(10)
    if sample:
        (result,) = memory.results
        assert result.live.status == "error"
        assert result.live.error == ("test_transparency.LiveError", "live failed")
        assert result.match is False


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_disabled_experiment_is_a_pass_through(kind: str, mode: str) -> None:
    """A disabled experiment returns live's object and records nothing."""
    memory = sinks.Memory()
    target = build(kind, mode, lambda x: SENTINEL, lambda x: 1, enabled=False, sinks=[memory])
    assert target(1) is SENTINEL
    stats = target.experiment.stats()
    assert (stats.sampled, stats.skipped, len(memory)) == (0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_arguments_reach_live_unchanged(kind: str, mode: str) -> None:
    """Positional and keyword arguments reach live as the caller passed them."""
    seen: list[Any] = []
    payload = {"a": [1, 2]}

    def live(*args: Any, **kwargs: Any) -> None:
        seen.append((args, kwargs))

    target = build(kind, mode, live, lambda *a, **k: None, sinks=[])
    target(payload, 2, flag=True)
    ((args, kwargs),) = seen
    assert args[0] is payload
    assert args[1:] == (2,)
    assert kwargs == {"flag": True}


def plain(features: dict[str, float], *, scale: float = 1.0) -> float:
    """Score the features."""
    return sum(features.values()) * scale


async def plain_async(features: dict[str, float], *, scale: float = 1.0) -> float:
    """Score the features, asynchronously."""
    return sum(features.values()) * scale


@pytest.mark.parametrize("fn", [plain, plain_async])
def test_metadata_survives(fn: Any) -> None:
    """Name, qualified name, doc, module, signature and coroutine-ness survive."""
    decorated = shadow(candidate=fn, sinks=[])(fn)
    assert decorated.__name__ == fn.__name__
    assert decorated.__qualname__ == fn.__qualname__
    assert decorated.__doc__ == fn.__doc__
    assert decorated.__module__ == fn.__module__
    assert decorated.__wrapped__ is fn
    assert inspect.signature(decorated) == inspect.signature(fn)
    assert inspect.iscoroutinefunction(decorated) == inspect.iscoroutinefunction(fn)


def test_methods_bind_like_methods() -> None:
    """Instance, class and static methods bind as the undecorated ones do."""

    class Model:
        factor = 3

        def __init__(self) -> None:
            self.factor = 2

        @shadow(candidate="v2", sinks=[])
        def predict(self, x: int) -> int:
            return x * self.factor

        def v2(self, x: int) -> int:
            return x * self.factor

        @shadow(candidate=lambda x: x, sinks=[])
        @classmethod
        def build(cls, x: int) -> int:
            return x * cls.factor

        @shadow(candidate=lambda x: x, sinks=[])
        @staticmethod
        def helper(x: int) -> int:
            return x + 1

    model = Model()
    assert model.predict(5) == 10
    assert Model.predict(model, 5) == 10
    assert Model.build(5) == 15
    assert model.build(5) == 15
    assert Model.helper(1) == 2
    assert model.helper(1) == 2
    assert inspect.ismethod(model.predict) or callable(model.predict)
    assert model.predict.shadow is Model.__dict__["predict"].shadow
    assert inspect.signature(model.predict) == inspect.signature(functools.partial(Model.v2, model))


def test_shadow_attribute_on_bound_method() -> None:
    """``.shadow`` works on the function and on its bound methods."""

    class Model:
        @shadow(candidate=lambda x: x, name="bound", sinks=[])
        def predict(self, x: int) -> int:
            return x

    assert Model().predict.shadow.name == "bound"
    assert Model.predict.shadow.name == "bound"


def test_a_plain_function_is_called_straight_through() -> None:
    """A plain function's wrapper goes straight to the shadow wrapper: wrapt's own
    ``__call__`` first looks for a ``__self__`` on the wrapped function, which raised and
    cleared an ``AttributeError`` on every call of a plain function (about 40 % of the wrapt
    call here, tens of microseconds when the call follows an idle moment)."""

    @shadow(candidate=lambda x: x, sinks=[])
    def predict(x: int) -> int:
        return x

    assert isinstance(predict, _decorator._FunctionShadowWrapper)
    assert predict(3) == 3


@pytest.mark.parametrize("sample", [0.0, 1.0])
def test_a_plain_function_s_call_runs_one_python_frame_of_the_wrapper(sample: float) -> None:
    """Between the caller and a plain function, one frame of shadowdeco's (its class's
    ``__call__`` is the shadow wrapper itself): a frame that only passed ``*args`` and
    ``**kwargs`` on cost ~140 ns, a tenth of a sampled call."""
    callers: list[Any] = []

    @shadow(candidate=lambda x: x, sample=sample, sinks=[])
    def predict(x: int) -> int:
        callers.append(sys._getframe(2).f_code)  # past the wrapper's frame: the caller's
        return x

    assert predict(3) == 3
    assert callers == [sys._getframe().f_code]
    assert predict.shadow.flush(10)


def test_calls_that_need_wrapt_binding_keep_it() -> None:
    """Bound methods, class- and staticmethods, callable objects, wrapped bound methods and
    a function carrying its own ``__self__`` go through wrapt's call, which binds them."""
    seen: list[Any] = []

    class Scorer:
        def __call__(self, x: int) -> int:
            return x + 1

        def bound(self, x: int) -> int:
            seen.append(self)
            return x * 2

    scorer = Scorer()
    by_object = shadow(candidate=lambda x: x, sinks=[])(scorer)
    by_bound_method = shadow(candidate=lambda x: x, sinks=[])(scorer.bound)

    def carries_self(x: int) -> int:
        return x

    carries_self.__self__ = scorer  # type: ignore[attr-defined]
    memory = sinks.Memory()
    # A method name as candidate: it resolves only on the instance wrapt passes.
    wrapped = shadow(candidate="bound", sinks=[memory])(carries_self)
    for decorated in (by_object, by_bound_method, wrapped):
        assert type(decorated) is _decorator._ShadowWrapper
    assert by_object(1) == 2
    assert by_bound_method(4) == 8
    assert wrapped(5) == 5
    assert wrapped.shadow.flush(10)
    assert memory.results[0].candidate.value == 10  # scorer.bound(5): the function's __self__
    assert seen == [scorer, scorer]


def test_keyword_arguments_named_like_the_wrapper_s_parameters_pass_through() -> None:
    """``self``, ``args`` and ``kwargs`` as keyword names reach live (the fast call takes its
    own ``self`` positionally only)."""

    @shadow(candidate=lambda **k: k, sinks=[])
    def live(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert live(self=1, args=2, kwargs=3, wrapped=4, instance=5) == {
        "self": 1,
        "args": 2,
        "kwargs": 3,
        "wrapped": 4,
        "instance": 5,
    }


def _double_v2(x: int) -> int:
    return x * 2


@shadow(candidate=_double_v2, name="transparency-pickled", sinks=[])
def pickled_predict(x: int) -> int:
    """Module level, so pickle can find it by name, as it finds a plain function."""
    return x * 2


def test_a_decorated_function_pickles_and_copies_as_a_function_does() -> None:
    """pickle stores it by reference (a process pool can send it to its workers), and
    copy / deepcopy give the very object, as for plain functions (I1)."""
    assert pickle.loads(pickle.dumps(pickled_predict)) is pickled_predict  # noqa: S301 - our own bytes
    assert copy.copy(pickled_predict) is pickled_predict
    assert copy.deepcopy({"fn": pickled_predict})["fn"] is pickled_predict
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        assert list(pool.map(pickled_predict, [1, 2, 3])) == [2, 4, 6]


def test_a_decorated_callable_without_a_name_says_it_cannot_be_pickled() -> None:
    partial = shadow(candidate=abs, name="unpicklable-partial", sinks=[])(
        functools.partial(_double_v2)
    )
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(partial)
