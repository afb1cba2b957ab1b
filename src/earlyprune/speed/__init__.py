"""How long a training step of a pruned structure takes: the measured step-time predictor of ``target="latency"``."""
