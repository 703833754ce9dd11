"""Training: the input pipeline and the progress / stop protocol for training."""
