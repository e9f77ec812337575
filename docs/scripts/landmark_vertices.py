"""Choose the face model's 68 landmark vertices where dlib's 68-point predictor puts its points.

    python docs/scripts/landmark_vertices.py [--checkpoint lsqface/weights/default.pt] [--radius 12] [--similarity 6]

ICT-FaceKit's README lists one vertex per Multi-PIE landmark; dlib's predictor, trained on iBUG
300-W, marks some of them elsewhere: its nose tip (point 30) sits about 6 mm lower on the
nose, its eyelid points on the lid margin. A reconstruction's landmarks are compared with such
points, so lsqface's ICT model reports the vertices that agree with them.

The script reconstructs the real-photo benchmark's validation split (127 faces at 4 rolls and 6
random similarities, ``lsqface.evaluate.real``; the test split is never read) and projects every
vertex of each fit into its picture. For each inner point (17-67; the jaw line 0-16 is a
silhouette, not a fixed vertex, and keeps ICT's vertices) it takes the vertex within ``--radius``
mm of ICT's (on the mean shape) whose projection is nearest dlib's point: the mean over the
pictures of the distance in inter-ocular distances, capped at 0.3, over the fits whose 5 landmarks
at ICT's own vertices lie within 30 % of dlib's. Left and right points are chosen as mirror pairs (one cost, summed over both
sides) and points on the face's midline among midline vertices, so the set stays symmetric.

It prints how far the nose tip lies above the nostrils' base on ICT's mean shape seen from the
front and in dlib's points (upright pictures), each of the 5 landmarks' median offset from dlib's
across and down the face at ICT's vertices and at the chosen ones, the score of ICT's vertices and
of the chosen ones on the 5 landmarks (median, share over 10 %, mean capped at 100), the same when the choice is made on the faces of one half of the
photos and scored on the other half (both ways; a group photo's faces stay together), and the
chosen indices: ``lsqface.morphable.ict.LANDMARKS_68``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

MIRROR_PAIRS = (
    [(k, 26 - (k - 17)) for k in range(17, 22)]  # brows 17-21 and 26-22
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
)
MIDLINE = (27, 28, 29, 30, 33, 51, 57, 62, 66)
CAP = 0.3


def projected_vertices(reconstructor, variants) -> np.ndarray:
    """(P, V, 2) every vertex of each picture's fit in its pixels (NaN where the fit failed)."""
    from lsqface.errors import LsqfaceError

    count = reconstructor.uv_model.model.shape_mean.reshape(-1, 3).shape[0]
    points = np.full((len(variants), count, 2), np.nan, np.float32)
    for start in range(0, len(variants), 8):
        indices = list(range(start, min(len(variants), start + 8)))
        try:
            result = reconstructor([variants[i].image for i in indices])
        except LsqfaceError as error:
            print(f"pictures {indices[0]}-{indices[-1]}: {error}", file=sys.stderr)
            continue
        camera = result.vertices.detach().double() @ result.intrinsics.double().transpose(1, 2)
        points[indices] = (camera[..., :2] / camera[..., 2:3]).numpy()
    return points


def errors_of(points: np.ndarray, indices: np.ndarray, reference_5: np.ndarray) -> np.ndarray:
    """(P,) the 5-landmark error (%) of 68 vertex ``indices`` read from projected vertices (P, V, 2)."""
    from lsqface.evaluate.real import nme
    from lsqface.evaluate.reference import five_from_sixty_eight

    five = five_from_sixty_eight(points[:, indices])
    errors = nme(np.where(np.isfinite(five), five, 1e6), reference_5)
    return np.where(np.isfinite(errors), errors, 100.0)


def choose(points, reference_68, inter_ocular, used, mean_shape, start, radius):
    """The 68 vertex indices: ``start``'s jaw line and, for 17-67, the vertices nearest dlib's points."""
    from scipy.spatial import cKDTree

    mirror = cKDTree(mean_shape).query(mean_shape * [-1, 1, 1])[1]
    chosen = np.asarray(start).copy()
    near = lambda k: np.flatnonzero(np.linalg.norm(mean_shape - mean_shape[start[k]], axis=1) < radius)

    def cost(k, nearby):
        distance = np.linalg.norm(points[used][:, nearby] - reference_68[used, k][:, None], axis=-1)
        return np.minimum(distance / inter_ocular[used, None], CAP).mean(0)

    for left, right in MIRROR_PAIRS:
        nearby = near(left)
        total = cost(left, nearby) + cost(right, mirror[nearby])
        best = nearby[np.argmin(total)]
        chosen[left], chosen[right] = best, mirror[best]
    for k in MIDLINE:
        nearby = near(k)
        nearby = nearby[np.abs(mean_shape[nearby, 0]) < 0.5]
        if nearby.size == 0:
            raise SystemExit(f"no midline vertex within the radius of point {k}; pass a larger --radius")
        chosen[k] = nearby[np.argmin(cost(k, nearby))]
    return chosen


def offsets(points: np.ndarray, indices: np.ndarray, reference_5: np.ndarray, used: np.ndarray) -> str:
    """Each of the 5 landmarks' median offset from dlib's, across and down the face (% of the inter-ocular distance)."""
    from lsqface.evaluate.reference import five_from_sixty_eight

    five = five_from_sixty_eight(points[used][:, indices])
    reference = reference_5[used]
    across = reference[:, 1] - reference[:, 0]
    inter_ocular = np.linalg.norm(across, axis=1)
    across = across / inter_ocular[:, None]
    down = np.stack([-across[:, 1], across[:, 0]], axis=1)
    offset = five - reference
    cells = []
    for k, name in enumerate(("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")):
        x = 100 * np.median((offset[:, k] * across).sum(1) / inter_ocular)
        y = 100 * np.median((offset[:, k] * down).sum(1) / inter_ocular)
        cells.append(f"{name} {x:+.1f} across, {y:+.1f} down")
    return "; ".join(cells)


def nose_height(points_68: np.ndarray) -> np.ndarray:
    """How far the nose tip (30) lies above the nostrils' base (mean of 31 and 35), in inter-ocular distances."""
    from lsqface.evaluate.reference import five_from_sixty_eight

    five = five_from_sixty_eight(points_68)
    across = five[..., 1, :] - five[..., 0, :]
    inter_ocular = np.linalg.norm(across, axis=-1)
    down = np.stack([-across[..., 1], across[..., 0]], axis=-1) / inter_ocular[..., None]
    base = points_68[..., [31, 35], :].mean(axis=-2)
    return ((base - points_68[..., 30, :]) * down).sum(-1) / inter_ocular


def describe(errors: np.ndarray) -> str:
    return f"median {np.median(errors):.2f} %, {100 * np.mean(errors > 10):.1f} % over 10 %, mean {np.mean(np.minimum(errors, 100)):.2f}"


def main() -> None:
    from lsqface.evaluate.real import assemble
    from lsqface.evaluate.reference import five_from_sixty_eight
    from lsqface.morphable.ict import ICT_LANDMARKS_68
    from lsqface.reconstruct import Reconstructor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="lsqface/weights/default.pt")
    parser.add_argument("--radius", type=float, default=12.0, help="mm around ICT's vertex to search")
    parser.add_argument("--similarity", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, variants, _ = assemble("validation", similarity=args.similarity)
    reconstructor = Reconstructor.from_checkpoint(args.checkpoint)
    points = projected_vertices(reconstructor, variants)
    mean_shape = np.asarray(reconstructor.uv_model.model.shape_mean).reshape(-1, 3)
    reference_68 = np.stack([variant.reference for variant in variants])
    reference_5 = np.stack([five_from_sixty_eight(points_68) for points_68 in reference_68])
    inter_ocular = np.linalg.norm(reference_5[:, 1] - reference_5[:, 0], axis=1)
    ict = np.asarray(ICT_LANDMARKS_68)
    ict_errors = errors_of(points, ict, reference_5)
    fitted = np.isfinite(points[:, 0, 0]) & (ict_errors < 30)
    upright = np.array([variant.group == "0" for variant in variants])
    frontal_mean = mean_shape[:, :2] * [1, -1]  # the mean shape seen from the front, y down as in a picture
    print(f"nose tip above the nostrils' base: ICT's mean shape from the front {100 * nose_height(frontal_mean[ict]):.0f} %, "
          f"dlib on the upright pictures (median) {100 * np.median(nose_height(reference_68[upright])):.0f} % "
          "of the inter-ocular distance")
    print("median offsets from dlib, ICT's vertices: " + offsets(points, ict, reference_5, fitted))
    photos = np.array([variant.face.split("#")[0] for variant in variants])
    order = np.random.default_rng(0).permutation(np.unique(photos))
    halves = [np.isin(photos, order[: len(order) // 2]), np.isin(photos, order[len(order) // 2:])]
    for one, other in ((0, 1), (1, 0)):
        chosen = choose(points, reference_68, inter_ocular, fitted & halves[one], mean_shape, ict, args.radius)
        print(f"chosen on half {one} ({halves[one].sum()} pictures), scored on half {other}: ICT's vertices "
              f"{describe(ict_errors[halves[other]])}; chosen {describe(errors_of(points, chosen, reference_5)[halves[other]])}")
    chosen = choose(points, reference_68, inter_ocular, fitted, mean_shape, ict, args.radius)
    print(f"all {len(variants)} pictures: ICT's vertices {describe(ict_errors)}; "
          f"chosen {describe(errors_of(points, chosen, reference_5))}")
    print("median offsets from dlib, chosen vertices: " + offsets(points, chosen, reference_5, fitted))
    moved = np.linalg.norm(mean_shape[chosen] - mean_shape[ict], axis=1)
    print("moved (mm, points 17-67): " + " ".join(f"{k}:{moved[k]:.1f}" for k in range(17, 68)))
    print("LANDMARKS_68 = (\n    " + ", ".join(str(int(index)) for index in chosen) + ",\n)")


if __name__ == "__main__":
    main()
