"""The evaluation report: Markdown tables, plots and per-image JSON lines.

Files written into the report folder (each atomically):

- ``report.md``: a landmark table (one row per benchmark, beside the seed's
  Table 2 numbers), a synthetic table (one row per in-plane rotation range),
  an identity table when measured, and links to the plots;
- ``<benchmark>.jsonl``: one line per image,
  ``{"image": name, "five": [[x, y] x 5], "five_direct": [[x, y] x 5],
  "sixty_eight": [[x, y] x 68]}`` in original-image pixels (null and an
  ``"error"`` reason for an image that failed); a benchmark measured against
  dlib's 68-point predictor (``--landmarks dlib``) adds ``"reference"``, dlib's
  5 points, and the report lists the images dlib found no face in;
- ``synthetic.jsonl``: one line per synthetic face and range, with its seed,
  roll and errors;
- ``error-vs-rotation.png`` and ``error-distribution.png`` (cumulative error
  distributions).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lsqface.evaluate.benchmark import SyntheticResults
from lsqface.evaluate.landmarks import FAILURE_THRESHOLD, LandmarkPredictions, summarise
from lsqface.evaluate.reference import DLIB_LANDMARKS, DLIB_REFERENCE, dlib_folder_benchmark, predictor_path
from lsqface.files import write_bytes_atomic, write_text_atomic

#: The seed's Table 2 (direct, fitted) 5-landmark errors, percent of the inter-ocular distance.
SEED_TABLE_2 = {"MAFL": (8.10, 7.86), "AFLW": (9.82, 9.74)}


def cell(value, digits: int | None = 2) -> str:
    """A table cell: "-" for a missing or NaN value, a float with ``digits`` decimals (``None``: its
    shortest form, e.g. 45 for 45.0), anything else as text."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "-"
    if digits is None:
        return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)
    return f"{value:.{digits}f}"


def markdown_table(columns: Sequence[tuple[str, str, int | None]], rows: Sequence[Mapping]) -> str:
    """A Markdown table of ``rows``: one column per (heading, key, digits), each value shown by :func:`cell`."""
    lines = ["| " + " | ".join(heading for heading, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[key], digits) for _, key, digits in columns) + " |" for row in rows]
    return "\n".join(lines)


def landmark_table(benchmarks: Mapping[str, LandmarkPredictions]) -> str:
    """The Markdown landmark table: mean errors, failure rates and the seed's numbers per benchmark.

    A benchmark whose landmarks are a reference rather than ground truth (``predictions.reference``)
    is labelled "name: <reference>", e.g. "photos: agreement with dlib's 68-point predictor".
    """
    rows = []
    for name, predictions in benchmarks.items():
        direct, fitted = summarise(predictions.errors("direct")), summarise(predictions.errors("fitted"))
        seed = SEED_TABLE_2.get(name.upper(), (None, None)) if predictions.reference is None else (None, None)
        rows.append({"benchmark": benchmark_label(name, predictions), "count": fitted["count"],
                     "direct": direct["mean"], "fitted": fitted["mean"], "direct_failure_rate": direct["failure_rate"],
                     "fitted_failure_rate": fitted["failure_rate"], "failed": len(predictions.failures),
                     "seed_direct": seed[0], "seed_fitted": seed[1]})
    return markdown_table([
        ("Benchmark", "benchmark", None), ("Images", "count", None), ("Direct (%)", "direct", 2), ("Fitted (%)", "fitted", 2),
        ("Direct > 10 % (%)", "direct_failure_rate", 1), ("Fitted > 10 % (%)", "fitted_failure_rate", 1),
        ("Failed", "failed", None), ("Seed direct (%)", "seed_direct", 2), ("Seed fitted (%)", "seed_fitted", 2)], rows)


def benchmark_label(name: str, predictions: LandmarkPredictions) -> str:
    """A benchmark's name as the report shows it: with what its landmarks are when not ground truth."""
    return name if predictions.reference is None else f"{name}: {predictions.reference}"


def synthetic_table(results: Sequence[SyntheticResults]) -> str:
    """The Markdown synthetic table: one row per in-plane rotation range."""
    return markdown_table([
        ("Roll range (deg)", "roll_range", None), ("Faces", "count", None), ("Fitted (%)", "fitted", 2),
        ("Direct (%)", "direct", 2), ("Fitted > 10 % (%)", "fitted_failure_rate", 1),
        ("Direct > 10 % (%)", "direct_failure_rate", 1), ("Vertex (mm)", "vertex_mm", 2),
        ("Rotation (deg)", "rotation_degrees", 2), ("Solve failures", "solve_failures", None),
        ("Fitted median (%)", "fitted_median", 2), ("Vertex median (mm)", "vertex_median_mm", 2),
        ("Mean face vertex median (mm)", "mean_face_vertex_median_mm", 2)], [result.summary() for result in results])


def identity_table(identity: Mapping[str, float]) -> str:
    """The Markdown identity table of {name: value} (similarities and earth mover's distances)."""
    return markdown_table([("Measure", "name", None), ("Value", "value", 3)],
                          [{"name": name, "value": float(value)} for name, value in identity.items()])


def png_bytes(figure) -> bytes:
    """A matplotlib figure as PNG bytes (110 dpi); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def rotation_axes():
    """A new (figure, axes) for an error-against-rotation plot, drawn with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, 4.0))


def rotation_plot_png(figure, axes, xlabel: str, ylabel: str) -> bytes:
    """PNG bytes of an error-against-rotation plot once its data are drawn: the failure threshold,
    an error axis from 0 that is linear to 1 % and logarithmic above (errors run from 0.1 to
    thousands of percent), the legend and the title."""
    axes.axhline(FAILURE_THRESHOLD, color="grey", lw=0.8, ls="--")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_ylim(bottom=0)  # errors are not negative: no margin below zero
    axes.legend(fontsize=8)
    axes.set_title("Synthetic faces: error against in-plane rotation")
    return png_bytes(figure)


def rotation_plot(results: Sequence[SyntheticResults]) -> bytes:
    """PNG bytes: landmark error of every synthetic face against its |in-plane rotation|, with range means."""
    figure, axes = rotation_axes()
    roll = np.concatenate([np.abs(r.roll) for r in results]) if results else np.zeros(0)
    for kind, colour in (("fitted", "tab:blue"), ("direct", "tab:orange")):
        errors = np.concatenate([getattr(r, f"{kind}_error") for r in results]) if results else np.zeros(0)
        axes.scatter(roll, errors, s=6, alpha=0.4, color=colour, label=f"{kind} (faces)")
        axes.plot([r.roll_range for r in results], [float(np.mean(getattr(r, f"{kind}_error"))) for r in results],
                  "o-", color=colour, label=f"{kind} (mean over range)")
    return rotation_plot_png(figure, axes, "in-plane rotation |roll| (degrees); means plotted at the range's bound",
                             "5-landmark error (% inter-ocular)")


def distribution_plot(curves: Mapping[str, np.ndarray]) -> bytes:
    """PNG bytes: cumulative error distributions (fraction of images with error below x) of {label: errors}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for label, errors in curves.items():
        ordered = np.sort(np.asarray(errors, dtype=np.float64))
        if ordered.size:
            axes.step(ordered, np.arange(1, ordered.size + 1) / ordered.size, where="post", label=label)
    axes.axvline(FAILURE_THRESHOLD, color="grey", lw=0.8, ls="--")
    axes.set_xlim(0, 2 * FAILURE_THRESHOLD)
    axes.set_ylim(0, 1)
    axes.set_xlabel("5-landmark error (% inter-ocular)")
    axes.set_ylabel("fraction of images")
    axes.legend(fontsize=8)
    axes.set_title("Cumulative error distributions")
    return png_bytes(figure)


def _jsonl(records: Sequence[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def file_stem(name: str) -> str:
    """A benchmark name as a file name stem (lower case, letters, digits and dashes)."""
    return "".join(character if character.isalnum() else "-" for character in name.lower()).strip("-") or "benchmark"


def write_report(folder: str | Path, landmarks: Mapping[str, LandmarkPredictions] | None = None,
                 synthetic: Sequence[SyntheticResults] | None = None, identity: Mapping[str, float] | None = None,
                 title: str = "lsqface evaluation", notes: Sequence[str] = ()) -> Path:
    """Write the report folder (module notes) and return the path of ``report.md``.

    Args:
        folder: the report folder (created).
        landmarks: {benchmark name: predictions}; MAFL and AFLW rows show the seed's numbers beside.
        synthetic: the synthetic benchmark's results, one per range.
        identity: {measure: value} of the identity evaluation.
        title: the report's heading.
        notes: lines added under the heading (what was evaluated, the command).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    landmarks = dict(landmarks or {})
    synthetic = list(synthetic or [])
    parts = [f"# {title}", ""]
    parts += [f"{line}  " for line in notes]
    parts += ["", "Errors: mean point distance over the inter-ocular distance, percent; a face that cannot be "
              "reconstructed counts as 100 %. Direct: read from the correspondence map; fitted: the fitted "
              "3DMM's landmarks. '> 10 %': failure rate.", ""]
    curves: dict[str, np.ndarray] = {}
    if landmarks:
        parts += ["## 5-landmark error", "", landmark_table(landmarks), ""]
        references = sorted({predictions.reference for predictions in landmarks.values() if predictions.reference})
        for reference in references:
            parts += [f"Rows marked '{reference}' have no annotations: they measure how far our landmarks are "
                      "from another estimator's on the same photos (the inter-ocular distance is its eyes'), "
                      "not an error against ground truth.", ""]
        for name, predictions in landmarks.items():
            write_text_atomic(folder / f"{file_stem(name)}.jsonl", _jsonl(predictions.records()))
            parts.append(f"Per-image predictions: [{file_stem(name)}.jsonl]({file_stem(name)}.jsonl)  ")
            label = name if predictions.reference is None else f"{name} (agreement)"
            curves[f"{label} fitted"] = predictions.errors("fitted")
            curves[f"{label} direct"] = predictions.errors("direct")
        parts.append("")
        for name, predictions in landmarks.items():
            if predictions.skipped:
                parts += [f"Skipped in {name}, without reference landmarks ({len(predictions.skipped)}):", ""]
                parts += [f"- {image}: {reason}" for image, reason in predictions.skipped.items()]
                parts.append("")
    if synthetic:
        parts += ["## Synthetic faces with ground truth", "",
                  "Vertex error after similarity alignment over the face region; rotation error of the camera. "
                  "Mean face: the model's mean shape scored the same way, what a fit that recovers no shape scores.", "",
                  synthetic_table(synthetic), "", "![error against in-plane rotation](error-vs-rotation.png)", "",
                  "Per-face errors: [synthetic.jsonl](synthetic.jsonl)", ""]
        write_bytes_atomic(folder / "error-vs-rotation.png", rotation_plot(synthetic))
        write_text_atomic(folder / "synthetic.jsonl", _jsonl([record for result in synthetic for record in result.records()]))
        curves["synthetic fitted"] = np.concatenate([result.fitted_error for result in synthetic])
        curves["synthetic direct"] = np.concatenate([result.direct_error for result in synthetic])
    if curves:
        write_bytes_atomic(folder / "error-distribution.png", distribution_plot(curves))
        parts += ["## Error distributions", "", "![cumulative error distributions](error-distribution.png)", ""]
    if identity:
        parts += ["## Identity", "", identity_table(identity), ""]
    path = folder / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path


def check_request(synthetic_count: int = 0, mafl=None, aflw=None, folder_images=None, folder_landmarks=None,
                  oracle: bool = False, identity=None) -> None:
    """Refuse an evaluation request that cannot run, before anything slow is loaded.

    ``folder_landmarks`` may be "dlib" (:data:`lsqface.evaluate.reference.DLIB_LANDMARKS`): the
    folder's reference landmarks then come from dlib's 68-point predictor, which must be installed.

    Raises:
        ConfigError: nothing to evaluate, the oracle asked for photos, a folder without landmarks,
            or ``--landmarks dlib`` without dlib and its models.
    """
    from lsqface.errors import ConfigError

    photos = [value for value in (mafl, aflw, folder_images, identity) if value is not None]
    if (folder_images is None) != (folder_landmarks is None):
        raise ConfigError("Give --folder and --landmarks together: the images and their landmark file (or --landmarks dlib).")
    if not photos and synthetic_count <= 0:
        raise ConfigError("Nothing to evaluate; give --synthetic N, --mafl, --aflw, --folder with --landmarks, --identity "
                          "or --real validation|test.")
    if oracle and photos:
        raise ConfigError("The oracle has true maps for synthetic faces only; drop --oracle or the photo benchmarks.")
    if folder_landmarks is not None and str(folder_landmarks) == DLIB_LANDMARKS:
        predictor_path()


def run_evaluation(folder: str | Path, reconstructor=None, uv_model=None, *, synthetic_count: int = 0,
                   ranges: Sequence[float] = (0.0, 15.0, 45.0, 90.0, 180.0), synthetic_size: int = 128,
                   mafl: str | Path | None = None, aflw: str | Path | None = None, folder_images: str | Path | None = None,
                   folder_landmarks: str | Path | None = None, oracle: bool = False, batch_size: int = 8,
                   identity: str | Path | None = None, descriptor=None, render_over: str = "black",
                   detect: bool = False, progress: bool = False, notes: Sequence[str] = (),
                   validation: bool = False, look: str = "mask") -> Path:
    """Run the requested benchmarks and write the report (what ``lsqface evaluate`` does).

    Args:
        folder: the report folder.
        reconstructor: a :class:`lsqface.reconstruct.Reconstructor` (not needed with ``oracle``).
        uv_model: the UV-3DMM of the synthetic faces (default: the reconstructor's).
        synthetic_count: synthetic faces per in-plane rotation range (0: no synthetic benchmark).
        ranges: in-plane rotation ranges, degrees.
        synthetic_size: side of the synthetic images, pixels.
        validation: draw the synthetic faces from the validation seeds (for tuning settings) instead
            of the benchmark's.
        look: the synthetic faces' look, "mask", "photo" or "other" (lsqface.evaluate.benchmark).
        mafl: CelebA folder holding MAFL/ (the MAFL test split is evaluated).
        aflw: the aflw_release-2 folder (its test split is evaluated).
        folder_images, folder_landmarks: an image folder and its landmark file
            (:func:`lsqface.evaluate.landmarks.read_landmark_file`), or "dlib": every image's
            reference landmarks from dlib's 68-point predictor (:mod:`lsqface.evaluate.reference`);
            an image where dlib finds no face is skipped and listed in the report.
        oracle: evaluate the true maps of the synthetic faces instead of a network (a self-check).
        batch_size: images per forward pass.
        identity: a folder of photos named after the people in them (:func:`lsqface.evaluate.identity.identity_from_name`).
        descriptor: the identity descriptor: a callable, an .onnx path, or None for dlib's.
        render_over: "black" or "photo", under the identity renderings.
        detect: find each photo's largest face with lsqface.detect first (for photos where it is small) and
            reconstruct it in a square around that box, in the landmark benchmarks and the identity
            evaluation; a photo without a detected face is reconstructed whole.
        progress: show progress bars.
        notes: lines for the report's head.

    Raises:
        ConfigError: nothing to evaluate, the oracle asked for photos, a folder without landmarks,
            or ``--landmarks dlib`` without dlib and its models.
        DetectorError: ``detect`` without dlib.
    """
    from lsqface.evaluate.benchmark import ORACLE, VALIDATION_OFFSET, evaluate_synthetic
    from lsqface.evaluate.landmarks import dataset_benchmark, evaluate_landmarks, folder_benchmark

    check_request(synthetic_count, mafl, aflw, folder_images, folder_landmarks, oracle, identity)
    wrap = None
    if progress:
        from tqdm import tqdm

        wrap = lambda iterable: tqdm(iterable, unit="batch", leave=False)  # noqa: E731
    benchmarks: dict[str, list] = {}
    if mafl is not None:
        from lsqface.data.celeba import MAFL

        benchmarks["MAFL"] = dataset_benchmark(MAFL(mafl, split="test"))
    if aflw is not None:
        from lsqface.data.aflw import AFLW

        benchmarks["AFLW"] = dataset_benchmark(AFLW(aflw, split="test"))
    skipped: dict[str, dict[str, str]] = {}
    if folder_images is not None:
        name = Path(folder_images).name or "folder"
        if str(folder_landmarks) == DLIB_LANDMARKS:
            image_wrap = None
            if progress:
                from tqdm import tqdm

                image_wrap = lambda iterable: tqdm(iterable, unit="image", desc="dlib", leave=False)  # noqa: E731
            paths, names, truth, skipped[name] = dlib_folder_benchmark(folder_images, progress=image_wrap)
            benchmarks[name] = (paths, names, truth)
        else:
            benchmarks[name] = folder_benchmark(folder_images, folder_landmarks)
    landmarks = {}
    for name, (paths, names, truth) in benchmarks.items():
        boxes = _largest_faces(paths) if detect else None
        predictions = evaluate_landmarks(reconstructor, paths, truth, names, batch_size=batch_size, progress=wrap,
                                         boxes=boxes, reference=DLIB_REFERENCE if name in skipped else None)
        predictions.skipped = skipped.get(name, {})
        landmarks[name] = predictions
    synthetic = None
    if synthetic_count > 0:
        source = ORACLE if oracle else reconstructor
        model = uv_model if uv_model is not None else reconstructor.uv_model
        synthetic = evaluate_synthetic(source, model, ranges, synthetic_count, synthetic_size, batch_size=batch_size,
                                       progress=wrap, first=VALIDATION_OFFSET if validation else 0, look=look)
    identity_measures = None
    if identity is not None:
        identity_measures = _identity(reconstructor, identity, descriptor, render_over, detect)
    title = "lsqface evaluation (oracle: true maps)" if oracle else "lsqface evaluation"
    return write_report(folder, landmarks, synthetic, identity_measures, title=title, notes=notes)


def _identity(reconstructor, folder, descriptor, render_over: str, detect: bool) -> dict[str, float]:
    from lsqface.data.images import list_image_files
    from lsqface.errors import DatasetError
    from lsqface.evaluate.identity import dlib_descriptor, evaluate_identity, onnx_descriptor

    paths = list_image_files(folder)
    if len(paths) < 2:
        raise DatasetError(f"The identity folder {folder} needs at least two photos, named after the people in them.")
    if descriptor is None:
        descriptor = dlib_descriptor()
    elif not callable(descriptor):
        descriptor = onnx_descriptor(descriptor)
    boxes = _largest_faces(paths) if detect else None
    return evaluate_identity(reconstructor, paths, descriptor, boxes=boxes, background=render_over)


def _largest_faces(paths: Sequence[str | Path]) -> list[tuple[float, float, float, float] | None]:
    """The largest face box (x, y, width, height) of each photo (:func:`lsqface.detect.detect_faces`), or None.

    None for a photo without a face (it is reconstructed whole) or one that cannot be read (the
    reconstruction records why).

    Raises:
        DetectorError: dlib is not installed.
    """
    from lsqface.data.images import read_image
    from lsqface.detect import detect_faces
    from lsqface.errors import ImageError

    boxes = []
    for path in paths:
        try:
            boxes.append(next(iter(detect_faces(read_image(path))), None))
        except ImageError:
            boxes.append(None)
    return boxes
