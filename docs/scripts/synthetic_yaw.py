"""Does the fit recover head turn (yaw) and nod (pitch) on the renderer's own faces? Fitted against true.

    python docs/scripts/synthetic_yaw.py [--checkpoint lsqface/weights/default.pt] [--count 160] [--look photo]
                                         [--yaw-range 25] [--true-maps uv|depth|all]

Draws the synthetic benchmark's validation faces (seeds kept apart from the benchmark's) upright, at
128 px, in the given look, yaw within 25 degrees as the benchmark draws it (``--yaw-range``: wider; training
draws 35), reconstructs them with the checkpoint's own settings and prints, for true
|yaw| under 10, 10-20 and 20 degrees and over: the number of faces, the median ratio of fitted to
true yaw (1: no shrinkage towards a frontal head), the median absolute yaw error, and the median
5-landmark error; then the slope of fitted on true yaw, and for pitch (nodding) the slope and the median
absolute error. Faces fitted more than 30 % off are left out.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch


def main() -> None:
    from lsqface.data.synthetic import SyntheticConfig
    from lsqface.evaluate.benchmark import VALIDATION_OFFSET, _PhotoFaces, evaluation_seeds
    from lsqface.evaluate.metrics import landmark_error
    from lsqface.reconstruct import Reconstructor, reconstruct_from_maps

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--look", choices=("photo", "other"), default="photo")
    parser.add_argument("--yaw-range", type=float, default=None,
                        help="draw yaw within this many degrees (default: the benchmark's, 25)")
    parser.add_argument("--true-maps", choices=("none", "uv", "depth", "all"), default="none",
                        help="fit these true maps in place of the network's")
    args = parser.parse_args()
    if args.yaw_range is not None and not 0 < args.yaw_range <= 90:
        parser.error("--yaw-range takes degrees over 0 and at most 90")
    torch.set_num_threads(1)
    reconstructor = Reconstructor.from_checkpoint(args.checkpoint)
    draw = _PhotoFaces(reconstructor.uv_model, args.look)
    size = 128 if args.true_maps == "none" else reconstructor.config.input_size
    config = SyntheticConfig(size=size, roll_range=0.0)
    if args.yaw_range is not None:
        config = dataclasses.replace(config, yaw_range=args.yaw_range)
    true_yaw, fitted_yaw, true_pitch, fitted_pitch, errors = [], [], [], [], []
    for start in range(0, args.count, 8):
        faces = draw(evaluation_seeds(min(8, args.count - start), VALIDATION_OFFSET + start), config)
        if args.true_maps != "none":
            image = faces.image.float()
            maps = reconstructor.predict_maps(image)
            true_confidence = faces.confidence.float().expand(-1, maps.confidence.shape[1], -1, -1)
            correspondence = faces.correspondence.float() if args.true_maps in ("uv", "all") else maps.correspondence
            depth = faces.depth.float() if args.true_maps in ("depth", "all") else maps.depth
            result = reconstruct_from_maps(reconstructor.uv_model, image, correspondence, depth,
                                           torch.minimum(maps.confidence, true_confidence), config=reconstructor.config)
        else:
            result = reconstructor([image.permute(1, 2, 0).numpy() for image in faces.image])
        true_yaw.append(faces.pose[:, 0].numpy())
        fitted_yaw.append(result.pose[:, 0].detach().numpy())
        true_pitch.append(faces.pose[:, 1].numpy())
        fitted_pitch.append(result.pose[:, 1].detach().numpy())
        errors.append(landmark_error(result.landmarks_5.detach().double(), faces.landmarks_5.double()).numpy())
    true_yaw, fitted_yaw, true_pitch, fitted_pitch, errors = (
        np.concatenate(values) for values in (true_yaw, fitted_yaw, true_pitch, fitted_pitch, errors))
    kept = errors < 30
    for low, high in ((0, 10), (10, 20), (20, 90)):
        chosen = kept & (np.abs(true_yaw) >= low) & (np.abs(true_yaw) < high) & (np.abs(true_yaw) > 0.5)
        if not chosen.any():
            continue
        ratio = np.median(fitted_yaw[chosen] / true_yaw[chosen])
        print(f"|yaw| {low}-{high} degrees: {chosen.sum()} faces, fitted / true {ratio:.2f}, "
              f"|error| {np.median(np.abs(fitted_yaw[chosen] - true_yaw[chosen])):.1f} degrees, "
              f"5-landmark error {np.median(errors[chosen]):.1f} %")
    print(f"slope of fitted on true yaw: {np.polyfit(true_yaw[kept], fitted_yaw[kept], 1)[0]:.2f} ({kept.sum()} faces); "
          f"pitch: slope {np.polyfit(true_pitch[kept], fitted_pitch[kept], 1)[0]:.2f}, "
          f"median |error| {np.median(np.abs(fitted_pitch[kept] - true_pitch[kept])):.1f} degrees")


if __name__ == "__main__":
    main()
