"""The training loop shared by pretraining and unsupervised main training.

One :class:`Trainer` runs one stage ("pretrain": supervised on the shared
targets of seed F; "train": network -> least squares -> fitted mesh -> losses,
no landmarks and no true maps; or, with ``train.supervision = "true_maps"``, the
ablation's upper bound: the maps regressed onto the synthetic generator's true
maps, no solve). It owns the network, the Adam optimiser, the
learning-rate schedule, the adaptive regularisation and the step counter, and
writes them all, with the RNG states, to ``RUN_DIR/last.pt`` (atomically).

Behaviour users rely on:

- Resume is exact: a run stopped (Ctrl-C, a crash after a checkpoint, or
  ``until``) and resumed from its checkpoint reaches bit-identical parameters
  on the CPU, because every random choice of a step is seeded by (seed, step,
  image position) (lsqface.train.data) and every stateful part is restored.
- A batch whose loss or gradient is not finite (on any process) is skipped,
  logged and counted; the optimiser does not step, so the next checkpoint is
  still the last good state, and a network with a non-finite parameter is
  never written.
- KeyboardInterrupt writes a checkpoint of the last completed step and returns.
- Progress: a tqdm bar with loss and images/s; TensorBoard scalars every
  ``log_every`` steps and pictures (reconstruction overlay and robust residual
  map, seed L) every ``image_every`` steps, under ``RUN_DIR/tensorboard``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from tqdm import tqdm

from lsqface.config import to_dict
from lsqface.errors import CheckpointError, ConfigError, SolverError
from lsqface.files import write_text_atomic
from lsqface.morphable.uv_model import UVMorphableModel
from lsqface.nets.checkpoint import check_face_model, face_model_summary, load_checkpoint, network_from_checkpoint, save_checkpoint
from lsqface.nets.unet import UNet, grow_network
from lsqface.reconstruct import fitted_mesh, model_tensors, network_input
from lsqface.solver.fit import fit, fit_geometry
from lsqface.train.adaptive import AdaptiveRegularisation
from lsqface.train.config import TrainConfig
from lsqface.train.data import TrainingImages, batch_positions, position_generator
from lsqface.train.distributed import DistributedContext, all_reduce_sum, broadcast_flag
from lsqface.train.losses import (geometric_loss, photometric_loss, statistical_loss, true_landmark_loss, true_map_loss,
                                  true_rotation_loss, true_shape_loss)
from lsqface.train.pretrain import celeba_landmarks_5, moved_targets, pretraining_loss, pretraining_targets

logger = logging.getLogger("lsqface.train")

Stage = Literal["pretrain", "train"]
CHECKPOINT_NAME = "last.pt"


class _NonFiniteMaps(Exception):
    """The network produced a non-finite value (the batch is skipped before the solve)."""


@dataclass
class StepResult:
    """What one iteration did.

    Attributes:
        step: the step count after the iteration.
        loss: mean loss over the global batch (nan when skipped for a non-finite value).
        terms: mean of each loss term.
        skipped: True when the batch was skipped.
        reason: why it was skipped.
        seconds: wall time of the iteration.
    """

    step: int
    loss: float
    terms: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    reason: str = ""
    seconds: float = 0.0


@dataclass
class RunSummary:
    """How a call of :meth:`Trainer.run` ended."""

    step: int
    skipped: int
    interrupted: bool
    checkpoint: Path | None
    last_loss: float


@contextlib.contextmanager
def deferred_interrupt():
    """Hold Ctrl-C while the step's state is committed, then raise it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def global_rng_state() -> dict:
    """torch's, numpy's and python's global random states, in a form ``torch.load(weights_only=True)`` reads."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "position": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": random.getstate(),
    }


def restore_global_rng_state(rng: dict) -> None:
    """Set the global random states saved by :func:`global_rng_state`."""
    torch.set_rng_state(rng["torch"])
    numpy_rng = rng["numpy"]
    np.random.set_state(("MT19937", numpy_rng["keys"].numpy().astype(np.uint32), numpy_rng["position"],
                         numpy_rng["has_gauss"], numpy_rng["cached_gaussian"]))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def open_tensorboard(run_dir: Path):
    """A TensorBoard SummaryWriter logging to RUN_DIR/tensorboard, or None where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is the optional "train" extra
        logger.warning("TensorBoard is not installed (pip install 'lsqface[train]'); training without its logs.")
        return None
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))


def run_steps(trainer, total: int, stage_steps: int, *, desc: str, checkpoint_every: int,
              postfix: Callable[[object], dict], progress: bool = True, show: bool = True,
              callback: Callable | None = None) -> tuple[bool, float, Path]:
    """The run loop shared by every trainer (lsqface's stages, the MoFA baseline).

    Steps ``trainer.train_step()`` until ``trainer.step`` reaches ``total``, with a tqdm bar
    (values from ``postfix(result)``) and ``trainer._log(result)`` where ``show`` (the main
    process), a checkpoint every ``checkpoint_every`` steps and one at the end; Ctrl-C stops the
    loop and still writes the final checkpoint. ``trainer`` has ``step``, ``train_step()``,
    ``save()``, ``_log(result)`` and ``writer``; a step result has ``loss`` and ``skipped``.

    Returns:
        (interrupted, the last non-skipped loss (nan if none), the final checkpoint's path).
    """
    interrupted = False
    last_loss = float("nan")
    bar = tqdm(total=stage_steps, initial=trainer.step, desc=desc, unit="step", disable=not (progress and show),
               dynamic_ncols=True)
    try:
        while trainer.step < total:
            result = trainer.train_step()
            if not result.skipped:
                last_loss = result.loss
            if show:
                bar.update(1)
                bar.set_postfix(**postfix(result))
                trainer._log(result)
            if trainer.step % checkpoint_every == 0:
                trainer.save()
            if callback is not None:
                callback(trainer, result)
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("Interrupted at step %d; writing a checkpoint to resume from.", trainer.step)
    finally:
        bar.close()
    checkpoint = trainer.save()
    if trainer.writer is not None:
        trainer.writer.flush()
    return interrupted, last_loss, checkpoint


def default_landmarks_5(config: TrainConfig, uv_model: UVMorphableModel) -> torch.Tensor:
    """(5, 2) the average 5-landmark position the pretraining targets are aligned to.

    ``pretrain.landmarks_5`` if given; for CelebA the aligned-CelebA average scaled to the input;
    otherwise (synthetic faces, image folders) the landmarks of the average upright synthetic face:
    the mean shape (identity and expression 0, the means of their distributions), frontal, at the
    middle of the face-size and field-of-view ranges, unshifted. Its landmarks are within a
    fraction of a pixel of the average over drawn faces (tests/train/test_pretrain.py).
    """
    if config.pretrain.landmarks_5:
        return torch.tensor(config.pretrain.landmarks_5, dtype=torch.float64).reshape(5, 2)
    if config.data.source == "celeba":
        return celeba_landmarks_5(config.input_size)
    from lsqface.data.synthetic import generate_faces
    from lsqface.train.data import synthetic_config

    aligned = synthetic_config(config.data, config.input_size, aligned=True)
    middle_view = 0.5 * (aligned.field_of_view[0] + aligned.field_of_view[1])
    average = dataclasses.replace(aligned, background="none", size=32, identity_std=0.0, expression_std=0.0,
                                  yaw_range=0.0, pitch_range=0.0, shift=0.0, field_of_view=(middle_view, middle_view))
    faces = generate_faces(uv_model, [0], average)
    return faces.landmarks_5[0].to(torch.float64) * (config.input_size / 32.0)


def learning_rate_factor(section) -> Callable[[int], float]:
    """The step-size multiplier of a stage: a linear warm-up over min(100, steps/20) steps, then
    constant or a half cosine down to ``section.final_learning_rate_fraction`` at the last step."""
    warmup = max(1, min(100, section.steps // 20))
    decay_steps = max(1, section.steps - warmup)
    final = section.final_learning_rate_fraction

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if section.learning_rate_decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / decay_steps)
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """One training stage on one process (of ``context.world_size``).

    Args:
        config: the run's settings.
        stage: "pretrain" or "train".
        run_dir: where checkpoints and TensorBoard logs go.
        uv_model: the UV-3DMM (CPU; moved to the context's device).
        context: this process's place in a distributed run.
        initial_network: optional network state to start from (e.g. the pretrained one).
    """

    def __init__(self, config: TrainConfig, stage: Stage, run_dir: str | Path, uv_model: UVMorphableModel,
                 context: DistributedContext = DistributedContext(), initial_network: dict | None = None) -> None:
        if stage not in ("pretrain", "train"):
            raise ValueError(f"stage must be 'pretrain' or 'train', got {stage!r}")
        self.config = config
        self.stage = stage
        self.section = config.pretrain if stage == "pretrain" else config.train
        self.run_dir = Path(run_dir)
        self.context = context
        self.device = torch.device(context.device)
        self.uv_model = uv_model.to(self.device) if self.device.type != "cpu" else uv_model
        torch.manual_seed(config.seed)
        self.network = UNet(config.network).to(self.device)
        if initial_network is not None:
            self.network.load_state_dict(initial_network)
        self.model: torch.nn.Module = self.network
        if context.distributed:
            module = self.network
            if self.device.type == "cuda":
                module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
                self.network = module
            self.model = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimiser = torch.optim.Adam(self.network.parameters(), lr=self.section.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimiser, learning_rate_factor(self.section))
        model = uv_model.model
        self.adaptive = AdaptiveRegularisation(model.n_shape, model.n_albedo, config.adaptive)
        data = config.data
        if stage == "pretrain" and config.pretrain.image_count > 0:
            data = dataclasses.replace(data, image_count=config.pretrain.image_count)
        self.images = TrainingImages(data, config.input_size, uv_model, config.seed, purpose=stage)
        self.step = 0
        self.skipped = 0
        self.true_maps = stage == "train" and config.train.supervision in ("true_maps", "mixed")
        self.photos = None
        if stage == "train" and config.train.supervision == "mixed":
            if not data.photos:
                raise ConfigError("train.supervision = 'mixed' needs data.photos, a folder of face photos "
                                  "(or lsqface train --photos DIR).")
            photo_data = dataclasses.replace(data, source=data.photos_source, root=data.photos)
            self.photos = TrainingImages(photo_data, config.input_size, uv_model, config.seed + 1, purpose=stage)
        self.triangles = model_tensors(model, torch.float32, self.device)["triangles"]
        centroid, face_width, _ = model.framing()
        # Seed F: a fixed point in front of the face (the models face +z), camera_distance face widths away.
        front = torch.as_tensor(centroid, dtype=torch.float64) + torch.tensor(
            [0.0, 0.0, config.train.camera_distance * face_width], dtype=torch.float64)
        self.camera_centre_target = tuple(float(value) for value in front)
        self.targets = None
        if stage == "pretrain":
            self.targets = pretraining_targets(uv_model, default_landmarks_5(config, uv_model), config.input_size,
                                               config.pretrain.camera_field_of_view, config.pretrain.depth_target)
        self.writer = None
        self._last_pictures = None

    # ----------------------------------------------------------------- losses

    def _solver_config(self):
        solver = self.config.solver
        if self.step < self.config.train.camera_centre_steps:
            solver = dataclasses.replace(solver, camera_centre_weight=self.config.train.camera_centre_weight,
                                         camera_centre_target=self.camera_centre_target)
        return solver

    def losses(self, images: torch.Tensor, matrices: torch.Tensor | None, generator: torch.Generator | None,
               true_maps: dict[str, torch.Tensor] | None = None):
        """Loss of one micro-batch: (scalar mean loss, dict of (B,) terms, adaptive statistics or None).

        images: (B, 3, S, S) in [0, 1]; matrices: (B, 2, 3) the pretraining similarity (or None);
        true_maps: for ``train.supervision = "true_maps"``, the generator's maps
        (TrainingImages.images_and_true_maps).
        """
        eps = self.config.solver.softplus_eps
        maps = self.model(network_input(images, eps))
        if not torch.isfinite(maps.logits.detach()).all():
            raise _NonFiniteMaps
        if self.stage == "pretrain":
            targets = moved_targets(self.targets, matrices, images.shape[0])
            targets = {name: value.to(self.device) for name, value in targets.items()}
            pretrain = self.config.pretrain
            total, terms = pretraining_loss(maps, targets, pretrain.correspondence_weight, pretrain.depth_weight,
                                            pretrain.confidence_weight)
            self._last_pictures = (images.detach(), maps, None, None)
            return total.mean(), terms, None
        if true_maps is not None:
            true_maps = {name: value.to(self.device) for name, value in true_maps.items()}
            losses = self.config.losses
            total, terms = true_map_loss(maps.correspondence, maps.depth, maps.confidence, true_maps["correspondence"],
                                         true_maps["depth"], true_maps["confidence"], losses.true_correspondence_weight,
                                         losses.true_depth_weight, losses.true_confidence_weight,
                                         losses.true_depth_tilt_weight)
            if losses.true_shape_weight > 0 or losses.true_landmark_weight > 0 or losses.true_rotation_weight > 0:
                # The inference solve (config.solver, no adaptive weights): the maps learn what the fit needs.
                # Its geometric half only: the terms read the shape and camera, not the lighting or albedo.
                result = fit_geometry(self.uv_model, images, maps.correspondence, maps.depth, maps.confidence, self.config.solver,
                                      generator)
                tensors = model_tensors(self.uv_model.model, result.shape_coefficients.dtype, self.device)
                if losses.true_shape_weight > 0:
                    terms["shape"] = true_shape_loss(tensors["shape_mean"], tensors["shape_basis"],
                                                     result.shape_coefficients, true_maps["shape"])
                    total = total + losses.true_shape_weight * terms["shape"].to(total.dtype)
                if losses.true_landmark_weight > 0:
                    rows = torch.as_tensor(self.uv_model.model.landmarks_5, dtype=torch.int64)
                    error = true_landmark_loss(tensors["shape_mean"], tensors["shape_basis"], rows, result,
                                               true_maps["landmarks_5"])
                    terms["landmarks"] = error.clamp_max(losses.true_landmark_cap)
                    total = total + losses.true_landmark_weight * terms["landmarks"].to(total.dtype)
                if losses.true_rotation_weight > 0:
                    angle = true_rotation_loss(result.rotation, true_maps["rotation"])
                    terms["rotation"] = angle.clamp_max(losses.true_rotation_cap)
                    total = total + losses.true_rotation_weight * terms["rotation"].to(total.dtype)
            self._last_pictures = (images.detach(), maps, None, None)
            return total.mean(), terms, None
        scale = self.config.train.regularisation_scale
        shape_weights = self.adaptive.shape_weights.to(self.device)
        albedo_weights = self.adaptive.albedo_weights.to(self.device)
        result = fit(self.uv_model, images, maps.correspondence, maps.depth, maps.confidence, self._solver_config(), generator,
                     shape_weights=scale * shape_weights, albedo_weights=scale * albedo_weights)
        mesh = fitted_mesh(self.uv_model, result, eps)
        losses = self.config.losses
        photometric, cost, rendered = photometric_loss(images, mesh.image_vertices, mesh.colour, self.triangles, losses.residual_cap)
        geometric = geometric_loss(result, maps.depth, losses.geometric_cap)
        statistical = statistical_loss(result.shape_coefficients, result.albedo_coefficients, shape_weights, albedo_weights)
        total = losses.photometric_weight * photometric + losses.geometric_weight * geometric + losses.statistical_weight * statistical
        terms = {"photometric": photometric, "geometric": geometric, "statistical": statistical}
        statistics = AdaptiveRegularisation.batch_statistics(result.shape_coefficients, result.albedo_coefficients)
        self._last_pictures = (images.detach(), maps, rendered.detach(), cost.detach() / losses.residual_cap ** 2)
        return total.mean(), terms, statistics

    # ------------------------------------------------------------------- step

    def train_step(self, images_override: list[torch.Tensor] | None = None,
                   true_maps_override: list[dict[str, torch.Tensor]] | None = None) -> StepResult:
        """One iteration over this process's share of the global batch.

        ``images_override``: micro-batches of images to use instead of the data source (tests);
        ``true_maps_override``: their true maps, for ``train.supervision = "true_maps"``.
        """
        start = time.perf_counter()
        micro_batches = self.config.micro_batches
        positions = batch_positions(self.step, self.section.batch_size, self.context.rank, self.context.world_size, micro_batches)
        self.network.train()
        self.optimiser.zero_grad(set_to_none=True)
        statistics = torch.zeros(self.adaptive.mean_square.numel() + 1, dtype=torch.float64)
        loss_sum = torch.zeros(1, dtype=torch.float64)
        term_sums: dict[str, float] = {}
        reason = ""
        for index, micro_positions in enumerate(positions):
            true_maps = None
            if images_override is not None:
                images, matrices = images_override[index], None
                if true_maps_override is not None:
                    true_maps = true_maps_override[index]
                if self.stage == "pretrain":
                    matrices = torch.eye(2, 3).expand(images.shape[0], 2, 3)
            elif self.true_maps:
                (images, true_maps), matrices = self.images.images_and_true_maps(micro_positions), None
            else:
                images, matrices = self.images.images(micro_positions, aligned=self.stage == "pretrain")
            images = images.to(self.device)
            global_micro = self.context.rank * micro_batches + index
            generator = torch.Generator(device=self.device).manual_seed(
                int(position_generator(self.config.seed, self.step * 4096 + global_micro, "sampling").initial_seed()))
            last = index == micro_batches - 1 and self.photos is None  # with photos, their batch synchronises
            sync = self.model.no_sync() if self.context.distributed and not last else contextlib.nullcontext()
            with sync:
                try:
                    loss, terms, micro_statistics = self.losses(images, matrices, generator, true_maps)
                except (SolverError, _NonFiniteMaps) as error:
                    reason = ("the network's maps are not finite" if isinstance(error, _NonFiniteMaps)
                              else f"the least-squares solve failed ({error})")
                    loss = sum(parameter.sum() for parameter in self.network.parameters()) * 0.0
                    terms, micro_statistics = {}, None
                (loss / micro_batches).backward()
            if not reason and not torch.isfinite(loss.detach()).item():
                reason = "the loss is not finite"
            loss_sum += float(loss.detach()) / micro_batches
            for name, value in terms.items():
                term_sums[name] = term_sums.get(name, 0.0) + float(value.detach().mean()) / micro_batches
            if micro_statistics is not None:
                statistics += micro_statistics
        if self.photos is not None and not reason:
            reason = self._photo_batch(loss_sum, term_sums, statistics)
        if not reason and not all(torch.isfinite(p.grad).all().item() for p in self.network.parameters() if p.grad is not None):
            reason = "a gradient is not finite"
        skip = broadcast_flag(bool(reason), self.context)
        world = self.context.world_size
        mean_loss = float(all_reduce_sum(loss_sum, self.context).item()) / world
        if skip:
            reason = reason or "another process had a non-finite loss or gradient"
            self.optimiser.zero_grad(set_to_none=True)
            with deferred_interrupt():
                self.skipped += 1
                self.step += 1
            logger.warning("Step %d skipped: %s; the optimiser did not step.", self.step, reason)
            return StepResult(self.step, float("nan"), {}, True, reason, time.perf_counter() - start)
        statistics = all_reduce_sum(statistics, self.context)
        with deferred_interrupt():
            self.optimiser.step()
            self.scheduler.step()
            if self.stage == "train" and (not self.true_maps or self.photos is not None):
                self.adaptive.update(statistics)
            self.step += 1
        return StepResult(self.step, mean_loss, term_sums, False, "", time.perf_counter() - start)

    def _photo_batch(self, loss_sum: torch.Tensor, term_sums: dict[str, float], statistics: torch.Tensor) -> str:
        """Mixed supervision: this process's share of the real-photo batch, unsupervised, gradients added.

        Adds to ``loss_sum``, ``term_sums`` (as photo_*) and ``statistics`` in place; returns why the
        step must be skipped, or "".
        """
        train = self.config.train
        positions = batch_positions(self.step, train.photo_batch_size, self.context.rank, self.context.world_size, 1)[0]
        images, _ = self.photos.images(positions)
        generator = torch.Generator(device=self.device).manual_seed(
            int(position_generator(self.config.seed + 1, self.step * 4096 + self.context.rank, "sampling").initial_seed()))
        try:
            loss, terms, photo_statistics = self.losses(images.to(self.device), None, generator, None)
        except (SolverError, _NonFiniteMaps) as error:
            return ("the network's maps are not finite on the photos" if isinstance(error, _NonFiniteMaps)
                    else f"the least-squares solve failed on the photos ({error})")
        (train.photo_weight * loss).backward()
        if not torch.isfinite(loss.detach()).item():
            return "the photo loss is not finite"
        loss_sum += train.photo_weight * float(loss.detach())
        for name, value in terms.items():
            term_sums[f"photo_{name}"] = float(value.detach().mean())
        statistics += photo_statistics
        return ""

    # ------------------------------------------------------------ checkpoints

    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def state(self) -> dict:
        """The checkpoint payload (see lsqface.nets.checkpoint)."""
        return {
            "network_config": dataclasses.asdict(self.config.network),
            "input_size": self.config.input_size,
            "face_model": face_model_summary(self.uv_model),
            "network_state": {name: value.detach().cpu().clone() for name, value in self.network.state_dict().items()},
            "solver_config": dataclasses.asdict(self.config.solver),
            "training": {
                "stage": self.stage,
                "step": self.step,
                "skipped": self.skipped,
                "optimiser": self.optimiser.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "adaptive": self.adaptive.state_dict(),
                "rng": {
                    **global_rng_state(),
                    "data": {"seed": self.config.seed, "next_position": self.step * self.section.batch_size},
                },
                "config": to_dict(self.config),
            },
            "metadata": {"stage": self.stage, "step": self.step, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
        }

    def save(self) -> Path | None:
        """Write ``RUN_DIR/last.pt`` atomically (main process only); refuse a non-finite network."""
        if not self.context.is_main:
            return None
        if not all(torch.isfinite(value).all().item() for value in self.network.state_dict().values() if value.is_floating_point()):
            logger.error("Not writing a checkpoint at step %d: the network has non-finite values; %s keeps the last good one.",
                         self.step, self.checkpoint_path())
            return None
        state = self.state()
        keep = self.config.keep_every
        if keep > 0 and self.step % keep == 0:  # a copy to choose from later on validation photos
            save_checkpoint(self.run_dir / f"step-{self.step:06d}.pt", state)
        return save_checkpoint(self.checkpoint_path(), state)

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from a checkpoint of this stage (default ``RUN_DIR/last.pt``).

        Raises:
            CheckpointError: the file is missing, cut short, of another stage, or of another network,
                input size or face model.
        """
        path = Path(path) if path is not None else self.checkpoint_path()
        payload = load_checkpoint(path)
        check_face_model(payload, self.uv_model, path)
        self._check_network(payload, path)
        training = payload.get("training")
        if not isinstance(training, dict) or "optimiser" not in training:
            raise CheckpointError(f"Checkpoint {path} holds no training state; start a new run with --init {path} instead of --resume.")
        if training.get("stage") != self.stage:
            raise CheckpointError(
                f"Checkpoint {path} is from the '{training.get('stage')}' stage, not '{self.stage}'; "
                f"pass it with --init to start '{self.stage}' from it."
            )
        self.network.load_state_dict(payload["network_state"])
        self.optimiser.load_state_dict(training["optimiser"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.adaptive.load_state_dict(training["adaptive"])
        self.step = int(training["step"])
        self.skipped = int(training.get("skipped", 0))
        restore_global_rng_state(training["rng"])

    def _check_network(self, payload: dict, path: Path) -> None:
        recorded = payload.get("network_config")
        if recorded != dataclasses.asdict(self.config.network) or int(payload.get("input_size", -1)) != self.config.input_size:
            raise CheckpointError(
                f"Checkpoint {path} is of another model (network {recorded}, input {payload.get('input_size')} px) than "
                f"the config ({dataclasses.asdict(self.config.network)}, {self.config.input_size} px); use the config it was trained with."
            )

    # -------------------------------------------------------------------- run

    def _log(self, result: StepResult) -> None:
        if self.writer is None:
            return
        if result.skipped:
            self.writer.add_scalar(f"{self.stage}/skipped_batches", self.skipped, result.step)
            return
        if result.step % self.config.log_every == 0:
            self.writer.add_scalar(f"{self.stage}/loss", result.loss, result.step)
            for name, value in result.terms.items():
                self.writer.add_scalar(f"{self.stage}/{name}", value, result.step)
            self.writer.add_scalar(f"{self.stage}/images_per_second", self.section.batch_size / max(result.seconds, 1e-9), result.step)
            self.writer.add_scalar(f"{self.stage}/learning_rate", self.scheduler.get_last_lr()[0], result.step)
            if self.stage == "train":
                self.writer.add_scalar("train/mean_adaptive_weight", float(self.adaptive.weight.mean()), result.step)
        if result.step % self.config.image_every == 0 and self._last_pictures is not None:
            self.writer.add_image(f"{self.stage}/pictures", training_pictures(*self._last_pictures), result.step)

    def run(self, until: int | None = None, progress: bool = True,
            callback: Callable[["Trainer", StepResult], None] | None = None) -> RunSummary:
        """Train to ``section.steps`` (or ``until``), checkpointing; Ctrl-C saves and returns.

        Args:
            until: stop after this step count (a later call or --resume continues).
            progress: show a tqdm bar (main process only).
            callback: called after every step (tests use it to interrupt a run).
        """
        total = self.section.steps if until is None else min(until, self.section.steps)
        if self.context.is_main and self.writer is None:
            self.writer = open_tensorboard(self.run_dir)

        def postfix(result: StepResult) -> dict:
            images_per_s = self.section.batch_size / max(result.seconds, 1e-9)
            return {"loss": f"{result.loss:.4g}", "images_per_s": f"{images_per_s:.2f}", "skipped": self.skipped}

        interrupted, last_loss, checkpoint = run_steps(
            self, total, self.section.steps, desc=self.stage, checkpoint_every=self.config.checkpoint_every,
            postfix=postfix, progress=progress, show=self.context.is_main, callback=callback,
        )
        return RunSummary(self.step, self.skipped, interrupted, checkpoint, last_loss)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _grid(rows: list[list[torch.Tensor]]) -> torch.Tensor:
    return torch.cat([torch.cat(row, dim=2) for row in rows], dim=1)


def training_pictures(images, maps, rendered, residual, count: int = 4) -> torch.Tensor:
    """(3, H', W') a grid for TensorBoard: per image (one row), the input, the reconstruction over it
    (where the mesh covers), the robust residual map (min(r^2, tau^2) / tau^2, white = unexplained), and
    the network's correspondence (u, v, geometric confidence) as colours."""
    rows = []
    for index in range(min(count, images.shape[0])):
        image = images[index].float().cpu().clamp(0, 1)
        correspondence = torch.cat([maps.correspondence[index], maps.confidence[index, :1]]).detach().float().cpu()
        row = [image]
        if rendered is not None:
            covered = (rendered[index].abs().sum(0, keepdim=True) > 0).float().cpu()
            row.append(covered * rendered[index].float().cpu().clamp(0, 1) + (1 - covered) * 0.5 * image)
            row.append(residual[index].float().cpu().clamp(0, 1).expand(3, -1, -1))
        row.append(correspondence.clamp(0, 1))
        rows.append(row)
    return _grid(rows)


def run_stage(config: TrainConfig, stage: Stage, run_dir: str | Path, *, resume: bool | str | Path = False,
              init: str | Path | None = None, source: str | None = None, region: str | None = None,
              context: DistributedContext = DistributedContext(), progress: bool = True,
              uv_model: UVMorphableModel | None = None, until: int | None = None) -> RunSummary:
    """Run one stage end to end: load the UV-3DMM, build or resume the trainer, train, evaluate.

    Args:
        config: the run's settings.
        stage: "pretrain" or "train".
        run_dir: checkpoints (last.pt), TensorBoard logs and evaluation.json go here.
        resume: True continues from RUN_DIR/last.pt, a path from that checkpoint.
        init: a checkpoint (e.g. the pretraining's last.pt) whose network weights start this stage;
            its network must be the config's or a narrower one of the same layout, which starts grown
            (:func:`lsqface.nets.unet.grow_network`), its input size may differ (the U-Net is fully
            convolutional), unlike --resume, which continues the same run.
        source, region: the face model (lsqface.morphable.cache.load_uv_model).
        context: this process's place in a distributed run.
        progress: show a progress bar.
        uv_model: use this UV-3DMM instead of loading one.
        until: stop after this step (the schedule still spans the config's steps; resuming continues);
            the end-of-run evaluation is written only when the stage's last step is done.

    Raises:
        CheckpointError: --resume or --init names a missing, damaged or foreign checkpoint.
    """
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    if uv_model is None:
        from lsqface.morphable.cache import load_uv_model

        uv_model = load_uv_model(source, size=config.uv_size, region=region)
    initial = None
    if init is not None and not resume:
        payload = load_checkpoint(init)
        check_face_model(payload, uv_model, init)
        network = network_from_checkpoint(payload, init)
        if network.config != config.network:
            narrower = network.config
            try:
                network = grow_network(network, config.network)
            except ConfigError as error:
                raise CheckpointError(
                    f"Checkpoint {init} is of another network ({payload.get('network_config')}) than the config "
                    f"({dataclasses.asdict(config.network)}): {error} Use the network it was trained with, or a wider one."
                ) from None
            logger.info("Starting from %s grown from channel factor %g to %g (the same maps to start with).",
                        init, narrower.channel_factor, config.network.channel_factor)
        if int(payload["input_size"]) != config.input_size:
            # The U-Net is fully convolutional: its weights start a stage at another input size.
            logger.info("Starting from %s, trained at %s px, at %d px.", init, payload["input_size"], config.input_size)
        initial = network.state_dict()
    trainer = Trainer(config, stage, run_dir, uv_model, context, initial_network=initial)
    if resume:
        trainer.resume(None if resume is True else resume)
    try:
        summary = trainer.run(until=until, progress=progress)
        finished = trainer.step >= trainer.section.steps
        if config.evaluate_count > 0 and context.is_main and not summary.interrupted and finished:
            from lsqface.train.evaluate import synthetic_landmark_error

            result = synthetic_landmark_error(trainer.network, trainer.uv_model, config, config.evaluate_count)
            result.update({"stage": stage, "step": trainer.step})
            write_text_atomic(Path(run_dir) / "evaluation.json", json.dumps(result, indent=2) + "\n")
            if trainer.writer is not None:
                trainer.writer.add_scalar(f"{stage}/synthetic_landmark_error", result["mean"], trainer.step)
            logger.info("Fitted 5-landmark error on %d held-out synthetic faces: %.2f %%", result["count"], result["mean"])
    finally:
        trainer.close()
    return summary
