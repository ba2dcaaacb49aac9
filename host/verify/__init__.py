"""Verification as a product (issue #18, spec §22): the seeded random co-simulation
regression (:mod:`.regress`, ``neurovm regress``) and functional coverage
(:mod:`.coverage`: named cover points, merged across runs, a report, a check).

Both drive the cocotb testbenches of ``tests/cocotb`` and so need a source checkout.
"""

from .coverage import COVER_POINTS, CoverageDB, CoverageError

__all__ = ["COVER_POINTS", "CoverageDB", "CoverageError"]
