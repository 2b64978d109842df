"""Trajectory transfer: GMT/FGMT/Naive/Oracle methods, the step schedule, the transfer loop."""
