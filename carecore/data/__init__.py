"""Training data: pairs from folders and patches from pairs."""
