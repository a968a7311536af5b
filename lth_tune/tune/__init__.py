"""Ray Tune integration: trainables (one Tune iteration = one IMP level) and the sweep driver."""
