"""The ranges of numeric settings, declared once: as the type a setting is annotated with.

An algorithm writes ``learning_rate: LearningRate = 3e-4``; that one annotation is read three ways:

- by jsonargparse (the CLI and config files): each type here is registered with it, so a value out of range, or a
  YAML ``.nan`` / ``.inf``, is refused while the config is parsed, and ``--help`` shows the range as the type's
  name (``finite float > 0``, ``int in [1, 4096]``);
- by ``check_settings``, which ``RLModule.__init__`` runs on its ``hparams`` (and ``check_env_kwargs`` on an env's
  keyword arguments), so ``PPO(learning_rate=-1)`` in Python raises the same ``ConfigurationError``;
- by messages: ``settings_of_type(PPO, LearningRate)`` lists the learning rates a divergence message names.

Every float range excludes NaN and the infinities: no setting of the library means anything with them.

jsonargparse ships restricted types (``jsonargparse.typing.PositiveFloat``) but they accept ``inf``, and a parsed
value stays an instance of the restricted class, which a checkpoint's ``hyper_parameters`` would then pickle by a
name ``torch.load(weights_only=True)`` refuses; these types hand out plain ``int`` and ``float`` instead.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonargparse.typing import register_type

from rl_lightning.errors import ConfigurationError


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: ``kind`` (int or float) between optional bounds, open or closed."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def bounds(self) -> str:
        """``> 0``, ``>= 1``, ``in (0, 1]``; empty without bounds."""
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return ""

    @property
    def name(self) -> str:
        """The type's name, as ``--help`` shows it: ``int in [1, 4096]``, ``finite float > 0``."""
        return " ".join(part for part in ("int" if self.kind is int else "finite float", self.bounds) if part)

    def requirement(self, value: Any = None) -> str:
        """What ``value`` fails, after "must": ``be a positive integer``, ``be > 0``, ``lie in [0, 1]``, ``be a
        finite number > 0`` (for NaN, inf and what is not a number)."""
        bounds = self.bounds
        if self.kind is int:
            if self.low == 1 and self.high is None and not self.low_open:
                return "be a positive integer"
            return f"be an integer {bounds}".rstrip()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return f"lie {bounds}" if bounds.startswith("in ") else f"be {bounds}"
        return f"be a finite number {bounds}".rstrip()

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a number of this range (an ``int`` for an int range; never a bool, NaN or inf)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def parse(self, value: Any) -> int | float:
        """A config's value (a number, or text from the command line) as a plain number in range, else ValueError."""
        number = value
        if isinstance(value, str):
            try:
                number = self.kind(value.strip())
            except ValueError:
                number = value
        elif self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            number = float(value)
        if not self.contains(number):
            raise ValueError(f"must {self.requirement(number)}, got {value!r}")
        return number


def _number_text(bound: float | None) -> str:
    return str(int(bound)) if bound is not None and float(bound).is_integer() else str(bound)


def number_range(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> type:
    """A type for annotations: ``kind`` restricted to the range, registered with jsonargparse.

    Calling it parses a value (``LearningRate("1e-3")`` is ``0.001``) and returns a plain ``int`` or ``float``.
    """
    span = Range(kind, low, high, low_open, high_open)

    def new(cls: type, value: Any) -> int | float:
        return span.parse(value)

    cls = type(span.name, (kind,), {"__new__": new, "range": span, "__module__": __name__,
                                    "__doc__": f"{span.name}: a setting's range (rl_lightning.setting_ranges)."})
    # The serializer writes the plain number back (--print_config, the saved config.yaml).
    register_type(cls, serializer=kind, deserializer=span.parse)
    return cls


# ---------------------------------------------------------------------- the ranges the library's settings use
Count = number_range(int, 1)
"""Steps, episodes, intervals: at least 1. Budgets and sizes whose cost is checked against memory where they are
allocated (``buffer_size``, ``n_steps``: ``check_rollout_memory``, the replay buffer's check) need no bound here."""
NonNegativeCount = number_range(int, 0)
Seed = number_range(int, 0)  # Gymnasium refuses a negative seed ("Seed must be a non-negative integer")
EnvCopies = number_range(int, 1, 4096)
"""Env copies built at once: each is an env object (a process with ``vectorization="async"``); past a few thousand a
run spends minutes building them or runs out of memory (``num_envs: 1e6`` hung building)."""
EvalEpisodes = number_range(int, 0, 1_000_000)  # every episode's return is kept and gathered over the ranks
UpdatesPerRound = number_range(int, 1, 10_000)
"""Passes or gradient steps per round: 10k updates on one round's data is far past any published setting (PPO uses
3-30 epochs); beyond, a round never ends (``n_epochs: 1e12`` ran out of memory)."""
BatchSize = number_range(int, 1, 2**24)  # 16M samples per minibatch: any GPU's memory ends before that
LayerWidth = number_range(int, 1, 16_384)
"""Units of one hidden layer: two layers of 16384 are 268M weights (1 GiB); ``hidden_sizes: [10**6]`` would ask
for terabytes."""

LearningRate = number_range(float, 0, low_open=True)
"""An optimizer's step size. No upper bound is right for every loss scale: a learning rate that diverges is named
by the error that stops the run (``rl_lightning.guards.divergence_suspects``)."""
PositiveFloat = number_range(float, 0, low_open=True)
NonNegativeFloat = number_range(float, 0)
FiniteFloat = number_range(float)
UnitInterval = number_range(float, 0, 1)  # discounts, GAE's lambda, probabilities
PositiveFraction = number_range(float, 0, 1, low_open=True)  # Polyak rates, fractions of an entropy
Decay = number_range(float, 0, 1, high_open=True)  # a moving average's smoothing (1 would never move)
LossWeight = number_range(float, 0, 10_000)
"""A loss term's coefficient: typical ones are 0.5 or 0.01; one 10^4 times the other terms leaves them no say."""
EntropyCoefficient = number_range(float, 0, 10_000, low_open=True)  # SAC's alpha: a loss weight, and never 0
LogStd = number_range(float, -20, 20)  # exp(+-20) spans 2e-9 to 5e8; exp(89) overflows float32 to inf
Port = number_range(int, 1, 65535)  # a TCP port
WorkerId = number_range(int, 0, 65535 - 5005)
"""ML-Agents' port offset: a build listens on its base port (5005 by default) + worker_id, and TCP ports end at
65535 (``start_processes`` checks the last process's port against the base port actually used)."""
EpsilonValue = number_range(float, 0, 1, low_open=True)
"""A stabilising constant added to a variance: past 1 it outweighs the variance of unit-scale data it divides."""


# ---------------------------------------------------------------------- reading the annotations
_HINTS: dict[Any, dict[str, Any]] = {}


def _declared_hints(function: Callable[..., Any]) -> dict[str, Any]:
    # The modules write `from __future__ import annotations`: resolve the strings once per function.
    if function not in _HINTS:
        try:
            _HINTS[function] = typing.get_type_hints(function)
        except (NameError, TypeError):  # an annotation that does not resolve declares no range
            _HINTS[function] = {}
    return _HINTS[function]


def _ranges_in(hint: Any) -> tuple[Range | None, bool, bool, bool]:
    """``(range, None allowed, text allowed, is a list of it)`` of an annotation such as ``LearningRate | None``."""
    if isinstance(getattr(hint, "range", None), Range):
        return hint.range, False, False, False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple) and args:
        span, _, _, _ = _ranges_in(args[0])
        return span, False, False, True
    if origin in (typing.Union, types.UnionType):
        span = next((a.range for a in args if isinstance(getattr(a, "range", None), Range)), None)
        return span, type(None) in args, str in args or any(typing.get_origin(a) is typing.Literal for a in args), \
            False
    return None, False, False, False


def declared_ranges(owner: type | Callable[..., Any]) -> dict[str, tuple[Range, bool, bool, bool]]:
    """Each ranged parameter of ``owner``'s ``__init__`` (a class's, over its bases: the most derived declaration
    wins) or of a function: name -> ``(range, None allowed, text allowed, a list of it)``."""
    functions = [c.__dict__["__init__"] for c in owner.__mro__ if "__init__" in c.__dict__] \
        if isinstance(owner, type) else [owner]
    found: dict[str, tuple[Range, bool, bool, bool]] = {}
    for function in functions:
        names = inspect.signature(function).parameters
        for name, hint in _declared_hints(function).items():
            if name in names and name not in found:
                declared = _ranges_in(hint)
                if declared[0] is not None:
                    found[name] = declared  # type: ignore[assignment]
    return found


def check_settings(owner: type | Callable[..., Any], values: Mapping[str, Any], prefix: str = "") -> None:
    """Raise ``ConfigurationError`` naming the first setting in ``values`` outside the range its annotation in
    ``owner`` declares. ``prefix`` goes before each name in the message (``"env_kwargs."``)."""
    for name, (span, optional, text, is_list) in declared_ranges(owner).items():
        if name not in values:
            continue
        value = values[name]
        if value is None and optional or isinstance(value, str) and text:
            continue  # the other members of the annotation: checked where they are read
        items = value if is_list and isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not span.contains(item):
                where = f" (item {item!r})" if is_list and item is not value else ""
                raise ConfigurationError(f"{prefix}{name}={value!r}{where} must {span.requirement(item)}"
                                         f"{', or null' if optional else ''}")


def settings_of_type(owner: type, setting_type: type) -> list[str]:
    """The parameters of ``owner``'s ``__init__`` (over its bases) annotated with ``setting_type``, alone or in a
    union: e.g. every learning rate of an algorithm."""
    return [name for name, (span, *_) in declared_ranges(owner).items() if span is setting_type.range]
