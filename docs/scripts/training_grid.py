"""A grid of a training config's images, as the network sees them.

    python docs/scripts/training_grid.py configs/photo.toml docs/images/training-photo-grid.jpg 32
"""

import sys

import numpy as np
import torch
from PIL import Image

from lsqface.morphable.cache import load_uv_model
from lsqface.train.config import load_train_config
from lsqface.train.data import TrainingImages


def main(config_path: str, output: str, count: int = 32, columns: int = 8) -> None:
    torch.set_num_threads(1)
    config = load_train_config(config_path)
    images = TrainingImages(config.data, config.input_size, load_uv_model(size=config.uv_size), seed=config.seed)
    batch, _ = images.images_and_true_maps(list(range(count)))
    tiles = [image.permute(1, 2, 0).numpy() for image in batch]
    grid = np.concatenate([np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)], axis=0)
    picture = Image.fromarray((grid.clip(0, 1) * 255).astype(np.uint8))
    picture.resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.LANCZOS).save(output, quality=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(value) for value in sys.argv[3:4]))
