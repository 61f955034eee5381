"""Compress to a budget: the most accurate student whose latency, measured on the target backend, fits.

* :mod:`distil.shrink.candidates` -- narrower / shallower versions of the teacher's own architecture.
* :mod:`distil.shrink.search` -- measured latency per candidate, successive halving, the winner's chain.
* :mod:`distil.shrink.report` -- every candidate as a point, the Pareto front, the budget, the winner.
"""

from distil.shrink.candidates import Candidate, architecture_candidates, build_candidate
from distil.shrink.search import ShrinkResult, parse_latency, parse_size, shrink_model

__all__ = [
    "Candidate",
    "ShrinkResult",
    "architecture_candidates",
    "build_candidate",
    "parse_latency",
    "parse_size",
    "shrink_model",
]
