"""The Ray edge: the Tune trainable (one iteration = one runner step: an IMP level or a PBP stage), the sweep
driver (Tuner + OptunaSearch + FailureConfig) and the driver-side results table."""
