"""Baselines the paper compares against (seed P): a 2D-augmented MoFA reimplementation, and the comparison.

:mod:`lsqface.baselines.mofa` holds the network, the model-based decoder and the
losses; :mod:`lsqface.baselines.train_mofa` the resumable training command
(``lsqface train-mofa``); :mod:`lsqface.baselines.compare` the comparison
(``lsqface compare``), which evaluates MoFA checkpoints beside lsqface ones on the
synthetic benchmark of :mod:`lsqface.evaluate.benchmark`.
"""
