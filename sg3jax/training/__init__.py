"""Training: losses, update steps, EMA, configs and checkpoints."""
