"""Synthetic sample volumes for the embedded demo, and ``carecore demo-data``.

Everything here is the project's own simulator output, deterministic by seed: no downloads.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..errors import CareError
from ._rng import make_rng
from .anisotropic import simulate_anisotropic
from .photon import simulate_photon_noise
from .structures import simulate_subdiffraction, smooth_background


def nuclei_volume(shape=(32, 128, 128), *, n_nuclei=None, radius=(3.0, 9.0, 9.0), seed=None):
    """A 3D stack of nuclei-like blobs: soft-edged ellipsoids with a chromatin-like texture.

    Parameters
    ----------
    shape : tuple of 3 ints (Z, Y, X)
    n_nuclei : int, optional
        Default: about one nucleus per 2.5 radius-sized boxes of the volume's XY plane.
    radius : (float, float, float)
        Mean radii in pixels along Z, Y, X (each nucleus varies by ±30 %).
    seed : int, optional

    Returns
    -------
    volume : numpy.ndarray (float32), values in [0, 1]
    params : dict
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise CareError(f"nuclei_volume needs a 3D shape (Z, Y, X) of at least 4 per side, got {shape}")
    rng, seed = make_rng(seed)
    if n_nuclei is None:
        n_nuclei = max(1, int(shape[1] * shape[2] / (2.5 * 4 * radius[1] * radius[2]) * max(1, shape[0] / (4 * radius[0]))))
    vol = np.zeros(shape, np.float32)
    texture = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.2)
    texture = 1 + 0.6 * texture / max(float(texture.std()), 1e-6)
    for _ in range(n_nuclei):
        c = rng.uniform(0, shape)
        r = np.asarray(radius) * rng.uniform(0.7, 1.3, size=3)
        a = rng.uniform(0.4, 1.0)
        lo = np.maximum((c - 1.5 * r).astype(int), 0)
        hi = np.minimum((c + 1.5 * r).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        d = np.sqrt(((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2)
        blob = a / (1 + np.exp((d - 1) / 0.08))
        sl = tuple(slice(l, h) for l, h in zip(lo, hi))
        vol[sl] = np.maximum(vol[sl], blob)
    vol = np.clip(vol * texture, 0, None)
    vol = ndi.gaussian_filter(vol, 0.7)
    vol /= max(float(vol.max()), 1e-12)
    return vol.astype(np.float32), {"shape": list(shape), "n_nuclei": n_nuclei, "radius": list(radius), "seed": seed}


def surface_stack(shape=(24, 128, 128), *, cell_size=10.0, thickness=1.5, n_off_surface=20, seed=None):
    """A curved single-cell-layer surface inside a 3D stack, with its 2D projection as target.

    A cell-membrane pattern (Voronoi boundaries) lies on the surface ``z = h(y, x)``; a few bright
    blobs away from the surface make a plain maximum projection wrong, as in the fly wing data.

    Returns
    -------
    stack : numpy.ndarray (float32), shape (Z, Y, X), values in [0, 1]
    projection : numpy.ndarray (float32), shape (Y, X): the membrane pattern on the surface
    params : dict, with ``height`` (the surface's Z at each pixel) as a list-free summary
    """
    from scipy.spatial import cKDTree

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] < 4 or min(shape[1:]) < 16:
        raise CareError(f"surface_stack needs a shape (Z >= 4, Y >= 16, X >= 16), got {shape}")
    rng, seed = make_rng(seed)
    nz, ny, nx = shape
    n_cells = max(4, int(ny * nx / cell_size**2))
    seeds = rng.uniform(0, (ny, nx), size=(n_cells, 2))
    yy, xx = np.mgrid[0:ny, 0:nx]
    d, _ = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], 1), k=2)
    gap = (d[:, 1] - d[:, 0]).reshape(ny, nx)
    projection = np.exp(-(gap**2) / (2 * 0.8**2)).astype(np.float32)
    projection *= 0.6 + 0.4 * smooth_background((ny, nx), scale=max(ny, nx) / 6, seed=int(rng.integers(2**32)))[0]
    h, _ = smooth_background((ny, nx), scale=max(ny, nx) / 3, seed=int(rng.integers(2**32)))
    height = 0.2 * nz + 0.6 * nz * h
    z = np.arange(nz)[:, None, None]
    stack = projection[None] * np.exp(-((z - height[None]) ** 2) / (2 * thickness**2))
    for _ in range(n_off_surface):
        c = rng.uniform(0, shape)
        if abs(c[0] - height[int(c[1]), int(c[2])]) < 3 * thickness:
            continue
        sl = tuple(slice(max(int(ci) - 4, 0), min(int(ci) + 5, s)) for ci, s in zip(c, shape))
        g = np.ogrid[sl]
        stack[sl] += 0.8 * np.exp(-sum((gi - ci) ** 2 for gi, ci in zip(g, c)) / (2 * 1.5**2))
    stack = ndi.gaussian_filter(stack, (1.0, 0.6, 0.6))
    stack /= max(float(stack.max()), 1e-12)
    projection /= max(float(projection.max()), 1e-12)
    params = {"shape": list(shape), "cell_size": cell_size, "thickness": thickness, "seed": seed,
              "height_range": [float(height.min()), float(height.max())]}
    return stack.astype(np.float32), projection.astype(np.float32), params


#: The demo datasets: one per task the engine trains (the model kinds, denoising in 2D and 3D).
#: ``_SEED_ORDER`` fixes the order in which tasks draw their seeds, so every task keeps its data
#: whichever others are written (and when a task is added).
DEMO_TASKS = ("denoising3d", "denoising2d", "upsampling", "isotropic", "projection", "subdiffraction")
_SEED_ORDER = ("denoising3d", "denoising2d", "upsampling", "isotropic", "projection", "subdiffraction")


def _write(path, data, axes, spacing=None):
    from ..io import write_image

    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, data, axes=axes, spacing=spacing)


def write_demo_data(root, *, tasks=DEMO_TASKS, seed=0, size="small"):
    """Write a small ready-to-train dataset per task under ``root``; returns ``{task: folder}``.

    Each task folder holds ``train/low``, ``train/high`` (same file names pair up), ``test/low``,
    ``test/high`` and a ``dataset.json`` with the task, axes and the simulation parameters.

    Parameters
    ----------
    root : str or Path
    tasks : iterable of str
        Any of :data:`DEMO_TASKS`.
    seed : int
        The whole dataset is a deterministic function of the seed.
    size : {"small", "tiny"}
        ``tiny`` is for tests (a few seconds in all).

    Examples
    --------
    >>> write_demo_data("demo", tasks=["denoising3d"])  # doctest: +SKIP
    {'denoising3d': PosixPath('demo/denoising3d')}
    """
    unknown = sorted(set(tasks) - set(DEMO_TASKS))
    if unknown:
        raise CareError(f"unknown demo task(s) {unknown}; choose from {', '.join(DEMO_TASKS)}")
    if size not in ("small", "tiny"):
        raise CareError(f"size must be 'small' or 'tiny', got {size!r}")
    tiny = size == "tiny"
    root = Path(root)
    rng = np.random.default_rng(seed)
    out = {}
    vol_shape = (16, 64, 64) if tiny else (32, 128, 128)
    img_shape = (96, 96) if tiny else (256, 256)
    n_train = 2 if tiny else 3
    for task in _SEED_ORDER:  # fixed order: each task's seeds do not depend on which others are written
        task_seed = int(rng.integers(2**32))
        if task not in tasks:
            continue
        trng = np.random.default_rng(task_seed)
        sub = lambda: int(trng.integers(2**32))  # noqa: E731
        folder = root / task
        info = {"task": task, "seed": seed, "files": {}}
        names = [f"train/{{}}/sample{i:02d}.tif" for i in range(n_train)] + ["test/{}/sample00.tif"]
        for name in names:
            if task == "denoising3d":
                high, p = nuclei_volume(vol_shape, seed=sub())
                low, q = simulate_photon_noise(high, 8.0, background=2.0, read_noise=1.0, seed=sub())
                axes = axes_low = "ZYX"
            elif task == "denoising2d":
                low_, high, p = simulate_subdiffraction(img_shape, kind="granules", seed=sub(), n_granules=200)
                high = ndi.gaussian_filter(high, 1.5)
                high /= high.max()
                low, q = simulate_photon_noise(high, 6.0, background=1.0, read_noise=1.0, seed=sub())
                axes = axes_low = "YX"
            elif task == "upsampling":
                high, p = nuclei_volume(vol_shape, seed=sub())
                low, q = simulate_anisotropic(high, 4, axes="ZYX", axis="Z", psf_sigma=2.0, peak_photons=50,
                                              seed=sub(), upsample_back=not name.startswith("test"))
                axes = axes_low = "ZYX"
            elif task == "isotropic":
                high, p = nuclei_volume((vol_shape[1] // 2,) + vol_shape[1:], seed=sub())
                low, q = simulate_anisotropic(high, 4, axes="ZYX", axis="Z", psf_sigma=2.0, peak_photons=100,
                                              seed=sub(), upsample_back=False)
                axes = axes_low = "ZYX"
            elif task == "projection":
                high_stack, high, p = surface_stack((vol_shape[0],) + vol_shape[1:], seed=sub())
                low, q = simulate_photon_noise(high_stack, 6.0, background=1.0, read_noise=1.0, seed=sub())
                axes, axes_low = "YX", "ZYX"
            else:  # subdiffraction
                low, high, p = simulate_subdiffraction(img_shape, kind="tubules", seed=sub())
                q = {}
                axes = axes_low = "YX"
            spacing_low = {"Z": 4.0, "Y": 1.0, "X": 1.0} if task in ("isotropic",) or (
                task == "upsampling" and name.startswith("test")) else None
            _write(folder / name.format("low"), low, axes_low, spacing_low)
            _write(folder / name.format("high"), high, axes)
            info["files"][name.format("*")] = {"clean": p, "degradation": q}
        info["axes_low"], info["axes_high"] = axes_low, axes
        if task in ("upsampling", "isotropic"):
            info["factor"] = 4.0
        if task in ("isotropic", "upsampling"):
            info["psf_sigma"] = 2.0   # the axial PSF sigma the stacks were blurred with, in pixels of the fine grid
        (folder / "dataset.json").write_text(json.dumps(info, indent=1, default=float))
        out[task] = folder
    return out
