"""Baselines the paper compares against (seed P): a 2D-augmented MoFA reimplementation.

:mod:`lsqface.baselines.mofa` holds the network, the model-based decoder and the
losses; :mod:`lsqface.baselines.train_mofa` the resumable training command
(``lsqface train-mofa``). ``lsqface compare`` (lsqface.evaluate.compare)
evaluates MoFA checkpoints beside lsqface ones.
"""
