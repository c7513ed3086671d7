"""Grid expansion, the run store and the executors that turn an experiment into saved results."""
