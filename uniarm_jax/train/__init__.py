"""ARM training: the losses, the sharded step, the run config and the loop with its checkpoints."""
