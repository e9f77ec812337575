"""Images and datasets: reading images, image folders, CelebA/MAFL/AFLW, backgrounds, augmentation.

Pixel coordinates in this package (landmarks, transforms): x right, y down, in
pixels; the pixel in column j, row i has its centre at (j + 0.5, i + 0.5), so a
W x H image covers [0, W] x [0, H] (the project's convention,
:mod:`lsqface.render.rasterize`, :mod:`lsqface.solver.sampling`).
"""

from lsqface.data.aflw import AFLW, MTFLTest
from lsqface.data.augment import AugmentedBatch, SimilarityAugmentation, augment, sample_similarity, transform_points
from lsqface.data.backgrounds import BackgroundSampler, packaged_natural_images, procedural_background
from lsqface.data.celeba import LANDMARK_NAMES, MAFL, CelebA
from lsqface.data.images import ImageFolder, fit_to_square, list_image_files, read_image
from lsqface.errors import DatasetError

__all__ = [
    "AFLW", "MTFLTest", "AugmentedBatch", "SimilarityAugmentation", "augment", "sample_similarity", "transform_points",
    "BackgroundSampler", "packaged_natural_images", "procedural_background", "LANDMARK_NAMES", "MAFL", "CelebA",
    "DatasetError", "ImageFolder", "fit_to_square", "list_image_files", "read_image",
]
