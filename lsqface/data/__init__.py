"""Images and datasets: reading images, image folders, CelebA/MAFL/AFLW, backgrounds, augmentation.

Pixel coordinates in this package (landmarks, transforms): x right, y down, in
pixels, with the centre of the top-left pixel at (0, 0) (the solver's
convention, :mod:`lsqface.solver.sampling`).
"""

from lsqface.data.aflw import AFLW, MTFLTest
from lsqface.data.augment import AugmentedBatch, SimilarityAugmentation, augment, sample_similarity, transform_points
from lsqface.data.backgrounds import BackgroundSampler, packaged_natural_images, procedural_background
from lsqface.data.celeba import LANDMARK_NAMES, MAFL, CelebA
from lsqface.data.images import DatasetError, ImageFolder, fit_to_square, list_image_files, read_image

__all__ = [
    "AFLW", "MTFLTest", "AugmentedBatch", "SimilarityAugmentation", "augment", "sample_similarity", "transform_points",
    "BackgroundSampler", "packaged_natural_images", "procedural_background", "LANDMARK_NAMES", "MAFL", "CelebA",
    "DatasetError", "ImageFolder", "fit_to_square", "list_image_files", "read_image",
]
