"""Checkpoint files: a trained network with what it needs to run, written atomically.

A checkpoint is a ``torch.save`` dict of tensors and plain values (loaded with
``weights_only=True``, so opening one never runs code):

    format            "lsqface-checkpoint"
    version           CHECKPOINT_VERSION
    network_config    UNetConfig as a dict
    input_size        the network's input size in pixels (square)
    face_model        {"name", "source_hash", "n_shape", "n_albedo"} of the UV-3DMM it was trained with
    network_state     the U-Net's state_dict
    solver_config     SolverConfig as a dict
    reconstruct_config  optional: {"rotation_ensemble": 1, 2 or 4, "refine_passes": N, "refine_fraction": F}
                        for lsqface.reconstruct (lsqface export --ensemble, --refine)
    training          optional: optimiser, scheduler, adaptive weights, RNG states, step (lsqface.train)
    metadata          optional: free-form provenance (config, command, time, metrics)

The file is written to a temporary name and renamed, so an interrupted save
never replaces a good checkpoint with half a file.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lsqface.errors import CheckpointError
from lsqface.files import write_bytes_atomic
from lsqface.nets.unet import UNet, UNetConfig

#: Bounds of the settings a checkpoint holds, checked before anything they size is allocated: (smallest, largest).
#: ``network_config.width`` scales every channel count, so the network's size grows with its square.
SETTING_BOUNDS = {
    "input_size": (16, 1024),
    "network_config.width": (0.01, 8.0),
    "solver_config.sample_count": (16, 1_000_000),
    "solver_config.robust_iterations": (0, 100),
    "solver_config.reprojection_iterations": (0, 100),
    "reconstruct_config.refine_passes": (0, 10),
    "reconstruct_config.rotation_ensemble": (1, 4),
    "reconstruct_config.refine_fraction": (0.05, 1.0),
}
#: Largest network a checkpoint may describe, parameters (the regular U-Net has about 7.8 million).
MAX_NETWORK_PARAMETERS = 200_000_000

CHECKPOINT_FORMAT = "lsqface-checkpoint"
CHECKPOINT_VERSION = 1


def face_model_summary(uv_model) -> dict:
    """What a checkpoint records of the UV-3DMM it was trained with."""
    model = uv_model.model
    return {"name": model.name, "source_hash": model.source_hash, "n_shape": model.n_shape, "n_albedo": model.n_albedo}


def save_checkpoint(path: str | Path, contents: dict[str, Any]) -> Path:
    """Write a checkpoint dict (see the module docstring) atomically; adds format and version."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **contents}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, cut short, not an lsqface checkpoint, or of a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; pass the .pt file written by 'lsqface train'.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"Checkpoint {path} is cut short or is not a checkpoint ({type(error).__name__}); "
            "use an intact file or the previous checkpoint of the run."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an lsqface checkpoint; pass a .pt file written by 'lsqface train'.")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path} has format version {payload['version']}, newer than this lsqface "
            f"({CHECKPOINT_VERSION}); upgrade lsqface."
        )
    for key in ("network_config", "input_size", "network_state"):
        if key not in payload:
            raise CheckpointError(f"Checkpoint {path} lacks '{key}'; it was not written by 'lsqface train'.")
    check_settings(payload, path)
    return payload


def check_settings(payload: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Refuse settings outside ``SETTING_BOUNDS`` and non-finite numbers among the settings.

    Raises:
        CheckpointError: naming the setting, its value and its bounds.
    """
    for name, (low, high) in SETTING_BOUNDS.items():
        section, _, key = name.rpartition(".")
        settings = payload.get(section) if section else payload
        if not isinstance(settings, dict) or settings.get(key) is None:
            continue
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
            raise CheckpointError(f"Checkpoint {path} sets {name} to {value!r}, outside [{low}, {high}]; it is damaged "
                                  "or was edited, so pass another checkpoint.")
    for section in ("network_config", "solver_config", "reconstruct_config"):
        for key, value in (payload.get(section) or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise CheckpointError(f"Checkpoint {path} sets {section}.{key} to {value}; it is damaged or was "
                                      "edited, so pass another checkpoint.")


def network_from_checkpoint(payload: dict[str, Any], path: str | Path = "checkpoint") -> UNet:
    """Build the U-Net a checkpoint describes and load its weights.

    Raises:
        CheckpointError: the weights do not fit the network the checkpoint names (another model).
    """
    if payload.get("kind") == "mofa":
        raise CheckpointError(
            f"Checkpoint {path} is a MoFA baseline, not an lsqface network; evaluate it with 'lsqface compare'."
        )
    try:
        config = UNetConfig(**payload["network_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"Checkpoint {path} names an unknown network configuration ({error}).") from None
    # The network is first laid out without memory, so a config that asks for another (or a huge)
    # network is refused before its weights are allocated.
    with torch.device("meta"):
        layout = UNet(config).state_dict()
    parameters = sum(tensor.numel() for tensor in layout.values())
    if parameters > MAX_NETWORK_PARAMETERS:
        raise CheckpointError(f"Checkpoint {path} describes a network of {parameters:,} parameters, more than "
                              f"{MAX_NETWORK_PARAMETERS:,}; it is damaged or was edited.")
    state = payload["network_state"]
    if not isinstance(state, dict) or any(not isinstance(state.get(key), torch.Tensor) or state[key].shape != tensor.shape
                                          for key, tensor in layout.items()):
        raise CheckpointError(f"Checkpoint {path} holds weights of another network than its config describes; it is "
                              "damaged or was edited.")
    if any(tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()) for tensor in state.values()
           if isinstance(tensor, torch.Tensor)):
        raise CheckpointError(f"Checkpoint {path} holds NaN or infinite weights (a training run that diverged); "
                              "use an earlier checkpoint of the run.")
    network = UNet(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(
            f"Checkpoint {path} holds weights of another network than its config describes ({first}); "
            "it is damaged or was edited."
        ) from None
    return network


def check_face_model(payload: dict[str, Any], uv_model, path: str | Path = "checkpoint") -> None:
    """Refuse a checkpoint trained with a face model of other dimensions than ``uv_model``'s."""
    recorded = payload.get("face_model")
    if recorded is None:
        return
    current = face_model_summary(uv_model)
    if (recorded["n_shape"], recorded["n_albedo"]) != (current["n_shape"], current["n_albedo"]):
        raise CheckpointError(
            f"Checkpoint {path} was trained with face model {recorded['name']} "
            f"({recorded['n_shape']} shape, {recorded['n_albedo']} albedo modes) but {current['name']} "
            f"({current['n_shape']}, {current['n_albedo']}) is loaded; pass the same --source as in training."
        )


def inference_checkpoint(payload: dict[str, Any], notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A training checkpoint without its training state: what ``lsqface reconstruct`` needs, to ship.

    Keeps the network, its input size, the face-model summary and the solver settings; the
    optimiser, scheduler, adaptive weights and RNG states are dropped. ``metadata`` keeps the
    original's and gains ``training_config`` (the run's config as a dict), ``training_step`` and
    ``notes`` (e.g. the evaluation that was measured).
    """
    training = payload.get("training") or {}
    metadata = dict(payload.get("metadata") or {})
    if training:
        metadata.update({"training_config": training.get("config"), "training_step": training.get("step"),
                         "training_stage": training.get("stage")})
    if notes:
        metadata["notes"] = notes
    kept = {key: payload[key] for key in ("network_config", "input_size", "face_model", "network_state", "solver_config",
                                          "reconstruct_config") if key in payload}
    return {**kept, "metadata": metadata}


def average_checkpoints(payloads: list[dict[str, Any]], paths: list[str | Path]) -> dict[str, Any]:
    """The first checkpoint with its network weights replaced by the mean of every checkpoint's.

    Weight averaging over the end of one run (several checkpoints of the same network, as
    ``keep_every`` keeps them): the mean of the floating-point tensors (weights, biases and batch-norm
    running statistics), computed in float64 and stored in each tensor's dtype; integer tensors
    (batch-norm step counters) are the first checkpoint's. ``metadata.averaged_steps`` lists the
    training step of each checkpoint in order.

    Raises:
        CheckpointError: the checkpoints describe different networks or input sizes.
    """
    first = payloads[0]
    for payload, path in zip(payloads[1:], paths[1:]):
        state = payload["network_state"]
        if (payload["network_config"] != first["network_config"] or payload["input_size"] != first["input_size"]
                or set(state) != set(first["network_state"])
                or any(state[key].shape != tensor.shape for key, tensor in first["network_state"].items())):
            raise CheckpointError(f"Checkpoint {path} holds another network or input size than {paths[0]}; average "
                                  "checkpoints of one run only.")
    averaged = {}
    for key, tensor in first["network_state"].items():
        if tensor.is_floating_point():
            total = sum(payload["network_state"][key].double() for payload in payloads)
            averaged[key] = (total / len(payloads)).to(tensor.dtype)
        else:
            averaged[key] = tensor
    steps = [(payload.get("training") or {}).get("step", (payload.get("metadata") or {}).get("training_step"))
             for payload in payloads]
    metadata = {**(first.get("metadata") or {}), "averaged_steps": steps}
    return {**first, "network_state": averaged, "metadata": metadata}


def config_dict(config) -> dict:
    """A dataclass config as the plain dict a checkpoint stores."""
    return dataclasses.asdict(config)
