"""The method cases: one list that the reference tests, the CUDA tests and the
benchmarks draw from.

A method added to :data:`downpool.METHODS` without a case here fails
``tests/test_cases.py``, which names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Case", "CASES", "DEFAULT_CASES", "REFERENCE_CASES", "case_ids"]


@dataclass(frozen=True)
class Case:
    """One method with one set of parameters.

    Attributes
    ----------
    method, params
        As passed to :func:`downpool.downscale`.
    check : {"formula", "exact", "statistical"}
        How a result is checked: against the float64 formula of
        ``reference.reference_downscale`` within SPEC 1's accuracy; bit for
        bit against ``reference.mode_downscale`` (a label method, whose
        result is one of the window's values); or by its draws' statistics
        (``tests/test_limits.py``: stochastic sampling).
    extreme : bool
        An end of a parameter's range rather than a value users pick.
    """

    method: str
    params: dict = field(default_factory=dict)
    check: str = "formula"
    extreme: bool = False

    @property
    def id(self) -> str:
        return self.method + "".join(f"-{k}={v}" for k, v in self.params.items())

    @property
    def labels(self) -> bool:
        """The method pools labels: no alpha, no linear light, uint32 too."""
        return self.check == "exact"


CASES = (
    Case("avg"),
    Case("max"),
    Case("lp"),
    Case("lp", {"p": 0.5}),
    Case("lp", {"p": 0.3}, extreme=True),
    Case("lp", {"p": 1000.0}, extreme=True),
    Case("softpool"),
    Case("softpool", {"beta": 0.0}, extreme=True),
    Case("softpool", {"beta": 1e4}, extreme=True),
    Case("stochastic", {"mode": "expectation"}),
    Case("stochastic", {"mode": "sample", "seed": 0}, check="statistical"),
    Case("stochastic", {"mode": "sample", "seed": 2**63 + 12345}, check="statistical",
         extreme=True),
    Case("dpp"),
    Case("dpp", {"alpha": 0.3, "lam": 2.0, "variant": "asym"}),
    Case("dpp", {"alpha": 0.0, "lam": 0.0}, extreme=True),
    Case("dpp", {"alpha": 0.5, "lam": 100.0, "variant": "asym"}, extreme=True),
    Case("dpp", {"alpha": 1e6, "lam": 2.0}, extreme=True),
    Case("dpid"),
    Case("dpid", {"lam": 0.5}),
    Case("dpid", {"lam": 0.0}, extreme=True),
    Case("dpid", {"lam": 60.0}, extreme=True),
    Case("mode", check="exact"),
)

#: Every method at its defaults, and stochastic's other mode.
DEFAULT_CASES = tuple(c for c in CASES if not c.extreme and (
    not c.params or c.params == {"mode": "expectation"} or c.params == {"mode": "sample", "seed": 0}))

#: The cases a reference formula checks, at the values users pick.
REFERENCE_CASES = tuple(c for c in CASES if c.check != "statistical" and not c.extreme)


def case_ids(cases) -> list[str]:
    return [c.id for c in cases]
