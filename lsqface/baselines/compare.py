"""``lsqface compare``: several checkpoints (lsqface or MoFA) on one synthetic benchmark, one report.

Each checkpoint's kind is read from its contents (``kind = "mofa"`` is a
MoFA run of ``lsqface train-mofa``; anything else an lsqface U-Net). Every
model meets the same faces (:func:`lsqface.evaluate.benchmark.evaluate_synthetic`,
the seeds reserved for evaluation) at the same in-plane rotation ranges.

Files written into the report folder (each atomically):

- ``report.md``: one table row per model and range: fitted 5-landmark error
  (percent of the inter-ocular distance), failure rate (percent of faces above
  10 %), vertex error (mm, after similarity alignment), rotation error
  (degrees), solve failures, the medians of the fitted and the vertex error,
  and per model its parameter count and CPU latency (wall milliseconds per
  image, measured when the model was evaluated: a model joined with
  ``--previous`` keeps its earlier figure); links to the plots;
- ``comparison.jsonl``: the same rows as JSON lines;
- ``synthetic-<model>.jsonl``: one line per face and range (seed, roll, errors);
- ``error-vs-rotation.png``: mean fitted landmark error against the range's
  bound, one line per model;
- ``training-loss.png`` and ``training-loss.json``: for MoFA runs whose
  ``losses.jsonl`` lies beside the checkpoint, the median of every 100
  iterations of the landmark and photometric losses (seed Figs. 24, 25).

A report folder holds everything its table, plots and loss curves are made
from, so :func:`load_report` reads its models back: ``lsqface compare
--previous DIR`` joins models compared earlier (in another run, on
another machine, from checkpoints since deleted) with new checkpoints into
one report, after checking that every model met the same faces.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lsqface.errors import ConfigError
from lsqface.evaluate.benchmark import DEFAULT_RANGES, SyntheticResults, evaluate_synthetic, evaluation_seeds
from lsqface.evaluate.report import file_stem, markdown_table, png_bytes, rotation_axes, rotation_plot_png
from lsqface.files import read_json_lines, write_bytes_atomic, write_text_atomic

#: Iterations per median of the training-loss curves (seed Figs. 24, 25).
LOSS_WINDOW = 100
#: Loss terms drawn in the training-loss plot.
LOSS_TERMS = ("landmark", "photometric")


@dataclass
class ComparedModel:
    """One checkpoint's results.

    Attributes:
        name: its label in the report.
        kind: "lsqface" or "mofa".
        checkpoint: the file.
        parameters: number of trained network parameters.
        latency_ms: CPU milliseconds per image of the whole reconstruct call (framing, network and,
            for lsqface, the least-squares fit), median of the timed repeats.
        results: one :class:`SyntheticResults` per range.
        loss_log: the MoFA run's losses.jsonl beside the checkpoint, if there is one.
        loss_curve: its training-loss curves as :func:`loss_curves` gives them, when read back from an
            earlier report (the log itself may be gone); None to compute them from ``loss_log``.
    """

    name: str
    kind: str
    checkpoint: Path
    parameters: int
    latency_ms: float
    results: list[SyntheticResults] = field(default_factory=list)
    loss_log: Path | None = None
    loss_curve: dict | None = None
    size: int | None = None

    def rows(self) -> list[dict]:
        """One JSON-able dict per range: the numbers of the report's table."""
        rows = []
        for result in self.results:
            summary = result.summary()
            rows.append({"model": self.name, "kind": self.kind, "checkpoint": str(self.checkpoint),
                         "parameters": self.parameters, "latency_ms": self.latency_ms,
                         "roll_range": summary["roll_range"], "count": summary["count"], "fitted": summary["fitted"],
                         "failure_rate": summary["fitted_failure_rate"], "vertex_mm": summary["vertex_mm"],
                         "rotation_degrees": summary["rotation_degrees"], "solve_failures": summary["solve_failures"],
                         "fitted_median": summary["fitted_median"], "vertex_median_mm": summary["vertex_median_mm"],
                         "size": self.size})
        return rows


def checkpoint_kind(payload: dict) -> str:
    """"mofa" for a checkpoint of ``lsqface train-mofa``, "lsqface" otherwise."""
    return "mofa" if payload.get("kind") == "mofa" else "lsqface"


def load_model(path: str | Path, uv_model, device: str = "cpu"):
    """(kind, reconstructor) of a checkpoint: a :class:`~lsqface.reconstruct.Reconstructor` or a
    :class:`~lsqface.baselines.mofa.MoFAReconstructor`, both callables images -> reconstruction.

    Raises:
        CheckpointError: the file is missing, damaged, or of another face model.
    """
    from lsqface.nets.checkpoint import load_checkpoint

    kind = checkpoint_kind(load_checkpoint(path))
    if kind == "mofa":
        from lsqface.baselines.mofa import MoFAReconstructor

        return kind, MoFAReconstructor.from_checkpoint(path, uv_model=uv_model, device=device)
    from lsqface.reconstruct import Reconstructor

    return kind, Reconstructor.from_checkpoint(path, uv_model=uv_model, device=device)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of trainable parameters of a network."""
    return int(sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad))


def measure_latency(reconstructor, images: Sequence[np.ndarray], repeats: int = 3) -> float:
    """CPU milliseconds per image of ``reconstructor(images)``: one warm-up call, then the median of ``repeats`` calls."""
    reconstructor(list(images))
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        reconstructor(list(images))
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times)) / max(1, len(images))


def model_names(checkpoints: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """Labels of the checkpoints: ``names`` if given, else the run folder of a ``last.pt`` or the file's stem,
    made unique with a counter.

    Raises:
        ConfigError: ``names`` is given with another length than ``checkpoints``.
    """
    if names:
        if len(names) != len(checkpoints):
            raise ConfigError(f"Give one --names entry per checkpoint ({len(checkpoints)}), not {len(names)}.")
        chosen = list(names)
    else:
        chosen = [Path(path).parent.name if Path(path).stem == "last" and Path(path).parent.name else Path(path).stem
                  for path in checkpoints]
    seen: dict[str, int] = {}
    unique = []
    for name in chosen:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def compare_checkpoints(checkpoints: Sequence[str | Path], uv_model, *, names: Sequence[str] | None = None,
                        ranges: Sequence[float] = DEFAULT_RANGES, count: int = 100, size: int = 128,
                        batch_size: int = 8, latency_images: int = 8, latency_repeats: int = 3,
                        device: str = "cpu", progress: Callable | None = None) -> list[ComparedModel]:
    """Evaluate every checkpoint on the same synthetic faces and time it.

    Args:
        checkpoints: lsqface or MoFA checkpoint files.
        uv_model: the UV-3DMM the faces are drawn from (the checkpoints' face model).
        names: labels (default: :func:`model_names`).
        ranges: in-plane rotation ranges, degrees.
        count: faces per range.
        size: side of the synthetic images, pixels.
        batch_size: faces per call.
        latency_images: images per timed call (the first evaluation faces of range 0).
        latency_repeats: timed calls per model.
        device: where the networks run.
        progress: optional wrapper of the benchmark's batch iterator.
    """
    from lsqface.data.synthetic import SyntheticConfig, generate_faces

    labels = model_names(checkpoints, names)
    faces = generate_faces(uv_model, evaluation_seeds(max(1, latency_images)), SyntheticConfig(size=size, roll_range=0.0))
    timing_images = [image.permute(1, 2, 0).numpy() for image in faces.image]
    models = []
    for label, path in zip(labels, checkpoints):
        path = Path(path)
        kind, reconstructor = load_model(path, uv_model, device)
        results = evaluate_synthetic(reconstructor, uv_model, ranges, count, size, batch_size=batch_size, progress=progress)
        latency = measure_latency(reconstructor, timing_images, latency_repeats)
        log = path.parent / "losses.jsonl"
        models.append(ComparedModel(label, kind, path, count_parameters(reconstructor.network), latency, results,
                                    log if kind == "mofa" and log.is_file() else None, size=size))
    return models


def comparison_table(models: Sequence[ComparedModel]) -> str:
    """The Markdown table: one row per model and in-plane rotation range."""
    return markdown_table([
        ("Model", "model", None), ("Kind", "kind", None), ("Parameters", "parameters", None),
        ("CPU latency (ms/image)", "latency_ms", 1), ("Roll range (deg)", "roll_range", None), ("Faces", "count", None),
        ("Fitted landmark (%)", "fitted", 2), ("Failure rate > 10 % (%)", "failure_rate", 1), ("Vertex (mm)", "vertex_mm", 2),
        ("Rotation (deg)", "rotation_degrees", 2), ("Solve failures", "solve_failures", None),
        ("Fitted median (%)", "fitted_median", 2), ("Vertex median (mm)", "vertex_median_mm", 2)],
        [row for model in models for row in model.rows()])


def comparison_plot(models: Sequence[ComparedModel]) -> bytes:
    """PNG bytes: mean fitted 5-landmark error against the in-plane rotation range, one line per model."""
    figure, axes = rotation_axes()
    for model in models:
        axes.plot([r.roll_range for r in model.results], [float(np.mean(r.fitted_error)) for r in model.results],
                  "o-", label=f"{model.name} ({model.kind})")
    return rotation_plot_png(figure, axes, "in-plane rotation range r (roll uniform in [-r, r], degrees)",
                             "mean fitted 5-landmark error (% inter-ocular)")


def loss_curves(models: Sequence[ComparedModel], window: int = LOSS_WINDOW) -> dict[str, dict[str, dict[str, list]]]:
    """{model: {term: {"steps": [...], "medians": [...]}, "phase_starts": {phase: first step}}} of the MoFA runs with a loss log."""
    from lsqface.baselines.train_mofa import loss_medians, read_loss_log

    curves = {}
    for model in models:
        if model.loss_curve is not None:
            curves[model.name] = model.loss_curve
            continue
        if model.loss_log is None:
            continue
        records = read_loss_log(model.loss_log)
        curves[model.name] = {"phase_starts": {}}
        for record in records:
            curves[model.name]["phase_starts"].setdefault(record["phase"], int(record["step"]))
        for term in LOSS_TERMS:
            steps, medians = loss_medians(records, term, window)
            curves[model.name][term] = {"steps": steps.tolist(), "medians": medians.tolist()}
    return curves


def loss_plot(curves: dict[str, dict[str, dict[str, list]]], window: int = LOSS_WINDOW) -> bytes:
    """PNG bytes: one panel per loss term, one line per MoFA run (median of every ``window`` iterations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, len(LOSS_TERMS), figsize=(11.0, 4.3), layout="constrained")
    figure.suptitle(f"MoFA training losses: median of every {window} iterations; dotted lines: phase starts")
    for axes, term in zip(panels, LOSS_TERMS):
        for index, (name, terms) in enumerate(curves.items()):
            colour = f"C{index % 10}"
            if terms[term]["steps"]:
                axes.plot(terms[term]["steps"], terms[term]["medians"], ".-", color=colour, label=name)
            for phase, start in terms.get("phase_starts", {}).items():
                if phase != "rotation_xy":
                    axes.axvline(start, color=colour, lw=0.6, ls=":")
        axes.set_xlabel("iteration")
        axes.set_ylabel(f"{term} loss")
        axes.set_yscale("log")
        axes.set_title(f"{term} loss")
        axes.legend(fontsize=8)
    return png_bytes(figure)


def write_comparison(folder: str | Path, models: Sequence[ComparedModel], notes: Sequence[str] = ()) -> Path:
    """Write the comparison folder (module notes) and return the path of ``report.md``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = ["# lsqface comparison", ""]
    parts += [f"{line}  " for line in notes]
    parts += ["", "Synthetic faces with ground truth, the same faces for every model. Fitted landmark error: mean "
              "5-landmark distance over the inter-ocular distance, percent (a failed solve counts 100 %); failure "
              "rate: faces above 10 %; vertex error after similarity alignment over the face region; rotation error "
              "of the camera. Latency: wall time on the CPU of one reconstruct call divided by its images, measured "
              "when the model was evaluated (a model joined from an earlier report keeps that report's figure, "
              "which may come from another machine or load).",
              "", comparison_table(models), "", "![error against in-plane rotation](error-vs-rotation.png)", "",
              "Rows as JSON lines: [comparison.jsonl](comparison.jsonl)  "]
    write_text_atomic(folder / "comparison.jsonl", "".join(json.dumps(row) + "\n" for model in models for row in model.rows()))
    write_bytes_atomic(folder / "error-vs-rotation.png", comparison_plot(models))
    for model in models:
        stem = f"synthetic-{file_stem(model.name)}"
        records = [{"model": model.name, **record} for result in model.results for record in result.records()]
        write_text_atomic(folder / f"{stem}.jsonl", "".join(json.dumps(record) + "\n" for record in records))
        parts.append(f"Per-face errors of {model.name}: [{stem}.jsonl]({stem}.jsonl)  ")
    curves = loss_curves(models)
    if curves:
        write_text_atomic(folder / "training-loss.json", json.dumps(curves) + "\n")
        write_bytes_atomic(folder / "training-loss.png", loss_plot(curves))
        parts += ["", "## MoFA training losses", "",
                  f"Median of every {LOSS_WINDOW} iterations of each run's losses.jsonl (seed Figs. 24, 25); "
                  "the landmark loss is the L1 distance over the image side.", "",
                  "![MoFA training losses](training-loss.png)", "", "Curves as JSON: [training-loss.json](training-loss.json)"]
    path = folder / "report.md"
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path


def _read_report_file(path: Path, lines: bool = True):
    """A compare report's JSON lines (or, with ``lines=False``, JSON) file, or a ConfigError saying what is wrong."""
    try:
        return read_json_lines(path) if lines else json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: give a folder written by lsqface compare.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not a JSON file of lsqface compare ({error}).") from None


def load_report(folder: str | Path) -> list[ComparedModel]:
    """The models of an earlier comparison report, read back from its JSON files.

    Each model's table rows come from ``comparison.jsonl``, its per-face errors from
    ``synthetic-<model>.jsonl`` (rebuilt into one :class:`SyntheticResults` per range, faces in
    their seed order) and its loss curves from ``training-loss.json``; the checkpoint itself is not
    needed.

    Raises:
        ConfigError: the folder is not a compare report, or a model's files disagree with each other.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; --previous takes folders written by lsqface compare.")
    rows = _read_report_file(folder / "comparison.jsonl")
    curves_path = folder / "training-loss.json"
    curves = _read_report_file(curves_path, lines=False) if curves_path.is_file() else {}
    order: dict[str, list[dict]] = {}
    for row in rows:
        order.setdefault(row["model"], []).append(row)
    models = []
    for name, model_rows in order.items():
        faces = _read_report_file(folder / f"synthetic-{file_stem(name)}.jsonl")
        results = []
        for row in model_rows:
            records = [face for face in faces if face["model"] == name and face["roll_range"] == row["roll_range"]]
            if len(records) != row["count"]:
                raise ConfigError(f"{folder}: {name} has {len(records)} faces at {row['roll_range']:g} degrees in its "
                                  f"JSON lines but {row['count']} in comparison.jsonl.")

            def column(key: str) -> np.ndarray:
                return np.array([np.nan if face.get(key) is None else face[key] for face in records], dtype=np.float64)

            mean_face = column("mean_face_vertex_error_mm") if all("mean_face_vertex_error_mm" in face for face in records) else None
            results.append(SyntheticResults(
                roll_range=float(row["roll_range"]), seeds=np.array([face["seed"] for face in records], dtype=np.int64),
                roll=column("roll"), fitted_error=column("fitted_error"), direct_error=column("direct_error"),
                vertex_error=column("vertex_error_mm"), rotation_error=column("rotation_error_degrees"),
                failed=np.array([bool(face["failed"]) for face in records]), mean_face_vertex_error=mean_face,
            ))
        first = model_rows[0]
        models.append(ComparedModel(name, first["kind"], Path(first["checkpoint"]), int(first["parameters"]),
                                    float(first["latency_ms"]), results, None, curves.get(name), first.get("size")))
    return models


def check_same_benchmark(models: Sequence[ComparedModel]) -> None:
    """Raise ConfigError unless every model met the same faces: the same image size and ranges, each with the same seeds."""
    if not models:
        return
    reference = models[0]
    for model in models[1:]:
        same = [r.roll_range for r in model.results] == [r.roll_range for r in reference.results] and all(
            np.array_equal(mine.seeds, theirs.seeds) for mine, theirs in zip(model.results, reference.results))
        same = same and (None in (model.size, reference.size) or model.size == reference.size)
        if not same:
            raise ConfigError(f"{model.name} was measured on other faces than {reference.name} (other rotation ranges, "
                              "face counts or image size): compare them with the same --synthetic, --ranges and --size.")


def run_comparison(folder: str | Path, checkpoints: Sequence[str | Path], uv_model, *, names: Sequence[str] | None = None,
                   ranges: Sequence[float] = DEFAULT_RANGES, count: int = 100, size: int = 128, batch_size: int = 8,
                   device: str = "cpu", progress: bool = False, notes: Sequence[str] = (),
                   previous: Sequence[str | Path] = ()) -> Path:
    """What ``lsqface compare`` does: :func:`compare_checkpoints`, joined with the models of earlier
    reports (``previous`` folders, :func:`load_report`), then :func:`write_comparison`.

    Raises:
        ConfigError: no checkpoints and no earlier reports, no faces, names that do not match the checkpoints,
            an earlier report that cannot be read, models measured on other faces, or two models of one name.
        CheckpointError: a checkpoint is missing, damaged or of another face model.
    """
    checkpoints = list(checkpoints or [])
    if not checkpoints and not previous:
        raise ConfigError("Give at least one checkpoint to compare with --checkpoints (or earlier reports with --previous).")
    if count <= 0:
        raise ConfigError(f"--synthetic must be a positive number of faces per range, not {count}.")
    if names and not checkpoints:
        raise ConfigError("--names labels the --checkpoints; models read with --previous keep their names.")
    labels = model_names(checkpoints, names) if checkpoints else []
    earlier = [model for report in previous for model in load_report(report)]
    every = [model.name for model in earlier] + labels
    clash = sorted({name for name in every if every.count(name) > 1})
    if clash:
        raise ConfigError(f"Two models are called {', '.join(clash)}; give the new checkpoints other --names "
                          "or compare earlier reports whose models are named apart.")
    if checkpoints and earlier:  # the new checkpoints meet the earlier reports' faces
        ranges = [result.roll_range for result in earlier[0].results]
        count = len(earlier[0].results[0].seeds)
        size = earlier[0].size if earlier[0].size is not None else size
    wrap = None
    if progress:
        from tqdm import tqdm

        wrap = lambda iterable: tqdm(iterable, unit="batch", leave=False)  # noqa: E731
    models = earlier + (compare_checkpoints(checkpoints, uv_model, names=labels, ranges=ranges, count=count, size=size,
                                            batch_size=batch_size, device=device, progress=wrap) if checkpoints else [])
    check_same_benchmark(models)
    return write_comparison(folder, models, notes)
