"""Physical removal of a plan: the engine, optimizer-state surgery, rollback of a failed step, BatchNorm
re-estimation, and the prunability check that tries a removal before training."""
