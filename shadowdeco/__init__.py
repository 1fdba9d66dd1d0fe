"""shadowdeco: run a candidate model in shadow mode beside the live one.

>>> import shadowdeco
>>> from shadowdeco import shadow, sinks
>>> memory = sinks.Memory()
>>> @shadow(candidate=lambda x: round(x), sinks=[memory])
... def predict(x):
...     return int(x)
>>> predict(2.7)
2
>>> shadowdeco.flush(5)
True
>>> memory.results[0].match, memory.results[0].candidate.value
(False, 3)

The caller always gets the live result; the candidate runs in the background, bounded and
isolated, and both results reach the sinks as one :class:`ShadowResult`.

PYTEST_DONT_REWRITE: the package holds a pytest plugin (``shadowdeco.testing.plugin``), so
pytest would rewrite this module's asserts, and warns (an error under ``-W error``) when it
was imported before pytest started, as an app or a runner script may well do.  It has no
asserts; this marker, which pytest looks for in a module's docstring, tells it so.
"""

from . import compare, sampling, sinks
from ._decorator import shadow
from ._experiment import (
    Args,
    Experiment,
    Stats,
    configure,
    experiment,
    experiments,
    flush,
    reload_config,
    shutdown,
)
from ._pool import PoolClosed, ProcessPool
from ._result import Observation, ShadowResult, to_jsonable
from ._runner import in_shadow

__version__ = "0.1.0"

__all__ = [
    "Args",
    "Experiment",
    "Observation",
    "PoolClosed",
    "ProcessPool",
    "ShadowResult",
    "Stats",
    "__version__",
    "compare",
    "configure",
    "experiment",
    "experiments",
    "flush",
    "in_shadow",
    "reload_config",
    "sampling",
    "shadow",
    "shutdown",
    "sinks",
    "to_jsonable",
]
