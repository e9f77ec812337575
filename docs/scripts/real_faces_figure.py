"""The real-photo figure (docs/images/real-faces-default-model.png): each photo's face, overlay, geometry and the four maps.

    python docs/scripts/real_faces_figure.py ../shared/data/real-faces -o docs/images/real-faces.png
    python docs/scripts/real_faces_figure.py PHOTOS... --checkpoint runs/default/last.pt -o figure.png

Each photo is reconstructed inside the box of its largest face found by
``lsqface.detect`` (the whole photo if none is found), exactly as
``lsqface reconstruct PHOTO --detect`` does. One row per photo: the photo,
overlay and geometry cropped to the face box (the faces of Biden and Obama 3
fill a tenth of their photos), then the network's four maps at its input
size: correspondence (u, v), depth, geometric and photometric confidence.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lsqface.data.images import read_image
from lsqface.detect import detect_faces
from lsqface.outputs.batch import expand_inputs
from lsqface.outputs.pictures import map_pictures, mesh_pictures
from lsqface.reconstruct import Reconstructor

COLUMNS = ("photo", "overlay", "geometry", "correspondence", "depth", "geometric confidence", "photometric confidence")


def _square_crop(picture: np.ndarray, box, margin: float = 0.35) -> np.ndarray:
    """The square around a face box (x, y, width, height) grown by ``margin`` per side, clipped to the picture."""
    if box is None:
        return picture
    x, y, width, height = box
    side = max(width, height) * (1.0 + 2.0 * margin)
    centre_x, centre_y = x + width / 2.0, y + height / 2.0
    left = int(max(0, round(centre_x - side / 2)))
    top = int(max(0, round(centre_y - side / 2)))
    right = int(min(picture.shape[1], round(centre_x + side / 2)))
    bottom = int(min(picture.shape[0], round(centre_y + side / 2)))
    return picture[top:bottom, left:right]


def _tile(picture: np.ndarray, size: int) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(picture))
    scale = size / max(image.width, image.height)
    # The maps are at the network's input size (64 px): enlarge them with visible pixels.
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def figure(paths: list[Path], reconstructor: Reconstructor, tile: int = 160) -> np.ndarray:
    """(H, W, 3) uint8: one row per photo, the columns of :data:`COLUMNS` under a title row."""
    title_height, label_width = 18, 110
    sheet = Image.new("RGB", (label_width + tile * len(COLUMNS), title_height + tile * len(paths)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for column, name in enumerate(COLUMNS):
        draw.text((label_width + column * tile + 4, 3), name, fill=(0, 0, 0))
    for row, path in enumerate(paths):
        photo = read_image(path)
        box = next(iter(detect_faces(photo)), None)
        result = reconstructor([photo], [box])
        pictures = {**mesh_pictures(result, 0, photo), **map_pictures(result, 0)}
        confidence = pictures["confidence"]
        half = (confidence.shape[1] - 4) // 2
        panels = [
            _square_crop((photo * 255.0).round().astype(np.uint8), box),
            _square_crop(pictures["overlay"], box),
            _square_crop(pictures["geometry"], box),
            pictures["correspondence"],
            pictures["depth"],
            confidence[:, :half],
            confidence[:, half + 4:],
        ]
        top = title_height + row * tile
        draw.text((4, top + tile // 2 - 6), path.stem, fill=(0, 0, 0))
        for column, panel in enumerate(panels):
            sheet.paste(_tile(panel, tile), (label_width + column * tile, top))
    return np.asarray(sheet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="photos or folders")
    parser.add_argument("--checkpoint", default=None, help="network checkpoint (default: the shipped model)")
    parser.add_argument("--tile", type=int, default=160, help="side of each panel, pixels")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    args = parser.parse_args()
    reconstructor = Reconstructor.from_checkpoint(args.checkpoint)
    Image.fromarray(figure(expand_inputs(args.inputs), reconstructor, args.tile)).save(args.output)


if __name__ == "__main__":
    main()
