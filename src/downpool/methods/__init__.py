"""The method registry: names, parameters, defaults and their validation.

This module is pure Python (no NumPy, no Numba) so that the command line can
list methods and build its options without paying for the kernel imports.
Each method's kernels live in the module of its name in this package
(``downpool.methods.mode``...), which only the kernel backends import.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["Param", "MethodSpec", "METHODS", "get_method", "resolve_params"]


@dataclass(frozen=True)
class Param:
    """One parameter of a method.

    Attributes
    ----------
    name : str
        Keyword name, as passed to :func:`downpool.downscale`.
    default : object
        Value used when the caller does not give one.
    kind : {"float", "int", "choice"}
        What values are accepted.
    allowed : str
        Human-readable range, quoted in error messages and ``--help``.
    doc : str
        One line saying what the parameter does.
    minimum : float, optional
        Smallest allowed value (numbers only).
    inclusive : bool
        Whether ``minimum`` itself is allowed.
    maximum : float, optional
        Largest allowed value (numbers only, inclusive).
    choices : tuple of str
        Allowed values of a ``"choice"`` parameter.
    """

    name: str
    default: Any
    kind: str
    allowed: str
    doc: str
    minimum: float | None = None
    inclusive: bool = True
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def validate(self, method: str, value: Any) -> Any:
        """Return ``value`` normalised to the parameter's type.

        Raises
        ------
        ValueError
            Naming the method, the parameter and what is allowed.
        """
        prefix = f"{method}: parameter {self.name!r} must be {self.allowed}, got {value!r}"
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(prefix)
            return value
        # bool is an int subclass, but True is never a meaningful beta or seed.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(prefix)
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                raise ValueError(prefix)
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(prefix)
        if self.minimum is not None:
            if value < self.minimum or (not self.inclusive and value == self.minimum):
                raise ValueError(prefix)
        if self.maximum is not None and value > self.maximum:
            raise ValueError(prefix)
        return value


@dataclass(frozen=True)
class MethodSpec:
    """Description of one downscaling method.

    Attributes
    ----------
    name : str
        The name used by :func:`downpool.downscale` and the command line.
    summary : str
        One line for listings.
    description : str
        The formula in words, as in the SPEC.
    params : mapping of str to Param
        The method's parameters, in the order they are documented.
    area_only : bool
        True for methods that always use the arbitrary-size geometry
        (``dpid``): an integer ``kernel_size`` k means ``size=ceil(H/k)``
        and ``stride`` is rejected.
    needs_nonnegative : bool
        True where a negative input value is an error (``lp``, ``stochastic``).
    halo_rows : int
        Output rows above and below that an output row's value depends on
        (``dpid``'s guide smoothing: 1), which a strip of the image is pooled
        with (:mod:`downpool.strips`).
    labels : bool
        True for methods whose result is one of the window's values, compared
        exactly (``mode``): values are labels, not intensities, so alpha and
        linear light do not apply, and ``uint32`` is accepted as well.
    """

    name: str
    summary: str
    description: str
    params: Mapping[str, Param] = field(default_factory=dict)
    area_only: bool = False
    needs_nonnegative: bool = False
    halo_rows: int = 0
    labels: bool = False

    @property
    def defaults(self) -> dict[str, Any]:
        """The default value of every parameter."""
        return {p.name: p.default for p in self.params.values()}

    def __str__(self) -> str:
        args = ", ".join(f"{p.name}={p.default!r}" for p in self.params.values())
        return f"{self.name}({args}): {self.summary}"


def _params(*items: Param) -> Mapping[str, Param]:
    return MappingProxyType({p.name: p for p in items})


_LAM_DOC = "reward exponent: 0 is the plain average, large values approach extremum selection"

_SPECS = (
    MethodSpec(
        "avg",
        "average pooling: the (coverage-weighted) mean of the window",
        "sum(c*a) / sum(c) over the window, per channel; the box filter.",
    ),
    MethodSpec(
        "max",
        "max pooling: the largest value in the window",
        "max(a) over the pixels the window touches, per channel.",
    ),
    MethodSpec(
        "lp",
        "power-mean (Lp) pooling: between avg (p=1) and max (p -> inf)",
        "(sum(c*a^p) / sum(c))^(1/p) per channel, computed relative to the window "
        "maximum; needs non-negative values.",
        _params(Param("p", 2.0, "float", "a finite number > 0", "the power; 1 is avg, large is max",
                      minimum=0.0, inclusive=False)),
        needs_nonnegative=True,
    ),
    MethodSpec(
        "softpool",
        "SoftPool: softmax-weighted mean, favouring bright detail",
        "sum(c*e^(beta*a)*a) / sum(c*e^(beta*a)) per channel (Stergiou et al. 2021), "
        "with the window maximum subtracted before exponentiating.",
        _params(Param("beta", 4.4, "float", "a finite number >= 0",
                      "sharpness: 0 is avg, large approaches max", minimum=0.0)),
    ),
    MethodSpec(
        "stochastic",
        "stochastic pooling: a pixel drawn with probability proportional to its value",
        "p(q) = c_q*v_q / sum(c*v), v the value, or luma for RGB(A); 'sample' copies one "
        "drawn pixel (all channels), 'expectation' is sum(c*a^2) / sum(c*a) per channel.",
        _params(
            Param("mode", "sample", "choice", "one of 'sample', 'expectation'",
                  "'sample' draws a pixel per window; 'expectation' is its mean",
                  choices=("sample", "expectation")),
            Param("seed", 0, "int", "an integer in [0, 2**64)", "seed of the per-pixel draws",
                  minimum=0, maximum=2**64 - 1),
        ),
        needs_nonnegative=True,
    ),
    MethodSpec(
        "dpp",
        "Detail-Preserving Pooling (Lite-DPP): rewards pixels far from the window mean",
        "sum(w*a) / sum(w), w = c*(alpha + rho(a - g)), g the window mean, "
        "rho_sym(x) = (x^2 + eps^2)^(lam/2), rho_asym uses max(0, x) (Saeedan et al. 2018).",
        _params(
            Param("alpha", 0.0, "float", "a finite number >= 0",
                  "reward bias: large values approach avg", minimum=0.0),
            Param("lam", 1.0, "float", "a finite number >= 0", _LAM_DOC, minimum=0.0),
            Param("variant", "sym", "choice", "one of 'sym', 'asym'",
                  "'sym' rewards both darker and brighter pixels, 'asym' only brighter",
                  choices=("sym", "asym")),
        ),
    ),
    MethodSpec(
        "dpid",
        "Detail-Preserving Image Downscaling: rewards pixels far from a smoothed guide",
        "sum(w*a) / sum(w), w = c*d^lam, d the colour distance of each pixel to the "
        "3x3-smoothed area-average guide (Weber et al. 2016); always area geometry.",
        _params(Param("lam", 1.0, "float", "a finite number >= 0", _LAM_DOC, minimum=0.0)),
        area_only=True,
        halo_rows=1,
    ),
    MethodSpec(
        "mode",
        "mode pooling: the most frequent value of the window, for label images",
        "per channel, the value whose pixels have the largest total coverage c in the "
        "window; a tie goes to the smallest value. The result always occurs in the window: "
        "no label is invented. Takes uint32 too; not with alpha or linear light.",
        labels=True,
    ),
)

#: Every method by name: a read-only mapping of name to :class:`MethodSpec`.
METHODS: Mapping[str, MethodSpec] = MappingProxyType({m.name: m for m in _SPECS})


def get_method(name: Any) -> MethodSpec:
    """Return the spec of method ``name``; ``ValueError`` if there is none."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve_params(spec: MethodSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``given`` against ``spec`` and fill in the defaults.

    Raises
    ------
    ValueError
        For a parameter the method does not have, or a value out of range.
    """
    unknown = [k for k in given if k not in spec.params]
    if unknown:
        have = ", ".join(spec.params) if spec.params else "none"
        raise ValueError(
            f"{spec.name}: unknown parameter {unknown[0]!r} (parameters of {spec.name}: {have})"
        )
    return {
        name: p.validate(spec.name, given[name]) if name in given else p.default
        for name, p in spec.params.items()
    }

