"""A test file to copy into your project: prove the shadow cannot hurt the live path.

Run it with ``pytest examples/test_with_shadowdeco.py``.  The ``shadow_results`` and
``shadow_inline`` fixtures come with shadowdeco (no conftest needed).
"""

from __future__ import annotations

from hypothesis import strategies as st

from shadowdeco import shadow
from shadowdeco.testing import assert_isolated, assert_transparent


def predict_v2(features: dict[str, float]) -> str:
    return "churn" if features.get("usage_drop", 0.0) > 0.4 else "stay"


@shadow(candidate=predict_v2, name="example-churn")
def predict(features: dict[str, float]) -> str:
    if "usage_drop" not in features:
        raise KeyError("usage_drop")
    return "churn" if features["usage_drop"] > 0.5 else "stay"


def test_the_shadow_cannot_hurt_the_live_path() -> None:
    # Raising, hanging, slow, mutating candidates; a raising comparator and sink: the
    # caller always gets exactly what the undecorated function gives.
    assert_isolated(predict, {"usage_drop": 0.45})
    assert_isolated(predict, {})  # also when live raises


def test_live_is_transparent_for_any_input() -> None:
    features = st.fixed_dictionaries({"usage_drop": st.floats(0, 1)})
    assert_transparent(predict, st.tuples(features), max_examples=50)


def test_what_the_shadow_records(shadow_results, shadow_inline) -> None:  # type: ignore[no-untyped-def]
    assert predict({"usage_drop": 0.45}) == "stay"
    (result,) = shadow_results.for_experiment("example-churn")  # recorded before the return
    assert result.candidate.value == "churn"
    assert result.match is False
