"""Training MoFA on synthetic faces with true landmarks: ``lsqface train-mofa --config configs/mofa-X.toml``.

One run goes through the seed's three phases (section P) by step count:

1. ``rotation_xy`` (``pretrain.rotation_xy_steps``; paper 10k): landmark loss only,
   only camera rotation and xy translation trained;
2. ``rotation_translation`` (``pretrain.rotation_translation_steps``; paper 38k): landmark
   loss only, rotation and full translation; 3DMM and lighting fixed in both;
3. ``full`` (``train.steps``): photometric + statistical regularisation + (if
   ``losses.landmark_weight`` > 0) landmark loss, every parameter.

Images: the project's synthetic faces (lsqface.data.synthetic), drawn upright
like lsqface's pretraining images (``lsqface.train.data.synthetic_config(...,
aligned=True)``), then moved per ``augmentation``: "none", "shift" (2D shift
of up to ``data.augmentation.shift_fraction`` of the side) or "similarity"
(``data.augmentation``'s rotation, scale and shift); their 68 true landmarks
move with them. Every random choice is seeded by (seed, image position) as in
lsqface.train.data, so resume is exact.

Files in RUN_DIR: ``last.pt`` (the checkpoint, lsqface.nets.checkpoint's format
with ``kind = "mofa"``; ``lsqface compare`` and :class:`MoFAReconstructor`
load it), ``losses.jsonl`` (one line per iteration: step, phase, loss and each
term; rewritten atomically with every checkpoint, so it always ends at the
checkpoint's step), ``tensorboard/`` and, if ``evaluate_count`` > 0,
``evaluation.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from lsqface.baselines.mofa import (
    FaceCamera, MoFAEncoder, MoFANetworkConfig, decode_parameters, landmark_loss, mofa_landmarks, mofa_mesh, photometric_loss, render,
    statistical_loss,
)
from lsqface.config import from_dict, read_toml, to_dict
from lsqface.data.augment import SimilarityAugmentation, augment, sample_similarity
from lsqface.data.backgrounds import procedural_background
from lsqface.data.synthetic import generate_faces
from lsqface.errors import CheckpointError, ConfigError
from lsqface.files import read_json_lines, write_text_atomic
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.nets.checkpoint import check_face_model, face_model_summary, load_checkpoint, save_checkpoint
from lsqface.reconstruct import model_tensors
from lsqface.train.config import DataConfig
from lsqface.train.data import position_generator, synthetic_config
from lsqface.train.trainer import (
    deferred_interrupt,
    global_rng_state,
    open_tensorboard,
    restore_global_rng_state,
    run_steps,
)

logger = logging.getLogger("lsqface.baselines")

CHECKPOINT_NAME = "last.pt"
LOSS_LOG_NAME = "losses.jsonl"
Augmentation = Literal["none", "shift", "similarity"]


@dataclass(frozen=True)
class MoFAPretrainConfig:
    """The landmark-only pretraining phases (seed P).

    Attributes:
        rotation_xy_steps: iterations training rotation and xy translation only (paper 10,000).
        rotation_translation_steps: then iterations training rotation and full translation (paper 38,000).
        batch_size: images per iteration.
        learning_rate: Adam's step size.
    """

    rotation_xy_steps: int = 10000
    rotation_translation_steps: int = 38000
    batch_size: int = 5
    learning_rate: float = 1e-4


@dataclass(frozen=True)
class MoFAMainConfig:
    """The training of every parameter.

    Attributes:
        steps: iterations after pretraining.
        batch_size: images per iteration.
        learning_rate: Adam's step size.
    """

    steps: int = 100000
    batch_size: int = 5
    learning_rate: float = 1e-5


@dataclass(frozen=True)
class MoFALossConfig:
    """Loss weights of the main phase (pretraining uses the landmark loss alone, weight 1).

    Attributes:
        photometric_weight: weight of the mean L2 colour distance over the face region.
        landmark_weight: weight of the L1 landmark loss; 0 trains without landmarks.
        identity_weight, expression_weight, albedo_weight: statistical regularisation of each
            coefficient group (sum of squares of unit-variance coefficients).
    """

    photometric_weight: float = 1.0
    landmark_weight: float = 1.0
    identity_weight: float = 1e-3
    expression_weight: float = 1e-3
    albedo_weight: float = 1e-3


@dataclass(frozen=True)
class MoFATrainConfig:
    """Everything a MoFA run needs; ``lsqface train-mofa --config FILE`` reads it (configs/mofa-*.toml).

    Attributes:
        input_size: side of the encoder's square input, pixels (divisible by 32).
        uv_size: UV-3DMM size (only its flattening is used: the rendered correspondence).
        network: encoder and camera.
        data: the synthetic-face distribution (lsqface.train.config.DataConfig; source must be
            "synthetic", which carries true landmarks) and, in ``data.augmentation``, the ranges.
        augmentation: "none", "shift" or "similarity" (module notes).
        pretrain, train, losses: sections above.
        seed: seeds initialisation and data.
        log_every: steps between TensorBoard scalars (losses.jsonl has every step).
        image_every: steps between TensorBoard pictures of the main phase (input, rendering over
            it, landmarks: true green, predicted red).
        checkpoint_every: steps between checkpoints.
        num_threads: torch CPU threads (0: torch's default).
        evaluate_count: at the end, the synthetic benchmark on this many faces per range (0: none).
    """

    input_size: int = 64
    uv_size: int = 128
    network: MoFANetworkConfig = field(default_factory=MoFANetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: Augmentation = "similarity"
    pretrain: MoFAPretrainConfig = field(default_factory=MoFAPretrainConfig)
    train: MoFAMainConfig = field(default_factory=MoFAMainConfig)
    losses: MoFALossConfig = field(default_factory=MoFALossConfig)
    seed: int = 0
    log_every: int = 10
    image_every: int = 200
    checkpoint_every: int = 500
    num_threads: int = 0
    evaluate_count: int = 0

    def __post_init__(self) -> None:
        if self.input_size < 32 or self.input_size % 32:
            raise ConfigError(f"input_size must be a positive multiple of 32 (five 2x2 poolings), got {self.input_size}.")
        if self.data.source != "synthetic":
            raise ConfigError("MoFA trains on synthetic faces (they carry true landmarks); set data.source = \"synthetic\".")
        steps = (self.pretrain.rotation_xy_steps, self.pretrain.rotation_translation_steps, self.train.steps)
        if min(steps) < 0 or self.pretrain.batch_size < 1 or self.train.batch_size < 1:
            raise ConfigError("MoFA step counts must not be negative and batch sizes must be at least 1.")

    @property
    def total_steps(self) -> int:
        return self.pretrain.rotation_xy_steps + self.pretrain.rotation_translation_steps + self.train.steps


def load_mofa_config(path: str | Path) -> MoFATrainConfig:
    """Read a MoFA training TOML file (configs/mofa-*.toml) into a :class:`MoFATrainConfig`."""
    return from_dict(MoFATrainConfig, read_toml(path))


def phase_at(config: MoFATrainConfig, step: int) -> str:
    """The phase of iteration ``step`` (0-based): "rotation_xy", "rotation_translation" or "full"."""
    first = config.pretrain.rotation_xy_steps
    if step < first:
        return "rotation_xy"
    if step < first + config.pretrain.rotation_translation_steps:
        return "rotation_translation"
    return "full"


def augmentation_ranges(config: MoFATrainConfig) -> SimilarityAugmentation | None:
    """The similarity ranges of ``config.augmentation`` (None for "none")."""
    if config.augmentation == "none":
        return None
    if config.augmentation == "shift":
        return SimilarityAugmentation(rotation_degrees=0.0, scale_range=(1.0, 1.0),
                                      shift_fraction=config.data.augmentation.shift_fraction)
    return config.data.augmentation


class MoFAImages:
    """Training images with their 68 true landmarks, a pure function of (seed, position).

    Args:
        config: the run's settings.
        uv_model: the UV-3DMM whose model draws the faces.
    """

    def __init__(self, config: MoFATrainConfig, uv_model: UVMorphableModel) -> None:
        self.config = config
        self.uv_model = uv_model
        self.size = config.input_size
        self.synthetic = synthetic_config(config.data, self.size, aligned=True)
        self.ranges = augmentation_ranges(config)
        self._pool: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _faces(self, keys: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        missing = sorted({key for key in keys if key not in self._pool})
        found = {}
        if missing:
            seeds = [int(position_generator(self.config.seed, key, "pretrain").initial_seed() % (1 << 31)) for key in missing]
            faces = generate_faces(self.uv_model, seeds, self.synthetic)
            found = {key: (faces.image[k], faces.landmarks_68[k]) for k, key in enumerate(missing)}
            if self.config.data.synthetic_pool > 0:
                self._pool.update(found)
        return [self._pool[key] if key in self._pool else found[key] for key in keys]

    def batch(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, 3, S, S) images in [0, 1], (B, 68, 2) true landmarks in pixels) at global image positions."""
        pool = self.config.data.synthetic_pool
        keys = [int(p) % pool if pool > 0 else int(p) for p in positions]
        faces = self._faces(keys)
        images = torch.stack([face[0] for face in faces])
        landmarks = torch.stack([face[1] for face in faces]).float()
        if self.ranges is None:
            return images, landmarks
        generators = [position_generator(self.config.seed, position, "train") for position in positions]
        matrices = torch.cat([sample_similarity(self.ranges, 1, self.size, self.size, g) for g in generators])
        backgrounds = torch.cat([procedural_background(1, self.size, self.size, g) for g in generators])
        moved = augment(images, self.ranges, background=backgrounds, landmarks=landmarks, matrix=matrices)
        return moved.image.clamp(0.0, 1.0), moved.landmarks


@dataclass
class MoFAStep:
    """What one iteration did: step count after it, phase, total loss and terms (means), skipped or not."""

    step: int
    phase: str
    loss: float
    terms: dict[str, float]
    skipped: bool = False
    seconds: float = 0.0

    def record(self) -> dict:
        return {"step": self.step, "phase": self.phase, "loss": self.loss, **self.terms, "skipped": self.skipped,
                "seconds": round(self.seconds, 4)}


class MoFATrainer:
    """The MoFA training loop: three phases by step, checkpoint and loss log in RUN_DIR, exact resume.

    Args:
        config: the run's settings.
        run_dir: where last.pt, losses.jsonl and tensorboard/ go.
        uv_model: the face model (its ``model`` is rendered; its flattening only for evaluation).
    """

    def __init__(self, config: MoFATrainConfig, run_dir: str | Path, uv_model: UVMorphableModel) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.uv_model = uv_model
        model = uv_model.model
        self.dimensions = (model.n_identity, model.n_expression, model.n_albedo)
        torch.manual_seed(config.seed)
        self.network = MoFAEncoder(config.network, *self.dimensions)
        self.optimiser = torch.optim.Adam(self.network.parameters(), lr=config.pretrain.learning_rate)
        self.camera = FaceCamera(model, config.input_size, config.network)
        self.tensors = model_tensors(model, torch.float32, "cpu")
        self.landmark_indices = torch.as_tensor(model.landmarks_68, dtype=torch.int64)
        self.images = MoFAImages(config, uv_model)
        self.step = 0
        self.skipped = 0
        self.records: list[dict] = []
        self.writer = None
        self._last_pictures = None

    # ---------------------------------------------------------------- losses

    def losses(self, images: torch.Tensor, landmarks: torch.Tensor, phase: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B,) total loss and (B,) terms of a batch in ``phase`` (module notes)."""
        raw = self.network(images)
        parameters = decode_parameters(raw, self.camera, self.dimensions, phase)
        if phase != "full":
            predicted = mofa_landmarks(parameters, self.tensors, self.camera, self.landmark_indices)
            landmark = landmark_loss(predicted, landmarks, self.config.input_size)
            return landmark, {"landmark": landmark}
        mesh = mofa_mesh(parameters, self.tensors, self.camera, self.landmark_indices)
        landmark = landmark_loss(mesh.landmarks_68, landmarks, self.config.input_size)
        weights = self.config.losses
        rendered, mask = render(mesh, self.tensors["triangles"], self.config.input_size)
        photometric = photometric_loss(images, rendered, mask)
        self._last_pictures = (images.detach(), rendered.detach(), mask.detach(), landmarks, mesh.landmarks_68.detach())
        statistical = statistical_loss(parameters, weights.identity_weight, weights.expression_weight, weights.albedo_weight)
        total = weights.photometric_weight * photometric + weights.landmark_weight * landmark + statistical
        return total, {"photometric": photometric, "landmark": landmark, "statistical": statistical}

    def _section(self, phase: str):
        return self.config.pretrain if phase != "full" else self.config.train

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> MoFAStep:
        """One iteration; ``batch`` (images, landmarks) replaces the data source (tests).

        A non-finite loss or gradient skips the step (the optimiser does not move; it is counted).
        """
        start = time.perf_counter()
        phase = phase_at(self.config, self.step)
        section = self._section(phase)
        if batch is None:
            first = self.step * section.batch_size
            batch = self.images.batch(list(range(first, first + section.batch_size)))
        images, landmarks = batch
        for group in self.optimiser.param_groups:
            group["lr"] = section.learning_rate
        self.network.train()
        self.optimiser.zero_grad(set_to_none=True)
        total, terms = self.losses(images, landmarks, phase)
        loss = total.mean()
        loss.backward()
        finite = bool(torch.isfinite(loss.detach())) and all(
            torch.isfinite(p.grad).all().item() for p in self.network.parameters() if p.grad is not None)
        with deferred_interrupt():
            if finite:
                self.optimiser.step()
            else:
                self.optimiser.zero_grad(set_to_none=True)
                self.skipped += 1
                logger.warning("Step %d skipped: the loss or a gradient is not finite.", self.step + 1)
            self.step += 1
            result = MoFAStep(self.step, phase, float(loss.detach()) if finite else float("nan"),
                              {name: float(value.detach().mean()) for name, value in terms.items()} if finite else {},
                              not finite, time.perf_counter() - start)
            self.records.append(result.record())
        return result

    # ----------------------------------------------------------- checkpoints

    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state(self) -> dict:
        """The checkpoint payload (lsqface.nets.checkpoint's format, ``kind = "mofa"``)."""
        return {
            "kind": "mofa",
            "network_config": dataclasses.asdict(self.config.network),
            "dimensions": list(self.dimensions),
            "input_size": self.config.input_size,
            "face_model": face_model_summary(self.uv_model),
            "network_state": {name: value.detach().cpu().clone() for name, value in self.network.state_dict().items()},
            "training": {
                "stage": "mofa", "step": self.step, "skipped": self.skipped,
                "optimiser": self.optimiser.state_dict(),
                "rng": global_rng_state(),
                "config": to_dict(self.config),
            },
            "metadata": {"stage": "mofa", "step": self.step, "phase": phase_at(self.config, max(self.step - 1, 0)),
                         "augmentation": self.config.augmentation, "landmark_weight": self.config.losses.landmark_weight,
                         "time": time.strftime("%Y-%m-%d %H:%M:%S")},
        }

    def save(self) -> Path | None:
        """Write last.pt then losses.jsonl (both atomically); refuse a non-finite network."""
        if not all(torch.isfinite(value).all().item() for value in self.network.state_dict().values() if value.is_floating_point()):
            logger.error("Not writing a checkpoint at step %d: the network has non-finite values.", self.step)
            return None
        path = save_checkpoint(self.checkpoint_path(), self.state())
        write_text_atomic(self.run_dir / LOSS_LOG_NAME, "".join(json.dumps(record) + "\n" for record in self.records))
        return path

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from a MoFA checkpoint (default RUN_DIR/last.pt) and its loss log up to its step.

        Raises:
            CheckpointError: missing, damaged, not MoFA, or of another network, input size or face model.
        """
        path = Path(path) if path is not None else self.checkpoint_path()
        payload = load_checkpoint(path)
        check_face_model(payload, self.uv_model, path)
        if payload.get("kind") != "mofa" or not isinstance(payload.get("training"), dict):
            raise CheckpointError(f"Checkpoint {path} is not a MoFA training checkpoint; resume from RUN_DIR/last.pt of 'lsqface train-mofa'.")
        if payload["network_config"] != dataclasses.asdict(self.config.network) or int(payload["input_size"]) != self.config.input_size:
            raise CheckpointError(f"Checkpoint {path} is of another MoFA network ({payload['network_config']}, "
                                  f"{payload['input_size']} px) than the config; use the config it was trained with.")
        training = payload["training"]
        self.network.load_state_dict(payload["network_state"])
        self.optimiser.load_state_dict(training["optimiser"])
        self.step = int(training["step"])
        self.skipped = int(training.get("skipped", 0))
        restore_global_rng_state(training["rng"])
        self.records = [record for record in read_loss_log(path.parent / LOSS_LOG_NAME) if record["step"] <= self.step]

    # ------------------------------------------------------------------- run

    def _log(self, result: MoFAStep) -> None:
        if self.writer is None or result.skipped or result.step % self.config.log_every:
            return
        self.writer.add_scalar("mofa/loss", result.loss, result.step)
        for name, value in result.terms.items():
            self.writer.add_scalar(f"mofa/{name}", value, result.step)
        if result.step % self.config.image_every == 0 and self._last_pictures is not None and result.phase == "full":
            self.writer.add_image("mofa/pictures", mofa_pictures(*self._last_pictures), result.step)
        self.writer.add_scalar("mofa/images_per_second", self._section(result.phase).batch_size / max(result.seconds, 1e-9), result.step)

    def run(self, until: int | None = None, progress: bool = True,
            callback: Callable[["MoFATrainer", MoFAStep], None] | None = None) -> dict:
        """Train to the last step (or ``until``), checkpointing; Ctrl-C saves and returns.

        Returns:
            {"step", "skipped", "interrupted", "checkpoint", "last_loss"}.
        """
        total = self.config.total_steps if until is None else min(until, self.config.total_steps)
        if self.writer is None:
            self.writer = open_tensorboard(self.run_dir)
        interrupted, last_loss, checkpoint = run_steps(
            self, total, self.config.total_steps, desc="mofa", checkpoint_every=self.config.checkpoint_every,
            postfix=lambda result: {"phase": result.phase, "loss": f"{result.loss:.4g}", "skipped": self.skipped},
            progress=progress, callback=callback,
        )
        return {"step": self.step, "skipped": self.skipped, "interrupted": interrupted, "checkpoint": checkpoint,
                "last_loss": last_loss}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def mofa_pictures(images: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor, truth: torch.Tensor,
                  predicted: torch.Tensor, count: int = 4) -> torch.Tensor:
    """(3, H', W') a TensorBoard grid, one row per image: the input with the true (green) and predicted (red)
    68 landmarks, and the rendering over the input where the face covers.

    images, rendered: (B, 3, S, S); mask: (B, 1, S, S); truth, predicted: (B, 68, 2) pixels.
    """
    rows = []
    size = images.shape[-1]
    for index in range(min(count, images.shape[0])):
        image = images[index].float().cpu().clamp(0, 1).clone()
        for points, colour in ((truth[index], (0.0, 1.0, 0.0)), (predicted[index], (1.0, 0.0, 0.0))):
            pixels = points.detach().float().cpu().floor().long()
            inside = (pixels >= 0).all(-1) & (pixels < size).all(-1)
            for channel, value in enumerate(colour):
                image[channel, pixels[inside, 1], pixels[inside, 0]] = value
        covered = mask[index].float().cpu()
        overlay = covered * rendered[index].float().cpu().clamp(0, 1) + (1 - covered) * 0.5 * images[index].float().cpu()
        rows.append(torch.cat([image, overlay], dim=2))
    return torch.cat(rows, dim=1)


def read_loss_log(path: str | Path) -> list[dict]:
    """The records of a losses.jsonl (empty if the file is absent)."""
    return read_json_lines(path) if Path(path).is_file() else []


def run_mofa(config: MoFATrainConfig, run_dir: str | Path, *, resume: bool | str | Path = False, source: str | None = None,
             region: str | None = None, progress: bool = True, uv_model: UVMorphableModel | None = None) -> dict:
    """Train (or continue) a MoFA run end to end and, with ``evaluate_count``, evaluate it (``lsqface train-mofa``).

    Args:
        config: the run's settings.
        run_dir: last.pt, losses.jsonl, tensorboard/ and evaluation.json go here.
        resume: True continues from RUN_DIR/last.pt, a path from that checkpoint.
        source, region: the face model (lsqface.morphable.cache.load_uv_model).
        progress: show a progress bar.
        uv_model: use this UV-3DMM instead of loading one.

    Returns:
        The run summary of :meth:`MoFATrainer.run`.
    """
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    if uv_model is None:
        from lsqface.morphable.cache import load_uv_model

        uv_model = load_uv_model(source, size=config.uv_size, region=region)
    trainer = MoFATrainer(config, run_dir, uv_model)
    if resume:
        trainer.resume(None if resume is True else resume)
    try:
        summary = trainer.run(progress=progress)
        if config.evaluate_count > 0 and not summary["interrupted"]:
            from lsqface.baselines.mofa import MoFAReconstructor
            from lsqface.evaluate.benchmark import evaluate_synthetic

            reconstructor = MoFAReconstructor(trainer.network, uv_model, config.input_size)
            results = evaluate_synthetic(reconstructor, uv_model, count=config.evaluate_count, size=config.input_size)
            rows = [result.summary() for result in results]
            write_text_atomic(Path(run_dir) / "evaluation.json",
                              json.dumps({"step": trainer.step, "ranges": rows}, indent=2, default=float) + "\n")
    finally:
        trainer.close()
    return summary


def loss_medians(records: list[dict], term: str, window: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``term`` over every ``window`` iterations (seed Figs. 24, 25): (last step of each window, median).

    Skipped steps and steps without the term are left out; a window with no value is dropped.
    """
    steps = np.array([record["step"] for record in records if isinstance(record.get(term), (int, float))
                      and math.isfinite(record[term])], dtype=np.int64)
    values = np.array([record[term] for record in records if isinstance(record.get(term), (int, float))
                       and math.isfinite(record[term])], dtype=np.float64)
    if steps.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    bins = (steps - 1) // window
    ends, medians = [], []
    for index in np.unique(bins):
        chosen = bins == index
        ends.append(int((index + 1) * window))
        medians.append(float(np.median(values[chosen])))
    return np.asarray(ends, dtype=np.int64), np.asarray(medians)
