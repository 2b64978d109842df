"""Weight matching: cost matrices of gradient pairs, the assignment solvers, coordinate descent over groups."""
