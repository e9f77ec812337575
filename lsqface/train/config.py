"""Training configuration: frozen dataclasses with the paper's settings, loadable from TOML.

``lsqface pretrain --config configs/X.toml`` and ``lsqface train --config
configs/X.toml`` read one file with the sections below (every key optional;
unknown keys are errors that name the key). configs/tiny.toml is for tests,
configs/cpu.toml a CPU default, configs/paper.toml the paper's GPU settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lsqface.config import from_dict, read_toml
from lsqface.data.augment import SimilarityAugmentation
from lsqface.errors import ConfigError
from lsqface.nets.unet import SIZE_MULTIPLE, UNetConfig
from lsqface.solver.fit import SolverConfig
from lsqface.train.adaptive import AdaptiveConfig


@dataclass(frozen=True)
class DataConfig:
    """Where training images come from.

    Attributes:
        source: "synthetic" (faces drawn from the 3DMM on the fly, lsqface.data.synthetic),
            "folder" (an image folder of roughly cropped faces) or "celeba" (aligned CelebA).
        root: the folder (source "folder") or the CelebA root (source "celeba").
        background: "procedural" (random colour fields), "natural" (random crops of the photos
            in ``background_root``, or of images packaged with installed libraries) or "none" (black);
            fills what the moved face does not cover.
        background_root: folder of natural images for ``background = "natural"``.
        image_count: use only the first this many images of a folder / CelebA (0: all); the
            paper pretrains on 1k CelebA images.
        synthetic_pool: if positive, synthetic images repeat with this period (position modulo
            the pool) and each is drawn once and kept in memory: short CPU runs and tests
            spend their time training instead of rendering.
        identity_std, expression_std, yaw_range, pitch_range, roll_range: synthetic face
            distributions (lsqface.data.SyntheticConfig) for main training.
        face_fraction: range of the synthetic face width as a fraction of the image width.
        augmentation: the random similarity applied to folder / CelebA images (and to every
            pretraining image and its targets).
        generator: synthetic faces as "mask" (the fitted face region alone over the background,
            lsqface.data.synthetic) or "photo" (whole heads with hair, clothing, occluders, lights
            and camera effects, lsqface.synthetic.photoreal; the true maps stay the face region).
        realism, occluders, long_hair, wild_textures, shadows, camera_effects: the "photo" generator's
            settings (lsqface.synthetic.photoreal.PhotoConfig): the probability scales of hair and
            skin details and of occluders, the share of long hair, of wild textures and of images
            lit by a sun that casts shadows, and whether camera effects (blur, noise, JPEG, white
            balance...) are applied.
        photos: for ``train.supervision = "mixed"``: a folder of unlabelled real face photos (source
            "folder") or a CelebA root (source "celeba"), trained through the least-squares layer
            with the paper's unsupervised loss beside the synthetic true-map batches.
        photos_source: "folder" or "celeba".
    """

    source: Literal["synthetic", "folder", "celeba"] = "synthetic"
    root: str = ""
    background: Literal["procedural", "natural", "none"] = "procedural"
    background_root: str = ""
    image_count: int = 0
    synthetic_pool: int = 0
    identity_std: float = 1.0
    expression_std: float = 0.5
    yaw_range: float = 25.0
    pitch_range: float = 15.0
    roll_range: float = 180.0
    face_fraction: tuple[float, float] = (0.45, 0.75)
    augmentation: SimilarityAugmentation = field(default_factory=SimilarityAugmentation)
    generator: Literal["mask", "photo"] = "mask"
    realism: float = 1.0
    occluders: float = 1.0
    long_hair: float = 0.35
    wild_textures: float = 0.0
    shadows: float = 0.0
    camera_effects: bool = True
    photos: str = ""
    photos_source: Literal["folder", "celeba"] = "folder"


@dataclass(frozen=True)
class Schedule:
    """How a training phase steps: the fields pretraining and main training share.

    Attributes:
        steps: iterations.
        batch_size: images per iteration, over all processes.
        learning_rate: Adam's step size.
        learning_rate_decay: "constant", or "cosine" (after the warm-up, the step size falls
            along half a cosine to ``final_learning_rate_fraction`` of itself at the last step).
        final_learning_rate_fraction: the cosine schedule's last step size over the first.
    """

    steps: int = 100000
    batch_size: int = 5
    learning_rate: float = 1e-5
    learning_rate_decay: Literal["constant", "cosine"] = "constant"
    final_learning_rate_fraction: float = 0.01


@dataclass(frozen=True)
class PretrainConfig(Schedule):
    """Supervised pretraining on roughly aligned images (seed F).

    Attributes:
        steps, batch_size, learning_rate, learning_rate_decay, final_learning_rate_fraction: as in
            :class:`Schedule`; the paper pretrains 14k steps of 5 images at 1e-4.
        image_count: pretrain on only the first this many images of a folder / CelebA (paper: 1k;
            0: all); synthetic faces ignore it.
        landmarks_5: the average 5-landmark positions (x0, y0, ..., x4, y4) in pixels of the
            network input, CelebA order (eyes, nose tip, mouth corners); empty: the default
            for the data source (docs/training.md).
        camera_field_of_view: horizontal field of view of the aligning camera, degrees.
        depth_target: the constant depth map's value (the network's depth at initialisation is 1.001).
        correspondence_weight, depth_weight, confidence_weight: weights of the three supervised terms.
    """

    steps: int = 14000
    learning_rate: float = 1e-4
    image_count: int = 1000
    landmarks_5: tuple[float, ...] = ()
    camera_field_of_view: float = 30.0
    depth_target: float = 1.0
    correspondence_weight: float = 1.0
    depth_weight: float = 0.1
    confidence_weight: float = 0.1


@dataclass(frozen=True)
class LossConfig:
    """Weights and caps of the unsupervised losses (docs/training.md says why each exists).

    Attributes:
        photometric_weight: weight of the robust photometric term.
        residual_cap: tau, the colour residual (RGB distance, display units) above which a pixel
            counts as unexplained; uncovered pixels cost tau^2.
        geometric_weight: weight of the correspondence-consistency term.
        geometric_cap: cap of the reprojection distance, as a fraction of the image side.
        statistical_weight: weight of sum_i w_i a_i^2 (the adaptive weights of seed G).
        true_correspondence_weight, true_depth_weight, true_confidence_weight: weights of the three
            terms of ``train.supervision = "true_maps"`` (lsqface.train.losses.true_map_loss).
        true_depth_tilt_weight: with ``train.supervision = "true_maps"``, weight of the difference
            between the planes fitted to the predicted and the true log depth over the face
            (lsqface.train.losses.depth_tilt): a nod or turn of the head that the depth map leaves out.
        true_shape_weight: with ``train.supervision = "true_maps"``, weight of the vertex error (mm,
            after similarity alignment, as the benchmark measures it) of the shape the least-squares
            layer (``[solver]``) fits from the network's maps, against the face's true shape
            (lsqface.train.losses.true_shape_loss).
        true_landmark_weight: likewise, weight of the 5-landmark error (percent of the inter-ocular
            distance, the benchmark's fitted error) of the fitted shape projected by the fitted camera
            (lsqface.train.losses.true_landmark_loss). This, ``true_shape_weight`` and
            ``true_rotation_weight`` all 0 skip the solve.
        true_landmark_cap: the landmark term per image is min(error, cap) (percent): a fit thrown
            far off (a camera behind the face gives thousands of percent) adds no gradient, so the
            term works on the faces the fit can still recover.
        true_rotation_weight: likewise, weight of the angle (degrees) between the fitted camera's
            rotation and the face's true one (lsqface.train.losses.true_rotation_loss). The two terms
            above are blind to how the fit splits a head turn between the camera and the shape: the
            vertex error aligns the shapes by a similarity first, and the projected landmarks match
            either way; this one asks for the turn in the camera.
        true_rotation_cap: the rotation term per image is min(angle, cap) (degrees): a fit turned
            round (a mirrored or upside-down solve) adds no gradient, as with the landmark cap.
    """

    photometric_weight: float = 1.0
    residual_cap: float = 0.25
    geometric_weight: float = 1.0
    geometric_cap: float = 0.25
    statistical_weight: float = 1e-3
    true_correspondence_weight: float = 1.0
    true_depth_weight: float = 1.0
    true_confidence_weight: float = 0.1
    true_depth_tilt_weight: float = 0.0
    true_shape_weight: float = 0.0
    true_landmark_weight: float = 0.0
    true_landmark_cap: float = 100.0
    true_rotation_weight: float = 0.0
    true_rotation_cap: float = 90.0


@dataclass(frozen=True)
class MainTrainConfig(Schedule):
    """Main training (unsupervised, or supervised with the synthetic generator's true maps).

    Attributes:
        steps, batch_size, learning_rate, learning_rate_decay, final_learning_rate_fraction: as in
            :class:`Schedule`.
        supervision: "unsupervised" (network -> least squares -> losses, the paper's method) or
            "true_maps" (an upper bound for ablations: the maps are regressed onto the synthetic
            generator's true correspondence, relative depth and face mask; needs
            ``data.source = "synthetic"``; no solve during training), or "mixed": each step adds to
            a synthetic true-map batch a batch of ``photo_batch_size`` unlabelled real photos
            (``data.photos``) trained with the unsupervised loss (photometric, robust geometric,
            statistical with the adaptive regularisation), weighted by ``photo_weight``: the
            paper's self-supervision on the user's own faces, anchored by the synthetic truth.
        photo_batch_size, photo_weight: the real-photo batch of "mixed" supervision and its weight.
        camera_centre_steps: during the first this many iterations, the solve's camera centre q
            is pulled towards a fixed point in front of the face (seed F).
        camera_centre_weight: that pull's weight (SolverConfig.camera_centre_weight).
        camera_distance: the fixed point lies this many face widths in front of the mean face.
        regularisation_scale: the solve's regularisation weight of each coefficient is this times
            its adaptive weight (initial adaptive weight 0.099: scale 10 gives about 1, the
            SolverConfig default).
    """

    supervision: Literal["unsupervised", "true_maps", "mixed"] = "unsupervised"
    photo_batch_size: int = 4
    photo_weight: float = 1.0
    camera_centre_steps: int = 2000
    camera_centre_weight: float = 1.0
    camera_distance: float = 4.0
    regularisation_scale: float = 10.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``lsqface pretrain/train --config FILE`` reads it.

    Attributes:
        input_size: side of the network's square input, pixels (divisible by 16).
        uv_size: UV-3DMM image size, pixels (paper: 320).
        network: which U-Net.
        solver: the least-squares layer (sample count, eps, weights, precision).
        data, pretrain, train, losses, adaptive: sections above.
        micro_batches: split each process's batch into this many forward/backward passes whose
            gradients add up (less memory; batch-norm statistics are per micro-batch).
        seed: seeds the network initialisation, data and pixel sampling.
        log_every: steps between TensorBoard scalars.
        image_every: steps between TensorBoard images (reconstruction overlay, residual map).
        checkpoint_every: steps between checkpoints.
        keep_every: every this many steps the checkpoint is also kept as RUN_DIR/step-NNNNNN.pt
            (0: only last.pt), to choose a model on validation photos afterwards.
        num_threads: torch CPU threads per process (0: torch's default).
        evaluate_count: at the end of a run, the fitted 5-landmark error on this many held-out
            synthetic faces is written to RUN_DIR/evaluation.json (0: no evaluation).
    """

    input_size: int = 128
    uv_size: int = 320
    network: UNetConfig = field(default_factory=UNetConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: MainTrainConfig = field(default_factory=MainTrainConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    micro_batches: int = 1
    seed: int = 0
    log_every: int = 10
    image_every: int = 200
    checkpoint_every: int = 500
    keep_every: int = 0
    num_threads: int = 0
    evaluate_count: int = 0

    def __post_init__(self) -> None:
        if self.input_size < SIZE_MULTIPLE or self.input_size % SIZE_MULTIPLE:
            raise ConfigError(f"input_size must be a positive multiple of {SIZE_MULTIPLE}, got {self.input_size}.")
        if self.micro_batches < 1:
            raise ConfigError(f"micro_batches must be at least 1, got {self.micro_batches}.")
        if self.solver.reprojection_iterations != 0:
            raise ConfigError("solver.reprojection_iterations is an inference setting (lsqface export --solver "
                              "reprojection_iterations=N); the training losses read the closed-form fit, so a "
                              f"training config must leave it at 0, got {self.solver.reprojection_iterations}.")
        for name in ("pretrain", "train"):
            section = getattr(self, name)
            if section.batch_size < 1 or section.steps < 0:
                raise ConfigError(f"{name}.batch_size must be at least 1 and {name}.steps not negative.")
        if self.train.supervision not in ("unsupervised", "true_maps", "mixed"):
            raise ConfigError("train.supervision must be 'unsupervised', 'true_maps' or 'mixed', "
                              f"got {self.train.supervision!r}.")
        if self.train.supervision == "mixed" and self.train.photo_batch_size < 1:
            raise ConfigError(f"train.photo_batch_size must be at least 1, got {self.train.photo_batch_size}.")
        for name, section in (("pretrain", self.pretrain), ("train", self.train)):
            if section.learning_rate_decay not in ("constant", "cosine"):
                raise ConfigError(f"{name}.learning_rate_decay must be 'constant' or 'cosine', "
                                  f"got {section.learning_rate_decay!r}.")
            if not 0.0 <= section.final_learning_rate_fraction <= 1.0:
                raise ConfigError(f"{name}.final_learning_rate_fraction must lie in [0, 1], "
                                  f"got {section.final_learning_rate_fraction}.")
        if self.train.supervision in ("true_maps", "mixed") and self.data.source != "synthetic":
            raise ConfigError("train.supervision = 'true_maps' needs data.source = 'synthetic' (only synthetic faces "
                              f"have true maps), got '{self.data.source}'; change one of them.")
        for name in ("long_hair", "wild_textures", "shadows"):
            if not 0.0 <= getattr(self.data, name) <= 1.0:
                raise ConfigError(f"data.{name} is a probability and must lie in [0, 1], got {getattr(self.data, name)}.")
        if self.pretrain.landmarks_5 and len(self.pretrain.landmarks_5) != 10:
            raise ConfigError("pretrain.landmarks_5 must hold 10 numbers (x, y of 5 landmarks) or be empty.")


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training TOML file (see configs/) into a :class:`TrainConfig`."""
    return from_dict(TrainConfig, read_toml(path))
