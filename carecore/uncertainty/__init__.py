"""Reliability read-outs (CARE-NOTES §5–§7): the maths in :mod:`.laplace` (one Laplace distribution per
pixel) and :mod:`.mixture` (ensembles' mixtures, disagreement D, calibration), which know nothing of
models or files; ensembles of models (folders, training, reference levels) in :mod:`.ensemble`.

Everything is importable from here, e.g. ``from carecore.uncertainty import Ensemble, laplace_interval``.
"""
from .ensemble import ENSEMBLE_FILE, Ensemble, ood_check, reference_levels, train_ensemble
from .laplace import (laplace_cdf, laplace_entropy, laplace_interval, laplace_quantile, laplace_samples,
                      laplace_variance)
from .mixture import (DEFAULT_CONFIDENCES, calibration_curve, coverage_by_brightness, disagreement,
                      interval_spread, measure_calibration, mixture_cdf,
                      mixture_mean_variance, mixture_quantile, mixture_samples, pit, predictive_readouts,
                      probabilistic_readouts)

__all__ = ['DEFAULT_CONFIDENCES', 'ENSEMBLE_FILE', 'Ensemble', 'calibration_curve', 'coverage_by_brightness',
           'disagreement', 'interval_spread',
           'laplace_cdf', 'laplace_entropy', 'laplace_interval', 'laplace_quantile',
           'laplace_samples', 'laplace_variance', 'measure_calibration', 'mixture_cdf',
           'mixture_mean_variance', 'mixture_quantile', 'mixture_samples', 'ood_check', 'pit',
           'predictive_readouts', 'probabilistic_readouts', 'reference_levels', 'train_ensemble']
