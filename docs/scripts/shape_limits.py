"""Where the default model's vertex error comes from: docs/training.md, "The shape limit".

    python docs/scripts/shape_limits.py parts --count 32
    python docs/scripts/shape_limits.py solver --count 32 --oracle --size 64 shape_weight=100
    python docs/scripts/shape_limits.py solver --count 64 shape_weight=100 shape_weight=30 shape_weight=10

``parts``: the benchmark's vertex error of shapes that take part of each face's truth (its true
expression with the mean identity, and so on): how much of the error each part carries.

``solver``: the validation faces (seeds kept apart from the benchmark's) through the default
model, or with ``--oracle`` through their true maps, once per setting; each setting is
``name=value`` of ``SolverConfig`` or ``ReconstructConfig`` (several joined by commas), on top of
the checkpoint's own settings. One torch thread; upright faces unless ``--roll`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.evaluate.benchmark import ORACLE, VALIDATION_OFFSET, evaluate_synthetic, evaluation_seeds
from lsqface.evaluate.metrics import vertex_error
from lsqface.morphable.cache import load_uv_model
from lsqface.reconstruct import Reconstructor


def _value(current, text: str):
    return text if isinstance(current, str) else type(current)(float(text))


def configured(base, setting: str):
    """``base`` (a ReconstructConfig) with ``name=value[,name=value...]`` applied."""
    solver, other = {}, {}
    for item in setting.split(","):
        name, _, text = item.partition("=")
        if hasattr(base.solver, name):
            solver[name] = _value(getattr(base.solver, name), text)
        elif hasattr(base, name) and name != "solver":
            other[name] = _value(getattr(base, name), text)
        else:
            raise SystemExit(f"unknown setting {name!r}")
    return dataclasses.replace(base, solver=dataclasses.replace(base.solver, **solver), **other)


def parts(uv_model, count: int) -> None:
    model = uv_model.model
    faces = generate_faces(uv_model, evaluation_seeds(count, VALIDATION_OFFSET), SyntheticConfig(size=64, roll_range=0.0))
    truth = faces.vertices.to(torch.float64)
    for label, identity_modes, expression_modes in [
            ("mean shape", 0, 0), ("true expression, mean identity", 0, None), ("true identity, neutral", None, 0),
            ("true expression and the first 5 identity modes", 5, None),
            ("true expression and the first 20 identity modes", 20, None)]:
        identity = faces.identity.to(torch.float64).numpy().copy()
        expression = faces.expression.to(torch.float64).numpy().copy()
        if identity_modes is not None:
            identity[:, identity_modes:] = 0.0
        if expression_modes is not None:
            expression[:, expression_modes:] = 0.0
        shapes = torch.as_tensor(np.stack([model.shape(i, e) for i, e in zip(identity, expression)]))
        print(f"{label:50s} median vertex error {vertex_error(shapes, truth).median():.2f} mm")


def solver(uv_model, count: int, settings: list[str], oracle: bool, size: int, roll: float) -> None:
    base = Reconstructor.from_checkpoint(uv_model=uv_model)
    for setting in settings or ["robust_iterations=" + str(base.config.solver.robust_iterations)]:
        config = configured(base.config, setting)
        if oracle:
            results = evaluate_synthetic(ORACLE, uv_model, ranges=(roll,), count=count, size=size, first=VALIDATION_OFFSET,
                                         oracle_config=dataclasses.replace(config, input_size=size))
        else:
            results = evaluate_synthetic(Reconstructor(base.network, uv_model, config), uv_model, ranges=(roll,),
                                         count=count, size=size, first=VALIDATION_OFFSET)
        row = results[0].summary()
        print(f"{setting:40s} fitted mean / median {row['fitted']:.2f} / {row['fitted_median']:.2f} %, "
              f"failures {row['fitted_failure_rate']:.1f} %, vertex median {row['vertex_median_mm']:.2f} mm "
              f"(mean face {row['mean_face_vertex_median_mm']:.2f}), rotation {row['rotation_degrees']:.2f} deg", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("parts", "solver"))
    parser.add_argument("settings", nargs="*", help="name=value[,name=value...] per run (solver)")
    parser.add_argument("--count", type=int, default=32, help="validation faces")
    parser.add_argument("--oracle", action="store_true", help="the true maps instead of the network (solver)")
    parser.add_argument("--size", type=int, default=128, help="side of the rendered faces, pixels")
    parser.add_argument("--roll", type=float, default=0.0, help="in-plane rotation range, degrees")
    arguments = parser.parse_intermixed_args()
    torch.set_num_threads(1)
    uv_model = load_uv_model()
    if arguments.what == "parts":
        parts(uv_model, arguments.count)
    else:
        solver(uv_model, arguments.count, arguments.settings, arguments.oracle, arguments.size, arguments.roll)


if __name__ == "__main__":
    main()
