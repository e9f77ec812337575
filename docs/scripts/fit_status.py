"""How well the fit status tells good fits from bad ones: docs/solver.md, "Fit status".

    python docs/scripts/fit_status.py measure synthetic --count 200 -o status.jsonl
    python docs/scripts/fit_status.py measure hard --count 120 -o status.jsonl
    python docs/scripts/fit_status.py measure synthetic --first 1000 --count 200 -o held-out.jsonl
    python docs/scripts/fit_status.py measure nonface --count 40 -o status.jsonl
    python docs/scripts/fit_status.py measure real --folder ../shared/data/real-faces -o status.jsonl
    python docs/scripts/fit_status.py measure benchmark --split validation -o status.jsonl
    python docs/scripts/fit_status.py summary status.jsonl

``measure`` reconstructs a set with the shipped model and appends one JSON line per fit: the set,
what was fitted, its 5-landmark error (percent of the inter-ocular distance; None where there is no
face to compare with) and every plausibility measure (lsqface.solver.plausibility.FitMeasures).

* ``synthetic``: the benchmark's validation faces (seeds kept apart from the benchmark's), 128 px,
  in-plane rotation within 180 degrees, the generator's other defaults.
* ``hard``: validation faces drawn harder than training ones: yaw within 60 degrees, pitch within 30,
  the face 20-100 % of the picture's width, its centre up to a quarter of the picture off.
* ``nonface``: pictures with no face: procedural backgrounds, flat grey, black, white and noise.
* ``real``: every photo of ``--folder`` turned by every 45 degrees, reconstructed whole and in each
  box the detector finds (--detect). The reference is dlib's 68-point predictor on the upright photo
  (lsqface.evaluate.reference), turned with the photo; a detected box that holds no reference
  face counts as no face.
* ``benchmark``: the pictures of the real-photo benchmark (lsqface.evaluate.real, ``lsqface evaluate
  --real``) of ``--split``: each dlib face cropped as --detect crops it, at four rolls and ten random
  similarities, scored against dlib's points moved with the picture.

``summary`` applies the current StatusThresholds (or ``name=value`` overrides) to a measured file:
per set, the share of fits more than 20 % off that are flagged (status not ``ok``), the share of
good fits (under 10 %) that are flagged, and the measures' spread among good and bad fits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

GOOD, BAD = 10.0, 20.0


def _rotate(image: np.ndarray, angle: float):
    """The image turned by ``angle`` degrees (counter-clockwise as displayed, canvas enlarged) and a
    function mapping (N, 2) pixel points of the image to the turned one."""
    from PIL import Image

    height, width = image.shape[:2]
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    if abs(cos) < 1e-12:
        cos = 0.0
    if abs(sin) < 1e-12:
        sin = 0.0
    new_width = int(round(abs(cos) * width + abs(sin) * height))
    new_height = int(round(abs(sin) * width + abs(cos) * height))
    centre = np.array([width / 2, height / 2])
    new_centre = np.array([new_width / 2, new_height / 2])
    forward = np.array([[cos, sin], [-sin, cos]])

    def move(points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) - centre) @ forward.T + new_centre

    a, b, d, e = cos, -sin, sin, cos
    c = centre[0] - a * new_centre[0] - b * new_centre[1]
    f = centre[1] - d * new_centre[0] - e * new_centre[1]
    pixels = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    turned = pixels.transform((new_width, new_height), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)
    return np.asarray(turned).astype(np.float32) / 255.0, move


def _records(result, errors, labels, set_name):
    from lsqface.solver.plausibility import fit_status

    verdicts = fit_status(result.measures)
    for k, label in enumerate(labels):
        yield {"set": set_name, **label, "error": None if errors[k] is None else float(errors[k]),
               "status": verdicts[k].status, "measures": result.measures.record(k)}


def _reconstruct(reconstructor, images, boxes=None):
    """Per image (reconstruction, row), fitting the batch at once or, where its solve fails, image by
    image (None for an image whose solve fails alone)."""
    from lsqface.errors import LsqfaceError

    try:
        result = reconstructor(images, boxes)
        return [(result, k) for k in range(len(images))]
    except LsqfaceError:
        pass
    results = []
    for k in range(len(images)):
        try:
            results.append((reconstructor(images[k:k + 1], None if boxes is None else boxes[k:k + 1]), 0))
        except LsqfaceError:
            results.append(None)
    return results


def _one(result_and_index):
    """A batch-of-one view of face k of a reconstruction (its measures too)."""
    result, k = result_and_index
    from lsqface.solver.plausibility import FitMeasures

    measures = FitMeasures(**{item.name: getattr(result.measures, item.name)[k:k + 1]
                              for item in dataclasses.fields(FitMeasures)})
    return dataclasses.replace(result, measures=measures, landmarks_5=result.landmarks_5[k:k + 1])


def measure_synthetic(reconstructor, uv_model, count, hard, output, first=0):
    from lsqface.data.synthetic import SyntheticConfig, generate_faces
    from lsqface.evaluate.benchmark import VALIDATION_OFFSET, evaluation_seeds
    from lsqface.evaluate.metrics import landmark_error

    config = SyntheticConfig(size=128)
    start = VALIDATION_OFFSET + first
    if hard:
        config = dataclasses.replace(config, yaw_range=60.0, pitch_range=30.0, face_fraction=(0.2, 1.0), shift=0.25)
        start += 100_000
    name = "hard" if hard else "synthetic"
    for batch_start in range(0, count, 8):
        seeds = evaluation_seeds(min(8, count - batch_start), start + batch_start)
        faces = generate_faces(uv_model, seeds, config)
        images = [image.permute(1, 2, 0).numpy() for image in faces.image]
        for k, item in enumerate(_reconstruct(reconstructor, images)):
            if item is None:
                output.write(json.dumps({"set": name, "seed": seeds[k], "error": None, "status": "solve failed"}) + "\n")
                continue
            one = _one(item)
            error = landmark_error(one.landmarks_5.detach().cpu().double(), faces.landmarks_5[k:k + 1].double())
            for record in _records(one, [float(error[0])], [{"seed": seeds[k]}], name):
                output.write(json.dumps(record) + "\n")
        output.flush()
        print(f"{name}: {batch_start + len(seeds)} of {count}", flush=True)


def measure_nonface(reconstructor, count, output):
    from lsqface.data.backgrounds import procedural_background

    generator = torch.Generator().manual_seed(2024)
    pictures = list(procedural_background(count, 128, 128, generator).permute(0, 2, 3, 1).numpy())
    names = [f"background {k}" for k in range(count)]
    rng = np.random.default_rng(0)
    for name, picture in [("grey", np.full((128, 128, 3), 0.5)), ("black", np.zeros((128, 128, 3))),
                          ("white", np.ones((128, 128, 3))), ("noise", rng.random((128, 128, 3)))]:
        pictures.append(picture.astype(np.float32))
        names.append(name)
    for start in range(0, len(pictures), 8):
        batch = pictures[start:start + 8]
        for k, item in enumerate(_reconstruct(reconstructor, batch)):
            label = {"image": names[start + k]}
            if item is None:
                output.write(json.dumps({"set": "nonface", **label, "error": None, "status": "solve failed"}) + "\n")
                continue
            for record in _records(_one(item), [None], [label], "nonface"):
                output.write(json.dumps(record) + "\n")
        output.flush()


def measure_real(reconstructor, folder, angles, output):
    from lsqface.data.images import list_image_files, read_image
    from lsqface.detect import detect_faces
    from lsqface.evaluate.metrics import landmark_error
    from lsqface.evaluate.reference import dlib_reference

    reference = dlib_reference()
    for path in list_image_files(Path(folder)):
        photo = read_image(path)
        truth = reference(photo)
        if truth is None:
            print(f"{path.name}: dlib finds no face; skipped")
            continue
        for angle in angles:
            turned, move = _rotate(photo, angle)
            points = move(truth)
            centre = points.mean(axis=0)
            inter_ocular = float(np.linalg.norm(points[0] - points[1]))
            boxes = [None] + detect_faces(turned)
            for index, box in enumerate(boxes):
                label = {"image": path.name, "angle": angle, "detect": box is not None, "box": index}
                item = _reconstruct(reconstructor, [turned], None if box is None else [box])[0]
                if item is None:
                    output.write(json.dumps({"set": "real", **label, "error": None, "status": "solve failed"}) + "\n")
                    continue
                one = _one(item)
                holds = box is None or (box[0] <= centre[0] <= box[0] + box[2] and box[1] <= centre[1] <= box[1] + box[3])
                error = None
                if holds:
                    error = float(landmark_error(one.landmarks_5.detach().cpu().double(),
                                                 torch.as_tensor(points[None], dtype=torch.float64))[0])
                label["inter_ocular"] = inter_ocular
                for record in _records(one, [error], [label], "real"):
                    output.write(json.dumps(record) + "\n")
            output.flush()
            print(f"{path.name} at {angle} degrees: {len(boxes) - 1} detected", flush=True)


def measure_benchmark(reconstructor, split, output):
    from lsqface.evaluate.metrics import landmark_error
    from lsqface.evaluate.real import assemble

    _, variants, skipped = assemble(split)
    for name, reason in skipped.items():
        print(f"{name}: skipped ({reason})")
    for start in range(0, len(variants), 8):
        batch = variants[start:start + 8]
        for variant, item in zip(batch, _reconstruct(reconstructor, [variant.image for variant in batch])):
            label = {"image": variant.face, "angle": variant.angle, "variant": variant.label, "split": split}
            if item is None:
                output.write(json.dumps({"set": "benchmark", **label, "error": None, "status": "solve failed"}) + "\n")
                continue
            one = _one(item)
            error = float(landmark_error(one.landmarks_5.detach().cpu().double(),
                                         torch.as_tensor(variant.reference_five[None], dtype=torch.float64))[0])
            for record in _records(one, [error], [label], "benchmark"):
                output.write(json.dumps(record) + "\n")
        output.flush()
        print(f"benchmark {split}: {start + len(batch)} of {len(variants)}", flush=True)


def _thresholds(overrides):
    from lsqface.solver.plausibility import StatusThresholds

    values = {}
    for item in overrides:
        name, _, text = item.partition("=")
        current = getattr(StatusThresholds(), name)
        values[name] = tuple(float(part) for part in text.split(",")) if isinstance(current, tuple) else type(current)(
            text == "true" if isinstance(current, bool) else float(text))
    return StatusThresholds(**values)


def summary(path, overrides):
    from lsqface.solver.plausibility import FitMeasures, fit_status

    thresholds = _thresholds(overrides)
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    names = [item.name for item in dataclasses.fields(FitMeasures)]
    for record in records:
        if "measures" in record:
            measures = FitMeasures(**{name: torch.tensor([np.nan if record["measures"][name] is None
                                                          else record["measures"][name]], dtype=torch.float64)
                                      for name in names})
            record["verdict"] = fit_status(measures, thresholds)[0]
    print(thresholds)
    groups = {}
    for record in records:
        key = record["set"] + (" --detect" if record.get("detect") else "") + (f" {record['split']}" if "split" in record else "")
        groups.setdefault(key, []).append(record)
    for key, members in groups.items():
        fitted = [r for r in members if "verdict" in r]
        good = [r for r in fitted if r["error"] is not None and r["error"] < GOOD]
        bad = [r for r in fitted if r["error"] is None or r["error"] > BAD]
        flagged = lambda rs: sum(r["verdict"].status != "ok" for r in rs)  # noqa: E731
        failed = len(members) - len(fitted)
        print(f"\n{key}: {len(members)} fits ({failed} solves failed), {len(good)} good (< {GOOD:g} %), "
              f"{len(bad)} more than {BAD:g} % off or no face")
        if bad:
            print(f"  bad flagged: {flagged(bad)} of {len(bad)} = {100 * flagged(bad) / len(bad):.1f} %")
        if good:
            print(f"  good flagged: {flagged(good)} of {len(good)} = {100 * flagged(good) / len(good):.1f} %")
        for name in names:
            row = []
            for label, rs in (("good", good), ("bad", bad)):
                values = np.array([np.nan if r["measures"][name] is None else r["measures"][name] for r in rs])
                if len(values):
                    low, median, high = np.nanpercentile(values, [1, 50, 99]) if np.isfinite(values).any() else (np.nan,) * 3
                    row.append(f"{label} {low:9.3g} {median:9.3g} {high:9.3g}")
            print(f"  {name:19s} " + " | ".join(row))
        for r in good:
            if r["verdict"].status != "ok":
                print(f"  good but flagged: {_label(r)} error {r['error']:.1f}: {r['verdict'].status}: {r['verdict'].reason}")
        for r in bad:
            if r["verdict"].status == "ok":
                error = "no face" if r["error"] is None else f"{r['error']:.1f}"
                print(f"  bad but ok: {_label(r)} error {error}")


def _label(record):
    return ", ".join(f"{key}={record[key]}" for key in ("seed", "image", "angle", "box") if key in record)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("measure")
    measure.add_argument("set", choices=("synthetic", "hard", "nonface", "real", "benchmark"))
    measure.add_argument("--split", default="validation", help="the real-photo benchmark's split (benchmark)")
    measure.add_argument("--count", type=int, default=200)
    measure.add_argument("--first", type=int, default=0,
                         help="synthetic and hard: start at this face of the set's validation seeds (a held-out draw)")
    measure.add_argument("--folder", default="../shared/data/real-faces")
    measure.add_argument("--angles", default="0,45,90,135,180,225,270,315")
    measure.add_argument("-o", "--output", required=True)
    report = commands.add_parser("summary")
    report.add_argument("path")
    report.add_argument("overrides", nargs="*", help="StatusThresholds name=value (a range as low,high)")
    args = parser.parse_args()
    if args.command == "summary":
        summary(args.path, args.overrides)
        return
    from lsqface.morphable.cache import load_uv_model
    from lsqface.reconstruct import Reconstructor

    torch.set_num_threads(1)
    uv_model = load_uv_model()
    reconstructor = Reconstructor.from_checkpoint(uv_model=uv_model)
    with open(args.output, "a", encoding="utf-8") as output:
        if args.set in ("synthetic", "hard"):
            measure_synthetic(reconstructor, uv_model, args.count, args.set == "hard", output, args.first)
        elif args.set == "nonface":
            measure_nonface(reconstructor, args.count, output)
        elif args.set == "benchmark":
            measure_benchmark(reconstructor, args.split, output)
        else:
            measure_real(reconstructor, args.folder, [float(a) for a in args.angles.split(",")], output)


if __name__ == "__main__":
    main()
