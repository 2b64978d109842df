"""Which LAP solver a job's matchings use: the spec's `params.matching.solver`.

"auto" times every installed solver on the first problems of each size and keeps the
fastest (trajx.engine.solvers.FastestSolver); one such measurement serves every job of
this process, so it lives here, with the caller, not in the engine.
"""

from functools import cache

from trajx.engine.solvers import SOLVERS, FastestSolver, Solver, get_solver


@cache
def _fastest() -> FastestSolver:
    return FastestSolver(SOLVERS)


def solver_for(name: str) -> Solver:
    """The solver `name` ("auto", "scipy", "lapx"); ValueError if it is not installed."""
    return _fastest() if name == "auto" else get_solver(name)
