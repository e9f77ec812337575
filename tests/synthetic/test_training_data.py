"""Training batches from the whole-head generator: the same positions give the same images and maps."""

import dataclasses

import torch

from lsqface.train.config import DataConfig
from lsqface.train.data import TrainingImages, photo_config


def test_photo_batches_are_a_function_of_seed_and_position(ict_uv_model, photo_generator):
    config = DataConfig(source="synthetic", generator="photo", background="procedural")

    def batch(positions):
        images = TrainingImages(config, 32, ict_uv_model, seed=3)
        images._photo = photo_generator  # built from the test's archive, not the user's cache
        return images.images_and_true_maps(positions)

    first, maps = batch([4, 5, 6])
    again, maps_again = batch([6, 4])
    torch.testing.assert_close(again[1], first[0])
    torch.testing.assert_close(maps_again["correspondence"][0], maps["correspondence"][2])
    assert first.shape == (3, 3, 32, 32) and maps["confidence"].shape == (3, 1, 32, 32)
    assert maps["shape"].shape == (3, ict_uv_model.n_shape) and maps["landmarks_5"].shape == (3, 5, 2)
    # Each face's true rotation rides with it: a proper rotation, the same for the same position.
    rotation = maps["rotation"].double()
    assert rotation.shape == (3, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3),
                               atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(3, dtype=torch.float64), atol=1e-5)
    torch.testing.assert_close(maps_again["rotation"][0], maps["rotation"][2])


def test_photo_config_follows_the_data_section():
    config = DataConfig(generator="photo", realism=0.5, occluders=0.0, wild_textures=0.3, camera_effects=False,
                        face_fraction=(0.3, 0.6))
    photo = photo_config(config, 64)
    assert (photo.size, photo.realism, photo.occluders, photo.wild_textures, photo.effects) == (64, 0.5, 0.0, 0.3, None)
    assert photo.face_fraction == (0.3, 0.6)
    assert dataclasses.replace(config, camera_effects=True) != config
