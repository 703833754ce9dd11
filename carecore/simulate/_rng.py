import numpy as np


def make_rng(seed):
    """A generator and the integer seed that reproduces it (a fresh seed is drawn for ``None``)."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**32))
    if isinstance(seed, np.random.Generator):
        raise TypeError("pass an integer seed so the run can be reproduced, not a Generator")
    return np.random.default_rng(int(seed)), int(seed)
