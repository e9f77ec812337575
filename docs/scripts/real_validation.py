"""lsqface alone on the real-photo validation split, several checkpoints in one run: choose models quickly.

    python docs/scripts/real_validation.py [--similarity 20] [--per-face] [--nose] [--turn] [--half 1|2] CHECKPOINT [CHECKPOINT ...]
    python docs/scripts/real_validation.py --half 1|2 --crops DIR

The pictures are those of ``lsqface evaluate --real validation`` with 20 random similarities per
face (24 pictures for each of its 127 faces) instead of 10; dlib runs once, for the reference, and
the peers not at all (``--similarity 6``: 1,270 pictures, 1 min 50 s for one checkpoint on one
thread, dlib included). dlib's example photos are read from ``make validation-photos``'s
download; stderr says how many faces each source gave and how many photos or faces were skipped.
Each line: per roll and for the similarities, median / mean (capped at 100) / failures over 10 %,
then over all pictures the median, the failure rate and the median confident fraction; with
--per-face, a second line of each face's median over its pictures. With --nose, a line of the fitted
nose tip's error along the face's up direction (% of the inter-ocular distance, positive: lower than
dlib's) by fifths of the frontal faces' nose height (where dlib's nose tip lies between the eyes' and
the mouth corners' midpoints: 0 at the eyes, 1 at the mouth; frontal: the nose tip within 10 % of the
inter-ocular distance of the eyes' midpoint across the face): how the fit follows a nodding head.
With --turn, a line of the median error and failure rate, of the upright pictures and of all, by how
far the head is turned: dlib's nose tip under 10 %, 10-20 % and over 20 % of the inter-ocular distance off the eyes'
midpoint across the face (over 20 %: about 20 degrees of yaw and more); and, on the upright pictures fitted within 30 %
whose dlib nose tip lies more than 2 % of the inter-ocular distance off, the median ratio of the fitted nose tip's
offset to dlib's (under 1: the fitted head is turned less than the photo's, or its nose sticks out less).
With --half 1 or 2, only the faces of one half of the split's photos (a photo's faces stay together; the halves are
drawn over the photos present, so they hold the same photos wherever the same photos are installed); with --crops DIR,
each of those faces' upright picture (the crop around dlib's face box; no landmark in it) is written to DIR as a PNG
and nothing is scored: unlabelled photos for ``lsqface train --photos DIR``, scored on the other half.
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lsqface.evaluate.real import assemble, nme, run_lsqface
from lsqface.evaluate.reference import five_from_sixty_eight
from lsqface.reconstruct import Reconstructor


def nose_offset(points: np.ndarray) -> np.ndarray:
    """(V,) the nose tip's signed offset from the eyes' midpoint across the face, in inter-ocular distances."""
    across = points[:, 1] - points[:, 0]
    return ((points[:, 2] - points[:, :2].mean(1)) * across).sum(1) / (across ** 2).sum(1)


def nose_line(five: np.ndarray, reference: np.ndarray, errors: np.ndarray) -> str:
    """The fitted nose tip's error along the face's up direction by fifths of dlib's nose height (frontal faces)."""
    eyes, mouth = reference[:, :2].mean(1), reference[:, 3:].mean(1)
    across = reference[:, 1] - reference[:, 0]
    inter_ocular = np.linalg.norm(across, axis=1)
    across = across / inter_ocular[:, None]
    down = np.stack([-across[:, 1], across[:, 0]], axis=1)
    height = ((reference[:, 2] - eyes) * down).sum(1) / ((mouth - eyes) * down).sum(1)
    turn = np.abs(nose_offset(reference))
    lower = 100 * ((five[:, 2] - reference[:, 2]) * down).sum(1) / inter_ocular
    chosen = np.isfinite(lower) & (errors < 30) & (turn < 0.1)
    edges = np.percentile(height[chosen], [0, 20, 40, 60, 80, 100])
    cells = []
    for low, high in zip(edges[:-1], edges[1:]):
        part = chosen & (height >= low) & (height <= high)
        cells.append(f"{low:.2f}-{high:.2f}: {np.median(lower[part]):+.1f}")
    return "  ".join(cells) + f"  ({chosen.sum()} pictures)"


def turn_line(five: np.ndarray, reference: np.ndarray, errors: np.ndarray, groups: np.ndarray) -> str:
    """By how far dlib's nose tip lies off the eyes' midpoint: median error and failure rate (upright pictures;
    all), and the fitted nose tip's offset over dlib's on the upright pictures (1: the fit turns the head as far)."""
    turn = nose_offset(reference)
    fitted = nose_offset(five)
    cells = []
    for low, high in ((0.0, 0.1), (0.1, 0.2), (0.2, np.inf)):
        band = (np.abs(turn) >= low) & (np.abs(turn) < high)
        upright = band & (groups == "0")
        followed = upright & np.isfinite(fitted) & (errors < 30) & (np.abs(turn) > 0.02)
        cells.append(f"{low:.1f}-{high:.1f}: {upright.sum()} faces, upright {np.median(errors[upright]):.1f}/"
                     f"{100 * np.mean(errors[upright] > 10):.0f}%, all pictures {np.median(errors[band]):.1f}/"
                     f"{100 * np.mean(errors[band] > 10):.0f}%, nose offset fitted/dlib "
                     f"{np.median(fitted[followed] / turn[followed]):.2f}")
    return "  ".join(cells)


def half_of(faces: list, variants: list, half: int) -> tuple[list, list]:
    """The faces and pictures of one half of the split's photos, halves drawn by a fixed permutation of their names."""
    photos = sorted({face.photo for face in faces})
    order = np.random.default_rng(0).permutation(len(photos))
    kept = {photos[k] for k in (order[: len(photos) // 2] if half == 1 else order[len(photos) // 2:])}
    faces = [face for face in faces if face.photo in kept]
    names = {face.name for face in faces}
    return faces, [variant for variant in variants if variant.face in names]


def write_crops(variants: list, folder: Path) -> None:
    """Each face's upright picture as a PNG named after the face: unlabelled photos for ``lsqface train --photos``
    (no landmark in them). The folder must be new or empty, so that no other half's faces stay in it."""
    from lsqface.outputs.export import write_png

    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"{folder} is not empty: write the crops of one half to a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    upright = [variant for variant in variants if variant.group == "0"]
    for variant in upright:
        write_png(folder / (variant.face.replace("/", "_").replace("#", "-") + ".png"), variant.image)
    print(f"{len(upright)} faces written to {folder}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--similarity", type=int, default=20)
    parser.add_argument("--per-face", action="store_true", help="also each face's median error over its pictures")
    parser.add_argument("--nose", action="store_true", help="also the nose tip's vertical error by nose height")
    parser.add_argument("--turn", action="store_true", help="also the upright error by how far the head is turned")
    parser.add_argument("--half", type=int, choices=(1, 2), default=None,
                        help="only the faces of this half of the photos (a photo's faces stay together)")
    parser.add_argument("--crops", default=None,
                        help="write each face's upright picture (its detector box's crop) to this folder as PNG and stop")
    args = parser.parse_args()
    if (not args.checkpoints) == (args.crops is None):
        parser.error("name checkpoints to score, or --crops DIR to write pictures, not both")
    torch.set_num_threads(1)
    faces, variants, skipped = assemble("validation", similarity=0 if args.crops else args.similarity)
    if args.half is not None:
        faces, variants = half_of(faces, variants, args.half)
    if args.crops is not None:
        write_crops(variants, Path(args.crops))
        return
    sources = Counter(face.source for face in faces)
    print(f"{len(faces)} faces ({', '.join(f'{source} {count}' for source, count in sources.items())}) of "
          f"{len({face.photo for face in faces})} photos, {len(variants)} pictures; {len(skipped)} photos or faces skipped",
          file=sys.stderr, flush=True)
    images = [variant.image for variant in variants]
    reference = np.stack([five_from_sixty_eight(variant.reference) for variant in variants])
    groups = np.array([variant.group for variant in variants])
    for path in args.checkpoints:
        five, confident, _, _ = run_lsqface(Reconstructor.from_checkpoint(path), images, batch_size=8)
        errors = nme(np.where(np.isfinite(five), five, 1e6), reference)
        errors = np.where(np.isfinite(errors), errors, 100.0)
        cells = [Path(path).name]
        for group in ("0", "90", "180", "270", "similarity"):
            chosen = errors[groups == group]
            cells.append(f"{group}: {np.median(chosen):.1f}/{np.mean(np.minimum(chosen, 100)):.1f}/{100 * np.mean(chosen > 10):.0f}%")
        cells.append(f"all: median {np.median(errors):.1f}, failures {100 * np.mean(errors > 10):.1f}%, "
                     f"confident {np.nanmedian(confident):.2f}")
        print("  ".join(cells), flush=True)
        if args.nose:
            print("    nose: " + nose_line(five, reference, errors), flush=True)
        if args.turn:
            print("    turn: " + turn_line(five, reference, errors, groups), flush=True)
        if args.per_face:
            faces = np.array([variant.face for variant in variants])
            print("    per face: " + "  ".join(f"{face} {np.median(errors[faces == face]):.1f}"
                                                for face in dict.fromkeys(faces)), flush=True)


if __name__ == "__main__":
    main()
