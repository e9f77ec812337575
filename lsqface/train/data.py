"""Training batches as a pure function of (seed, step, image position).

Every image of step s has a global position p = s * G + i (G the global batch
size, i < G); process r of W, micro-batch k of K takes the positions
``[r G / W + k G / (W K), ...)``. Everything random about an image (which
file, which synthetic face, its similarity transform and background) is drawn
from a generator seeded by (seed, p), so a resumed run sees exactly the data an
uninterrupted one would, and W processes together see exactly what one
process would: no data-loader state needs saving.

Sources (``DataConfig.source``):

- ``synthetic``: faces drawn from the 3DMM (lsqface.data.synthetic); the
  generator's own random roll, yaw, pitch, scale and shift are the
  augmentation. With ``background = "natural"`` the face is composited over a
  random crop of a natural photo.
- ``folder`` / ``celeba``: roughly cropped face photos moved by a random
  similarity (lsqface.data.augment), the uncovered part filled with a
  background.

For pretraining (roughly aligned images, seed F) synthetic faces are drawn
upright (roll 0, little shift) and every source is then moved, with its
targets, by the random similarity.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import torch

from lsqface.data.augment import augment, sample_similarity
from lsqface.data.backgrounds import BackgroundSampler, procedural_background
from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.errors import ConfigError
from lsqface.synthetic.camera import EffectRates
from lsqface.synthetic.photoreal import PhotoConfig
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.train.config import DataConfig

#: Keeps image-position seeds of different purposes apart.
_PURPOSE_OFFSET = {"train": 0, "pretrain": 1 << 40, "sampling": 1 << 45, "evaluate": 1 << 50}


def position_generator(seed: int, position: int, purpose: str = "train") -> torch.Generator:
    """A CPU generator seeded by the run seed and an image's global position."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + _PURPOSE_OFFSET[purpose] + int(position)) % (1 << 62))


def synthetic_config(config: DataConfig, size: int, aligned: bool = False) -> SyntheticConfig:
    """The synthetic-face distribution of a data config; ``aligned``: upright faces for pretraining."""
    background = "procedural" if config.background == "procedural" else "none"
    base = SyntheticConfig(
        size=size, identity_std=config.identity_std, expression_std=config.expression_std,
        roll_range=config.roll_range, yaw_range=config.yaw_range, pitch_range=config.pitch_range,
        face_fraction=config.face_fraction, background=background,
    )
    if aligned:
        middle = 0.5 * (config.face_fraction[0] + config.face_fraction[1])
        base = dataclasses.replace(base, roll_range=0.0, shift=0.02, face_fraction=(middle, middle))
    return base


def photo_config(config: DataConfig, size: int) -> PhotoConfig:
    """The whole-head generator's distribution of a data config."""
    return PhotoConfig(
        size=size, identity_std=config.identity_std, expression_std=config.expression_std,
        roll_range=config.roll_range, yaw_range=config.yaw_range, pitch_range=config.pitch_range,
        face_fraction=config.face_fraction, realism=config.realism, occluders=config.occluders,
        long_hair=config.long_hair, wild_textures=config.wild_textures, shadows=config.shadows,
        effects=EffectRates() if config.camera_effects else None,
    )


class TrainingImages:
    """Images for positions of the global batch sequence.

    Args:
        config: the data section.
        size: the network's input side, pixels.
        uv_model: needed for synthetic faces.
        seed: the run's seed.
        purpose: "train" (main training), "pretrain" (aligned images) or "evaluate" (held out).
    """

    def __init__(self, config: DataConfig, size: int, uv_model: UVMorphableModel, seed: int = 0, purpose: str = "train") -> None:
        self.config = config
        self.size = int(size)
        self.uv_model = uv_model
        self.seed = int(seed)
        self.purpose = purpose
        self.dataset = None
        if config.source == "folder":
            if not config.root:
                raise ConfigError("data.root must name a folder of face images when data.source is 'folder'.")
            from lsqface.data.images import ImageFolder

            self.dataset = ImageFolder(config.root, size=self.size, mode="crop")
        elif config.source == "celeba":
            if not config.root:
                raise ConfigError("data.root must name the CelebA folder when data.source is 'celeba'.")
            from lsqface.data.celeba import CelebA

            self.dataset = CelebA(config.root, split="train", size=self.size, mode="crop")
        self._pool: dict[tuple[bool, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._photo = None
        self.backgrounds = None
        if config.background == "natural":
            self.backgrounds = BackgroundSampler(Path(config.background_root) if config.background_root else _packaged_or_none())

    def __len__(self) -> int:
        if self.dataset is None:
            return 0
        return len(self.dataset) if self.config.image_count <= 0 else min(self.config.image_count, len(self.dataset))

    def _background(self, generator: torch.Generator) -> torch.Tensor:
        if self.config.background == "none":
            return torch.zeros(3, self.size, self.size)
        if self.backgrounds is not None:
            return self.backgrounds.sample(1, self.size, self.size, generator)[0]
        return procedural_background(1, self.size, self.size, generator)[0]

    def _synthetic_faces(self, positions: Sequence[int], aligned: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, 7, S, S): image (3), true correspondence (2), depth in mm (1), face mask (1); and the
        truth behind each face: "shape" (B, N) its shape coefficients (identity, then expression, as
        the UV-3DMM's shape basis), "landmarks_5" (B, 5, 2) its 5 landmarks in pixels and "rotation"
        (B, 3, 3) its camera rotation (model to camera)."""
        pool = self.config.synthetic_pool
        keys = [(aligned, int(p) % pool if pool > 0 else int(p)) for p in positions]
        missing = sorted({key for key in keys if key not in self._pool})
        found = {}
        if missing:
            generators = [position_generator(self.seed, key[1], self.purpose) for key in missing]
            seeds = [int(g.initial_seed() % (1 << 31)) for g in generators]
            if self.config.generator == "photo" and not aligned:
                faces = self._photo_generator().generate(
                    seeds, photo_config(self.config, self.size),
                    backgrounds=torch.stack([self._background(g) for g in generators]),
                    textures=torch.stack([self._background(g) for g in generators]))
            else:
                faces = generate_faces(self.uv_model, seeds, synthetic_config(self.config, self.size, aligned))
            images = faces.image
            if self.config.background == "natural" and not (self.config.generator == "photo" and not aligned):
                backgrounds = torch.stack([self._background(g) for g in generators])
                images = faces.confidence * images + (1.0 - faces.confidence) * backgrounds
            maps = torch.cat([images, faces.correspondence, faces.depth, faces.confidence], dim=1)
            shape = torch.cat([faces.identity, faces.expression], dim=1).to(torch.float32)
            found = {key: (maps[k], shape[k], faces.landmarks_5[k].float(), faces.rotation[k].float())
                     for k, key in enumerate(missing)}
            if pool > 0:
                self._pool.update(found)
        source = found if pool <= 0 else self._pool
        entries = [source[key] for key in keys]
        return (torch.stack([entry[0] for entry in entries]),
                {"shape": torch.stack([entry[1] for entry in entries]),
                 "landmarks_5": torch.stack([entry[2] for entry in entries]),
                 "rotation": torch.stack([entry[3] for entry in entries])})

    def _photo_generator(self):
        """The whole-head generator, built on first use (it reads the ICT-FaceKit head, cached after the first time)."""
        if self._photo is None:
            from lsqface.synthetic.head import load_head
            from lsqface.synthetic.photoreal import PhotoGenerator

            source = self.uv_model.model.notes.get("source")
            self._photo = PhotoGenerator(self.uv_model, load_head(source, self.uv_model.model.triangles))
        return self._photo

    def _synthetic_images(self, positions: Sequence[int], aligned: bool) -> torch.Tensor:
        return self._synthetic_faces(positions, aligned)[0][:, :3].contiguous()

    def images_and_true_maps(self, positions: Sequence[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Posed synthetic faces at ``positions`` with the generator's true maps (the "true_maps" supervision).

        Returns:
            (B, 3, S, S) images in [0, 1] (the same as :meth:`images`) and a dict of
            "correspondence" (B, 2, S, S) true (u, v), "depth" (B, 1, S, S) camera z in mm (0 off the
            face), "confidence" (B, 1, S, S) the face mask, "shape" (B, N) the true shape
            coefficients (identity, then expression), "landmarks_5" (B, 5, 2) the true 5
            landmarks in pixels (the evaluation's convention) and "rotation" (B, 3, 3) the true camera
            rotation (model to camera).

        Raises:
            ConfigError: the data source is not synthetic.
        """
        if self.dataset is not None:
            raise ConfigError("Only synthetic faces have true maps; set data.source = 'synthetic' for train.supervision = 'true_maps'.")
        faces, truth = self._synthetic_faces(positions, aligned=False)
        return faces[:, :3].contiguous(), {"correspondence": faces[:, 3:5].contiguous(), "depth": faces[:, 5:6].contiguous(),
                                           "confidence": faces[:, 6:7].contiguous(), **truth}

    def _file_index(self, position: int) -> int:
        count = len(self)
        epoch, offset = divmod(int(position), count)
        order = torch.randperm(count, generator=position_generator(self.seed, epoch, "train"))
        return int(order[offset])

    def images(self, positions: Sequence[int], aligned: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The images at ``positions``: ((B, 3, S, S) in [0, 1], (B, 2, 3) similarity or None).

        ``aligned`` (pretraining): synthetic faces are upright, and every image is then moved by a
        random similarity, returned so the caller moves the targets alike. Otherwise folder
        and CelebA images are moved (the matrix is returned) and synthetic faces come posed.
        """
        generators = [position_generator(self.seed, position, self.purpose) for position in positions]
        if self.dataset is None:
            images = self._synthetic_images(positions, aligned)
            if not aligned:
                return images, None
        else:
            images = torch.stack([self.dataset[self._file_index(p)]["image"] for p in positions])
        matrices = torch.cat([sample_similarity(self.config.augmentation, 1, self.size, self.size, g) for g in generators])
        backgrounds = torch.stack([self._background(g) for g in generators])
        moved = augment(images, self.config.augmentation, background=backgrounds, matrix=matrices)
        return moved.image.clamp(0.0, 1.0), matrices


def _packaged_or_none():
    from lsqface.data.backgrounds import packaged_natural_images

    files = packaged_natural_images()
    return files if files else None


def batch_positions(step: int, global_batch: int, rank: int, world_size: int, micro_batches: int) -> list[list[int]]:
    """Global image positions of each micro-batch of one process at one step.

    Raises:
        ConfigError: the global batch does not split evenly over processes and micro-batches.
    """
    parts = world_size * micro_batches
    if global_batch % parts:
        raise ConfigError(
            f"The batch size {global_batch} must be divisible by processes x micro_batches = {parts}; "
            "change batch_size or micro_batches."
        )
    micro = global_batch // parts
    first = step * global_batch + rank * micro_batches * micro
    return [list(range(first + k * micro, first + (k + 1) * micro)) for k in range(micro_batches)]
