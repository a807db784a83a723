"""Training: losses, metrics, trainer, windows, checkpoints, logging."""
