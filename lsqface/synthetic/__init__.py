"""The synthetic face generator that looks like photographs: whole heads, hair, skin, occluders, lights, cameras.

Layered below :mod:`lsqface.data`, which draws training batches from it; it knows
nothing of files or training and takes its background photos as tensors.
"""
