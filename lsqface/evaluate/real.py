"""The real-photo benchmark: faces of public photographs at four rolls and random similarities.

``lsqface evaluate --real validation|test`` scores the 5 fitted landmarks of lsqface, and
those of two peers (:mod:`lsqface.evaluate.peers`: dlib, MediaPipe's face mesh), on every
face of a fixed set of photographs, each shown upright, turned by 90, 180 and 270 degrees and
moved by N random similarity transforms.

**Photos and split** (fixed here, by photo, never by face; :data:`SPLITS`):

- test: the six public-domain portraits of ``../shared/data/real-faces`` (astronaut, Biden,
  Grace Hopper, three of Obama; :data:`SHARED_PHOTOS`) and ``Tom_Hanks_54745.png`` of the
  ``insightface`` wheel;
- validation: the group photo ``t1.jpg`` and the four mask photos of the ``insightface`` wheel
  (in which dlib finds no face: they are listed as skipped), and the example photos of dlib
  19.5.0's source distribution on PyPI (:data:`DLIB_PHOTOS`, named by their path under its
  ``docs/docs/cache/examples/``): the 55 LFW crops of ``johns/`` (11 each of John Salley, John
  Savage, John Schneider, John Shimkus and John Simm, 150 x 150 pixels), the nine PASCAL VOC 2011
  photos of ``faces/`` (several small faces each) and its ``bald_guys.jpg``; ``dogs.jpg`` is left out.

Choices (of checkpoints, inference settings, the MediaPipe point mapping) are made on the
validation split; the test split is only reported. None of these photos is a training image:
the training backgrounds leave every portrait out (:mod:`lsqface.data.backgrounds`).
The shared photos are read from ``../shared/data/real-faces`` (relative to the working
folder or to the source tree) or a folder given by the caller; the insightface photos from
the installed package (``pip install --no-deps insightface==2.1``: its dependencies are not
needed, and it is found without importing it); dlib's photos straight from the user's own
download of ``dlib-19.5.0.tar.gz`` (``make validation-photos`` puts it in
:func:`lsqface.files.cache_dir`; a caller may give another path), decoded from the archive's
bytes without extracting it. A photo that is absent is skipped with its reason; lsqface
copies, extracts and caches nothing, and ships none of these photos. dlib's archive also holds
its own 68 points of these photos (its XML files): they are a model's output, not an
annotation, and are not used.

**Reference**: dlib's HOG detector on the upright photo (searched at most 1280 pixels on its
longer side, upsampled once, faces with a score over 0.3 as in :mod:`lsqface.detect`; every
face of a photo with several), then dlib's 68-point predictor in each box on the full-resolution
photo. No photo here has a human annotation, so dlib's points are the reference: the
numbers measure agreement with dlib on the upright photo, moved exactly with the picture.

**Crops and variants**: each face gets a square crop of side :data:`CROP_MARGIN` (1.6) times
the longer side of its dlib box, centred on the box (the framing ``lsqface reconstruct
--detect`` gives a detected face), resampled to :data:`CROP_SIZE` (256) pixels. Each variant
is one matrix from photo pixels to its 256 x 256 picture, so the photo is resampled once
(after an antialiased shrink to the crop's scale when the crop is larger than 256 pixels),
and the 68 reference points are moved by the same matrix:

- rolls 0, 90, 180, 270 (:data:`ROLLS`): the crop turned clockwise on screen about its centre.
  Quarter turns of the crop are exact (pixel centres land on pixel centres);
- ``similarity``: N transforms about the crop's centre, angle uniform over the full circle,
  scale log-uniform in [0.8, 1.25], shift up to 10 % of the side in x and y (the training
  augmentation's ranges, :class:`lsqface.data.augment.SimilarityAugmentation`), drawn from a
  generator seeded by the face's name and :data:`SIMILARITY_SEED` and redrawn until all 68
  reference points lie inside the picture. The first N of a face are the same for any larger N.

Pixels outside the photo are black.

**Scoring**: the 5 landmarks (:func:`lsqface.evaluate.reference.five_from_sixty_eight`: eye
centres = mean of the six eye-contour points, nose tip 30, mouth corners 48 and 54); the
error of a variant is the mean point distance over the inter-ocular distance of the moved
reference, in percent (:func:`lsqface.evaluate.metrics.landmark_error`). lsqface's points
are the reconstruction's fitted ``landmarks_5`` (the landmark benchmark's "fitted" reading)
with the checkpoint's inference settings, the whole 256-pixel picture given to the
reconstructor. A method that finds no face, or a fit that fails, scores
:data:`lsqface.evaluate.landmarks.FAILED_ERROR` (100 %). Per roll and for the similarity set:
median, mean and failure rate (error over 10 %).
"""

from __future__ import annotations

import io
import math
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lsqface.data.augment import SimilarityAugmentation, sample_similarity, similarity_matrix, warp_images
from lsqface.errors import DatasetError, ImageError
from lsqface.evaluate.landmarks import FAILED_ERROR, FAILURE_THRESHOLD, run_in_batches, summarise
from lsqface.evaluate.metrics import landmark_error
from lsqface.evaluate.reference import dlib_photo_rectangle, dlib_points, dlib_search_image, five_from_sixty_eight

#: The six portraits of ../shared/data/real-faces.
SHARED_PHOTOS = ("astronaut.png", "biden.jpg", "grace_hopper.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg")
#: The photos of the insightface wheel (insightface/data/images).
INSIGHTFACE_PHOTOS = ("t1.jpg", "Tom_Hanks_54745.png", "mask_black.jpg", "mask_blue.jpg", "mask_green.jpg",
                      "mask_white.jpg")
#: The archive of dlib 19.5.0's source distribution on PyPI (46,766,077 bytes), read as it is, never extracted.
DLIB_ARCHIVE = "dlib-19.5.0.tar.gz"
#: The folder of dlib's example photos inside it; a photo's name is its path under this folder.
DLIB_EXAMPLES = "dlib-19.5.0/docs/docs/cache/examples/"
#: dlib's example photos of five people, 150 x 150 crops of LFW (Labeled Faces in the Wild): johns/PERSON/FILE.jpg.
DLIB_JOHNS = {
    "John_Salley": (
        "000179_02159509", "000183_02159543", "000186_02159346", "000189_02159361", "000190_02159501",
        "000192_02159531", "000194_02159572", "000197_02159322", "000197_02159525", "000198_02159470",
        "000200_02159354",
    ),
    "John_Savage": (
        "000264_01099001", "000274_01099061", "000277_01099000", "000289_01099139", "000290_01099067",
        "000290_01099090", "000291_01099023", "000291_01099214", "000293_01099081", "000296_01099007",
        "000299_01099008",
    ),
    "John_Schneider": (
        "000288_00925786", "000302_00925785", "000307_00925823", "000325_00925954", "000326_00925765",
        "000326_00926089", "000326_00926128", "000326_00926139", "000329_00925859", "000329_00925963",
        "000331_00926012",
    ),
    "John_Shimkus": (
        "000373_03228153", "000375_03227651", "000376_02340068", "000378_02340151", "000378_03227610",
        "000383_03227939", "000385_03227766", "000388_03227773", "000390_03227666", "000394_02340150",
        "000396_03227722",
    ),
    "John_Simm": (
        "000288_00470387", "000297_00470170", "000300_00470148", "000304_00470122", "000305_00470162",
        "000305_00470717", "000306_00470222", "000306_00470223", "000309_00470287", "000310_00470421",
        "000310_00470511",
    ),
}
#: dlib's PASCAL VOC 2011 photos (several small faces each) and bald_guys.jpg; its dogs.jpg is left out.
DLIB_FACES = ("2007_007763", "2008_001009", "2008_001322", "2008_002079", "2008_002470", "2008_002506", "2008_004176",
              "2008_007676", "2009_004587", "bald_guys")
#: Every dlib example photo of the validation split, by its path under examples/, in sorted order.
DLIB_PHOTOS = tuple(sorted([f"faces/{name}.jpg" for name in DLIB_FACES]
                           + [f"johns/{person}/{name}.jpg" for person, names in DLIB_JOHNS.items() for name in names]))
#: The split of every photo: (source, name) per split. Fixed: never chosen by a result.
SPLITS = {
    "validation": (("insightface", "t1.jpg"), ("insightface", "mask_black.jpg"), ("insightface", "mask_blue.jpg"),
                   ("insightface", "mask_green.jpg"), ("insightface", "mask_white.jpg"))
                  + tuple(("dlib", name) for name in DLIB_PHOTOS),
    "test": tuple(("shared", name) for name in SHARED_PHOTOS) + (("insightface", "Tom_Hanks_54745.png"),),
}
#: Where the shared photos are looked for, relative to the working folder and to the source tree.
SHARED_FOLDER = Path("..") / "shared" / "data" / "real-faces"
#: The command that downloads the dlib archive into :func:`lsqface.files.cache_dir`.
FETCH_DLIB_EXAMPLES = "make validation-photos"

ROLLS = (0, 90, 180, 270)
#: The group of the random similarity variants, beside the rolls' "0", "90", "180", "270".
SIMILARITY = "similarity"
GROUPS = tuple(str(roll) for roll in ROLLS) + (SIMILARITY,)
CROP_MARGIN = 1.6
CROP_SIZE = 256
SIMILARITY_RANGES = SimilarityAugmentation(rotation_degrees=180.0, scale_range=(0.8, 1.25), shift_fraction=0.1)
SIMILARITY_SEED = 20
DEFAULT_SIMILARITY_COUNT = 10
DETECTION_UPSAMPLE = 1
DETECTION_MAX_SIDE = 1280
DETECTION_THRESHOLD = 0.3
#: The method whose numbers the targets are about, then the peers (lsqface.evaluate.peers.PEER_NAMES).
LSQFACE = "lsqface"
#: What the shipped model is held to on the test split (docs/evaluation.md): median and failure
#: rate (percent) at every roll and the similarity set, and each shared photo's error upright and at 180.
TARGET_MEDIAN = 8.0
TARGET_FAILURES = 15.0
TARGET_PHOTO = 10.0


@dataclass
class RealFace:
    """One face of a benchmark photo.

    Attributes:
        name: the photo's name, with ``#k`` (k from 1, left to right) when the photo has several faces.
        photo: the photo's name in :data:`SPLITS` (a file name, or for "dlib" the path under
            ``examples/``); source: "shared", "insightface" or "dlib".
        box: dlib's face box (x, y, width, height) in photo pixels.
        reference: (68, 2) dlib's 68 points in photo pixels (pixel centres at j + 0.5).
        crop: (2, 3) photo pixels -> pixels of the upright 256 x 256 crop.
    """

    name: str
    photo: str
    source: str
    box: tuple[float, float, float, float]
    reference: np.ndarray
    crop: np.ndarray


@dataclass
class Variant:
    """One picture of the benchmark: a face at a roll or a random similarity.

    Attributes:
        face: the face's name; group: "0", "90", "180", "270" or "similarity"; index: the
            similarity's number (0 for the rolls).
        angle: clockwise turn on screen, degrees in [0, 360); scale: factor; shift: (2,) pixels
            (x, y) after the turn, about the crop's centre.
        matrix: (2, 3) photo pixels -> this picture's pixels.
        image: (S, S, 3) float32 in [0, 1].
        reference: (68, 2) dlib's points moved into this picture.
    """

    face: str
    group: str
    index: int
    angle: float
    scale: float
    shift: np.ndarray
    matrix: np.ndarray
    image: np.ndarray
    reference: np.ndarray

    @property
    def reference_five(self) -> np.ndarray:
        """(5, 2) the reference's 5 landmarks in this picture's pixels."""
        return five_from_sixty_eight(self.reference)

    @property
    def label(self) -> str:
        return f"roll {self.group}" if self.group != SIMILARITY else f"similarity {self.index}"


@dataclass
class RealBenchmark:
    """The benchmark's faces, pictures and every method's 5 landmarks on them.

    Attributes:
        split: "validation" or "test".
        faces: the faces found; variants: their pictures (V of them), face by face.
        predictions: {method: (V, 5, 2) float64 pixels}, NaN where the method found no face or failed.
        reasons: {method: {variant number: why it has no landmarks}}.
        confident_fraction: (V,) lsqface's share of confident input pixels per picture (NaN where failed).
        status: V (status, reason) of lsqface's reconstruction (``ok``, ``low_confidence`` or
            ``implausible``, and why), None where it failed or has none.
        skipped: {photo: why it is not in the benchmark}; missing_peers: {peer: why it did not run}.
    """

    split: str
    faces: list[RealFace]
    variants: list[Variant]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    reasons: dict[str, dict[int, str]] = field(default_factory=dict)
    confident_fraction: np.ndarray | None = None
    status: list = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing_peers: dict[str, str] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.predictions)

    def references(self) -> np.ndarray:
        """(V, 5, 2) the reference 5 landmarks of every picture."""
        return np.stack([variant.reference_five for variant in self.variants]).reshape(-1, 5, 2)

    def errors(self, method: str) -> np.ndarray:
        """(V,) error per picture, percent of the inter-ocular distance; :data:`FAILED_ERROR` where there are no landmarks."""
        return nme(self.predictions[method], self.references())

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """{group: {method: summarise(errors)}} with "0", "90", "180", "270", "similarity" groups."""
        groups = np.array([variant.group for variant in self.variants])
        return {group: {method: summarise(self.errors(method)[groups == group]) for method in self.methods}
                for group in GROUPS if (groups == group).any()}

    def face_errors(self, group: str) -> dict[str, dict[str, float]]:
        """{face: {method: error}} of every face in the pictures of one roll group ("0" ...)."""
        errors = {method: self.errors(method) for method in self.methods}
        return {variant.face: {method: float(errors[method][number]) for method in self.methods}
                for number, variant in enumerate(self.variants) if variant.group == group}

    def records(self) -> list[dict]:
        """One JSON-able dict per picture: its face, transform, reference and every method's landmarks and error."""
        errors = {method: self.errors(method) for method in self.methods}
        records = []
        for number, variant in enumerate(self.variants):
            record = {"split": self.split, "face": variant.face, "variant": variant.label, "group": variant.group,
                      "angle_degrees": variant.angle, "scale": variant.scale, "shift": variant.shift.tolist(),
                      "matrix": variant.matrix.tolist(), "reference": variant.reference_five.tolist(),
                      "reference_68": variant.reference.tolist()}
            for method in self.methods:
                five = self.predictions[method][number]
                entry = {"five": five.tolist() if np.isfinite(five).all() else None,
                         "error": float(errors[method][number])}
                if number in self.reasons.get(method, {}):
                    entry["failed"] = self.reasons[method][number]
                if method == LSQFACE and self.confident_fraction is not None:
                    fraction = float(self.confident_fraction[number])
                    entry["confident_fraction"] = fraction if math.isfinite(fraction) else None
                    if self.status and self.status[number] is not None:
                        entry["status"], entry["status_reason"] = self.status[number]
                record[method] = entry
            records.append(record)
        return records


def nme(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) 5-landmark error in percent of the inter-ocular distance; :data:`FAILED_ERROR` where ``predicted`` is not finite.

    Args:
        predicted: (N, 5, 2) pixels, NaN for a picture without landmarks.
        reference: (N, 5, 2) pixels; rows 0 and 1 are the eye centres.
    """
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1, 5, 2)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 5, 2)
    error = landmark_error(torch.from_numpy(predicted), torch.from_numpy(reference)).numpy()
    return np.where(np.isfinite(error), error, FAILED_ERROR)


# ---------------------------------------------------------------------------------------- photos


def shared_folder(folder: str | os.PathLike | None = None) -> Path | None:
    """The folder of the six shared photos: ``folder`` if given, else ``../shared/data/real-faces``
    of the working folder or of the source tree, whichever exists; None when none does.

    Raises:
        DatasetError: ``folder`` is given and is not a folder.
    """
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"The real-faces folder {folder} does not exist; give the folder holding "
                               f"{', '.join(SHARED_PHOTOS)}.")
        return folder
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = (base / SHARED_FOLDER).resolve()
        if path.is_dir():
            return path
    return None


def insightface_folder() -> Path | None:
    """The ``insightface/data/images`` folder of the installed insightface package (found without importing it), or None."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("insightface")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data" / "images"
        if folder.is_dir():
            return folder
    return None


def dlib_archive(path: str | os.PathLike | None = None) -> Path:
    """The archive of dlib's example photos: ``path`` if given, else :data:`DLIB_ARCHIVE` in :func:`lsqface.files.cache_dir`.

    Raises:
        DatasetError: ``path`` is given and is not a file.
    """
    from lsqface.files import cache_dir

    if path is None:
        return cache_dir() / DLIB_ARCHIVE
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"The dlib examples archive {path} does not exist; give the path of {DLIB_ARCHIVE} "
                           f"(`{FETCH_DLIB_EXAMPLES}` downloads it into {cache_dir()}).")
    return path


def read_archive(archive: Path, wanted: Sequence[str] = ()) -> tuple[set[str], dict[str, bytes]]:
    """The names of the files under :data:`DLIB_EXAMPLES` in ``archive``, and the bytes of those in ``wanted``.

    One pass over the compressed archive; nothing is written to disk.

    Raises:
        DatasetError: the archive is not a readable .tar.gz (corrupt or cut short).
    """
    wanted = set(wanted)
    names, data = set(), {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not (member.isfile() and member.name.startswith(DLIB_EXAMPLES)):
                    continue
                name = member.name[len(DLIB_EXAMPLES):]
                names.add(name)
                if name in wanted:
                    data[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DatasetError(f"The dlib examples archive {archive} cannot be read ({error}); delete it and run "
                           f"`{FETCH_DLIB_EXAMPLES}` again.") from None
    return names, data


def decode_photo(data: bytes, name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: the image file held in ``data``, decoded by PIL and read by
    :func:`lsqface.data.images.read_image`; ``name`` says which file it is in an error.

    Raises:
        ImageError: ``data`` is not an image PIL can decode, or one read_image refuses.
    """
    from PIL import Image

    from lsqface.data.images import read_image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return read_image(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name} is not an image lsqface can read ({error}).") from None


class Photo(NamedTuple):
    """A photo of a split that is present.

    Attributes:
        source: "shared", "insightface" or "dlib"; name: its name in :data:`SPLITS`.
        path: the photo's file, or for "dlib" the archive that holds it.
    """

    source: str
    name: str
    path: Path


def find_photos(split: str, folder: str | os.PathLike | None = None, *,
                dlib_examples: str | os.PathLike | None = None) -> tuple[list[Photo], dict[str, str]]:
    """The photos of a split that are present, and {photo: why it is absent}.

    Args:
        split: "validation" or "test".
        folder: the shared photos' folder (default: :func:`shared_folder`'s search).
        dlib_examples: dlib 19.5.0's source archive (default: :func:`dlib_archive`'s cache path);
            read only when the split has dlib photos.

    Raises:
        DatasetError: an unknown split, ``folder`` or ``dlib_examples`` given but absent, or a
            corrupt archive.
    """
    if split not in SPLITS:
        raise DatasetError(f"Unknown real-photo split '{split}'; use one of {', '.join(SPLITS)}.")
    shared = shared_folder(folder)
    insightface = insightface_folder()
    archive = dlib_archive(dlib_examples)
    has_dlib = any(source == "dlib" for source, _ in SPLITS[split])
    in_archive = read_archive(archive)[0] if has_dlib and archive.is_file() else None
    where = {"shared": shared, "insightface": insightface, "dlib": archive if in_archive is not None else None}
    absent = {
        "shared": f"{SHARED_FOLDER} not found; pass --real-faces DIR with the six public-domain portraits",
        "insightface": "the insightface package is not installed; pip install --no-deps insightface==2.1",
        "dlib": f"{archive} not found; `{FETCH_DLIB_EXAMPLES}` downloads dlib 19.5.0's source distribution there "
                "(or pass --dlib-examples PATH)",
    }
    found, skipped = [], {}
    for source, name in SPLITS[split]:
        base = where[source]
        if base is None:
            skipped[name] = absent[source]
        elif source == "dlib":
            if name in in_archive:
                found.append(Photo(source, name, base))
            else:
                skipped[name] = f"not in {base}"
        elif not (base / name).is_file():
            skipped[name] = f"not in {base}"
        else:
            found.append(Photo(source, name, base / name))
    return found, skipped


def reference_faces(image: np.ndarray, detector, predictor, upsample: int = DETECTION_UPSAMPLE,
                    max_side: int = DETECTION_MAX_SIDE,
                    threshold: float = DETECTION_THRESHOLD) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
    """Every face dlib finds in an upright photo: (box (x, y, width, height), (68, 2) points) left to right.

    Args:
        image: (H, W, 3) float in [0, 1].
        detector, predictor: dlib's frontal face detector and 68-point shape predictor.
        upsample, max_side, threshold: the detector's upsampling, the longer side it searches at
            most (the predictor runs at full resolution), the smallest score kept.
    """
    import dlib

    pixels, searched, scale = dlib_search_image(image, max_side)
    rectangles, _, _ = detector.run(searched, upsample, threshold)
    faces = []
    for rectangle in rectangles:
        rectangle = dlib_photo_rectangle(dlib, rectangle, scale)
        points = dlib_points(predictor(pixels, rectangle))
        # dlib's rectangles include their right and bottom pixel.
        box = (float(rectangle.left()), float(rectangle.top()), float(rectangle.width()), float(rectangle.height()))
        faces.append((box, points))
    return sorted(faces, key=lambda face: face[0][0] + 0.5 * face[0][2])


# ------------------------------------------------------------------------------------- variants


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(matrix, dtype=np.float64), [[0.0, 0.0, 1.0]]], axis=0)


def move_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Points (..., K, 2) moved by an affine (2, 3) matrix, in pixels."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def crop_matrix(box: Sequence[float], size: int = CROP_SIZE, margin: float = CROP_MARGIN) -> np.ndarray:
    """(2, 3) photo pixels -> pixels of the square crop (side ``margin`` x the box's longer side, centred on it) at ``size``."""
    x, y, width, height = (float(value) for value in box)
    side = margin * max(width, height)
    scale = size / side
    centre_x, centre_y = x + 0.5 * width, y + 0.5 * height
    return np.array([[scale, 0.0, 0.5 * size - scale * centre_x], [0.0, scale, 0.5 * size - scale * centre_y]])


def roll_matrix(degrees: float, size: int = CROP_SIZE) -> np.ndarray:
    """(2, 3) turn of a ``size`` x ``size`` picture by ``degrees`` clockwise on screen about its centre."""
    angle = torch.tensor([math.radians(degrees)], dtype=torch.float64)
    return similarity_matrix(angle, torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                             size, size)[0].numpy()


def inside(points: np.ndarray, size: int) -> bool:
    """Whether every point (K, 2) lies in the ``size`` x ``size`` picture [0, size]^2."""
    return bool(np.all((points >= 0.0) & (points <= size)))


def draw_similarities(name: str, count: int, points: np.ndarray, size: int = CROP_SIZE,
                      ranges: SimilarityAugmentation = SIMILARITY_RANGES, seed: int = SIMILARITY_SEED,
                      max_draws: int = 1000) -> np.ndarray:
    """(count, 2, 3) random similarities of a crop that keep ``points`` (K, 2) inside it (module notes).

    The generator is seeded by ``seed`` and the face's ``name``, so a face's transforms do not
    depend on the other faces, and a draw that moves a point out of the picture is replaced by the next.

    Raises:
        DatasetError: ``max_draws`` draws in a row all moved the face out (the points are not in the crop).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode("utf-8")))
    accepted = []
    while len(accepted) < count:
        for _ in range(max_draws):
            matrix = sample_similarity(ranges, 1, size, size, generator, dtype=torch.float64)[0].numpy()
            if inside(move_points(points, matrix), size):
                accepted.append(matrix)
                break
        else:
            raise DatasetError(f"No similarity in {max_draws} draws keeps face {name} inside its crop; "
                               "its reference points do not lie in the crop.")
    return np.asarray(accepted, dtype=np.float64).reshape(count, 2, 3)


def similarity_parameters(matrix: np.ndarray, size: int = CROP_SIZE) -> tuple[float, float, np.ndarray]:
    """(angle in degrees [0, 360), scale, shift (2,)) of a similarity about the centre of a ``size`` picture."""
    matrix = np.asarray(matrix, dtype=np.float64)
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])) % 360.0
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    centre = np.array([size / 2.0, size / 2.0])
    shift = matrix[:, 2] - (centre - matrix[:, :2] @ centre)
    return angle, scale, shift


def warp_photo(photo: np.ndarray, matrices: np.ndarray, size: int = CROP_SIZE, shrink: float = 1.0) -> np.ndarray:
    """(V, size, size, 3) float32 pictures of ``photo`` (H, W, 3) moved by ``matrices`` (V, 2, 3), photo -> picture pixels.

    With ``shrink`` under 1 (the crop's scale, picture pixels per photo pixel), the photo is first
    shrunk by that factor with antialiasing, so that the bilinear warp of a large photo does not alias.
    """
    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    tensor = torch.from_numpy(np.ascontiguousarray(photo, dtype=np.float32)).permute(2, 0, 1)[None]
    height, width = photo.shape[:2]
    if shrink < 1.0:
        small = (max(1, round(height * shrink)), max(1, round(width * shrink)))
        tensor = F.interpolate(tensor, size=small, mode="bilinear", antialias=True, align_corners=False)
        to_photo = np.diag([width / small[1], height / small[0], 1.0])
        matrices = np.stack([matrix @ to_photo for matrix in matrices])
    pictures = [warp_images(tensor, torch.from_numpy(matrix)[None], size=(size, size))[0] for matrix in matrices]
    return torch.stack(pictures).permute(0, 2, 3, 1).clamp(0.0, 1.0).numpy()


def face_variants(face: RealFace, photo: np.ndarray, similarity: int, size: int = CROP_SIZE) -> list[Variant]:
    """The pictures of one face: the four rolls, then ``similarity`` random similarities."""
    in_crop = move_points(face.reference, face.crop)
    moves = [roll_matrix(roll, size) for roll in ROLLS]
    if similarity > 0:
        moves += list(draw_similarities(face.name, similarity, in_crop, size))
    matrices = np.stack([(_homogeneous(move) @ _homogeneous(face.crop))[:2] for move in moves])
    images = warp_photo(photo, matrices, size, shrink=float(face.crop[0, 0]))
    variants = []
    for number, (move, matrix, image) in enumerate(zip(moves, matrices, images)):
        angle, scale, shift = similarity_parameters(move, size)
        is_roll = number < len(ROLLS)
        variants.append(Variant(face=face.name, group=str(ROLLS[number]) if is_roll else SIMILARITY,
                                index=0 if is_roll else number - len(ROLLS), angle=float(ROLLS[number]) if is_roll else angle,
                                scale=scale, shift=shift, matrix=matrix, image=image,
                                reference=move_points(face.reference, matrix)))
    return variants


#: The reference: (H, W, 3) float photo in [0, 1] -> [(box (x, y, width, height), (68, 2) points)], left to right.
Reference = Callable[[np.ndarray], list]


def dlib_faces() -> Reference:
    """The benchmark's reference: :func:`reference_faces` with dlib's detector and 68-point predictor.

    Raises:
        ConfigError: dlib or its 68-point predictor is missing (``pip install 'lsqface[identity]'``).
    """
    from lsqface.evaluate.identity import dlib_models
    from lsqface.evaluate.reference import predictor_path

    dlib, _ = dlib_models("The real-photo benchmark's reference (dlib's 68 points)")
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))
    return lambda photo: reference_faces(photo, detector, predictor)


def assemble(split: str, similarity: int = DEFAULT_SIMILARITY_COUNT, folder: str | os.PathLike | None = None,
             size: int = CROP_SIZE, progress: Callable | None = None, reference: Reference | None = None, *,
             dlib_examples: str | os.PathLike | None = None) -> tuple[list[RealFace], list[Variant], dict[str, str]]:
    """The faces and pictures of a split, and {photo: why it is not in the benchmark}.

    Args:
        split: "validation" or "test" (:data:`SPLITS`).
        similarity: random similarity pictures per face, beside the four rolls.
        folder: the folder of the shared photos (default: :func:`shared_folder`'s search).
        size: side of every picture, pixels.
        progress: optional wrapper of the photo iterator (e.g. tqdm).
        reference: the faces and reference points of a photo (default :func:`dlib_faces`, loaded
            only when a photo of the split is present).
        dlib_examples: dlib 19.5.0's source archive (default: :func:`dlib_archive`'s cache path).

    Raises:
        ConfigError: dlib or its 68-point predictor is missing (``pip install 'lsqface[identity]'``).
        DatasetError: an unknown split, ``folder`` is not a folder, ``dlib_examples`` is not a file,
            or the archive is corrupt.
    """
    from lsqface.data.images import read_image

    if similarity < 0:
        raise DatasetError(f"--similarity takes a count of 0 or more pictures per face, got {similarity}.")
    photos, skipped = find_photos(split, folder, dlib_examples=dlib_examples)
    if not photos:
        return [], [], skipped
    reference = dlib_faces() if reference is None else reference
    # The archive's photos are read in one pass: a gzip stream is not seekable backwards.
    archived = [photo for photo in photos if photo.source == "dlib"]
    data = read_archive(archived[0].path, [photo.name for photo in archived])[1] if archived else {}
    faces, variants = [], []
    for source, photo_name, photo_path in (progress(photos) if progress is not None else photos):
        try:
            if source != "dlib":
                photo = read_image(photo_path)
            elif photo_name in data:
                photo = decode_photo(data[photo_name], f"{photo_name} of {photo_path}")
            else:
                skipped[photo_name] = f"not in {photo_path}"
                continue
        except ImageError as error:
            skipped[photo_name] = str(error)
            continue
        found = reference(photo)
        if not found:
            skipped[photo_name] = "dlib's face detector finds no face in the upright photo"
            continue
        for number, (box, points) in enumerate(found, start=1):
            name = photo_name if len(found) == 1 else f"{photo_name}#{number}"
            face = RealFace(name, photo_name, source, box, points, crop_matrix(box, size))
            if not inside(move_points(points, face.crop), size):
                skipped[name] = "dlib's 68 points reach outside the face's crop"
                continue
            faces.append(face)
            variants += face_variants(face, photo, similarity, size)
    return faces, variants, skipped


# -------------------------------------------------------------------------------------- methods


def _status_entries(result) -> list | None:
    """The reconstruction's per-face (status, reason), or None when it has no status."""
    status = list(getattr(result, "status", None) or [])
    if not status:
        return None
    reasons = list(getattr(result, "status_reason", None) or [""] * len(status))
    return [(str(value), str(reason)) for value, reason in zip(status, reasons)]


def run_lsqface(reconstructor, images: Sequence[np.ndarray], batch_size: int = 8, progress: Callable | None = None):
    """lsqface's fitted 5 landmarks on every picture.

    Returns:
        (V, 5, 2) landmarks (NaN where the fit failed), (V,) confident fraction (NaN there),
        V (status, reason) (None where the reconstruction has no ``status``), {picture: why it failed}.
    """
    count = len(images)
    five = np.full((count, 5, 2), np.nan)
    confident = np.full(count, np.nan)
    status: list = [None] * count

    def run(indices: list[int]) -> None:
        result = reconstructor([images[i] for i in indices])
        five[indices] = result.landmarks_5.detach().cpu().double().numpy()
        confident[indices] = result.confident_fraction().detach().cpu().double().numpy()
        entries = _status_entries(result)
        if entries is not None:
            for index, entry in zip(indices, entries):
                status[index] = entry

    failures = run_in_batches(run, count, batch_size, progress)
    return five, confident, status, failures


def run_peer(peer, images: Sequence[np.ndarray], progress: Callable | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """A peer's 5 landmarks (V, 5, 2) on every picture (NaN where it finds no face) and {picture: reason}."""
    five = np.full((len(images), 5, 2), np.nan)
    reasons = {}
    numbers = range(len(images))
    for number in (progress(numbers) if progress is not None else numbers):
        points = peer(images[number])
        if points is None:
            reasons[number] = "no face found"
        else:
            five[number] = points
    return five, reasons


def evaluate_real(reconstructor, split: str, similarity: int = DEFAULT_SIMILARITY_COUNT, *, batch_size: int = 8,
                  folder: str | os.PathLike | None = None, peers: Sequence[str] | None = None,
                  progress: bool = False, size: int = CROP_SIZE,
                  dlib_examples: str | os.PathLike | None = None) -> RealBenchmark:
    """Assemble a split and score lsqface and the installed peers on every picture.

    Args:
        reconstructor: a :class:`lsqface.reconstruct.Reconstructor` (its checkpoint's settings are used).
        split: "validation" or "test".
        similarity: random similarity pictures per face.
        batch_size: pictures per reconstruction batch.
        folder: the shared photos' folder (default: searched, :func:`shared_folder`).
        dlib_examples: dlib 19.5.0's source archive (default: :func:`dlib_archive`'s cache path).
        peers: peer names (default: all of :data:`lsqface.evaluate.peers.PEER_NAMES`); a missing
            one is recorded in ``missing_peers``.
        progress: show tqdm progress bars.
        size: side of the pictures, pixels.

    Raises:
        ConfigError: dlib or its 68-point predictor (the reference) is missing.
        DatasetError: an unknown split, a corrupt dlib archive, or no face of the split is present.
    """
    from lsqface.evaluate.peers import PEER_NAMES, load_peers

    def wrap(description: str, unit: str):
        if not progress:
            return None
        from tqdm import tqdm

        return lambda iterable: tqdm(iterable, desc=description, unit=unit, leave=False)

    faces, variants, skipped = assemble(split, similarity, folder, size, progress=wrap("photos", "photo"),
                                        dlib_examples=dlib_examples)
    if not variants:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise DatasetError(f"No face of the {split} split is present ({reasons}).")
    images = [variant.image for variant in variants]
    benchmark = RealBenchmark(split, faces, variants, skipped=skipped)
    five, confident, status, failures = run_lsqface(reconstructor, images, batch_size, wrap(LSQFACE, "batch"))
    benchmark.predictions[LSQFACE], benchmark.reasons[LSQFACE] = five, failures
    benchmark.confident_fraction, benchmark.status = confident, status
    loaded, benchmark.missing_peers = load_peers(tuple(PEER_NAMES if peers is None else peers))
    for name, peer in loaded.items():
        benchmark.predictions[name], benchmark.reasons[name] = run_peer(peer, images, wrap(name, "picture"))
    return benchmark


# --------------------------------------------------------------------------------------- report


def cell(value, digits: int = 1) -> str:
    """A table cell of a percentage (:func:`lsqface.evaluate.report.cell`), "-" where missing."""
    from lsqface.evaluate.report import cell as report_cell

    return report_cell(None if value is None or not math.isfinite(value) else float(value), digits)


def _group_label(group: str) -> str:
    return f"{group} deg" if group != SIMILARITY else "random similarity"


def roll_table(benchmark: RealBenchmark, methods: Sequence[str]) -> str:
    """Markdown: per roll and the similarity set, each method's median, mean and failure rate (percent)."""
    header = "| Roll | Pictures | " + " | ".join(f"{method} median | {method} mean | {method} > 10 %" for method in methods) + " |"
    lines = [header, "|" + "---|" * (2 + 3 * len(methods))]
    summary = benchmark.summary()
    for group, row in summary.items():
        cells = []
        for method in methods:
            values = row.get(method)
            cells += ["-"] * 3 if values is None else [cell(values["median"]), cell(values["mean"]),
                                                       cell(values["failure_rate"], 1)]
        count = next(iter(row.values()))["count"]
        lines.append(f"| {_group_label(group)} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def status_lines(benchmark: RealBenchmark) -> list[str]:
    """Markdown lines counting lsqface's reconstruction status per roll (none when the reconstructions have no status)."""
    if not any(entry is not None for entry in benchmark.status):
        return []
    lines = ["lsqface's own verdict on its fits (`Reconstruction.status`), pictures per roll:", ""]
    for group in GROUPS:
        entries = [benchmark.status[number] for number, variant in enumerate(benchmark.variants) if variant.group == group]
        if entries:
            counts = {}
            for entry in entries:
                key = "failed" if entry is None else entry[0]
                counts[key] = counts.get(key, 0) + 1
            lines.append(f"- {_group_label(group)}: " + ", ".join(f"{key} {count}" for key, count in sorted(counts.items())))
    return lines + [""]


def face_table(benchmark: RealBenchmark, methods: Sequence[str]) -> str:
    """Markdown: each face's error per method upright and at 180 degrees, and lsqface's confident fraction upright."""
    upright, turned = benchmark.face_errors("0"), benchmark.face_errors("180")
    fractions = {}
    if benchmark.confident_fraction is not None:
        fractions = {variant.face: float(benchmark.confident_fraction[number])
                     for number, variant in enumerate(benchmark.variants) if variant.group == "0"}
    header = "| Face | " + " | ".join(f"{method} 0 deg | {method} 180 deg" for method in methods) + " | lsqface confident fraction (0 deg) |"
    lines = [header, "|" + "---|" * (2 + 2 * len(methods))]
    for face in upright:
        cells = []
        for method in methods:
            cells += [cell(upright[face].get(method, float("nan"))),
                      cell(turned.get(face, {}).get(method, float("nan")))]
        lines.append(f"| {face} | " + " | ".join(cells) + f" | {cell(fractions.get(face, float('nan')), 3)} |")
    return "\n".join(lines)


def target_lines(benchmark: RealBenchmark) -> list[str]:
    """Markdown lines saying whether lsqface meets the targets (set for the test split) on these pictures."""
    summary = benchmark.summary()
    lines = []
    misses = [f"{_group_label(group)}: median {cell(row[LSQFACE]['median'], 1)} %, failures {cell(row[LSQFACE]['failure_rate'], 1)} %"
              for group, row in summary.items()
              if not (row[LSQFACE]["median"] <= TARGET_MEDIAN and row[LSQFACE]["failure_rate"] <= TARGET_FAILURES)]
    lines.append(f"- median <= {TARGET_MEDIAN:g} % and failures <= {TARGET_FAILURES:g} % at every roll and the random "
                 f"similarities: {'met' if not misses else 'not met (' + '; '.join(misses) + ')'}")
    upright, turned = benchmark.face_errors("0"), benchmark.face_errors("180")
    shared = [face for face in upright if face in SHARED_PHOTOS]
    if shared:
        over = [f"{face} {cell(upright[face][LSQFACE], 1)} / {cell(turned.get(face, {}).get(LSQFACE, FAILED_ERROR))} %"
                for face in shared
                if not (upright[face][LSQFACE] <= TARGET_PHOTO and turned.get(face, {}).get(LSQFACE, FAILED_ERROR) <= TARGET_PHOTO)]
        lines.append(f"- each shared photo <= {TARGET_PHOTO:g} % upright and at 180 deg: "
                     f"{'met' if not over else 'not met (' + '; '.join(over) + ')'}")
    return lines


def roll_plot(benchmark: RealBenchmark, methods: Sequence[str]) -> bytes:
    """PNG bytes: every picture's error against its clockwise turn, per method, with the medians of the four rolls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lsqface.evaluate.report import png_bytes

    figure, axes = plt.subplots(figsize=(7.0, 4.2))
    angles = np.array([variant.angle for variant in benchmark.variants])
    groups = np.array([variant.group for variant in benchmark.variants])
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for offset, (method, colour) in enumerate(zip(methods, colours)):
        errors = np.minimum(benchmark.errors(method), FAILED_ERROR)  # drawn at 100 % at most
        rolls = groups != SIMILARITY
        jitter = (offset - (len(methods) - 1) / 2.0) * 6.0
        axes.scatter(angles[rolls] + jitter, errors[rolls], s=10, alpha=0.45, color=colour)
        axes.scatter(angles[~rolls], errors[~rolls], s=12, alpha=0.45, color=colour, marker="x")
        medians = [float(np.median(errors[groups == str(roll)])) if (groups == str(roll)).any() else float("nan")
                   for roll in ROLLS]
        axes.plot(ROLLS, medians, "o-", color=colour, lw=1.6, label=f"{method} (median of the rolls)")
    axes.axhline(FAILURE_THRESHOLD, color="grey", lw=0.8, ls="--")
    axes.set_xticks([0, 45, 90, 135, 180, 225, 270, 315, 360])
    axes.set_xlim(-15, 365)
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_ylim(0, 130)
    axes.set_xlabel("clockwise turn of the picture (degrees); dots: the four rolls, crosses: random similarities")
    axes.set_ylabel("5-landmark error (% inter-ocular; 100 = no face or worse)")
    axes.set_title(f"Real photos, {benchmark.split} split: error against in-plane rotation")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(methods))
    return png_bytes(figure)


#: File names inside the report folder.
REPORT_FILES = {"report": "report.md", "records": "real.jsonl", "plot": "real-error-vs-roll.png"}


def write_real_report(folder: str | os.PathLike, benchmark: RealBenchmark, notes: Sequence[str] = ()) -> Path:
    """Write report.md, real.jsonl and real-error-vs-roll.png into ``folder`` (each atomically); return report.md's path."""
    import json

    from lsqface.evaluate.peers import PEER_NAMES
    from lsqface.files import write_bytes_atomic, write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Every peer has its columns; one that did not run shows "-" there and is listed under "Skipped".
    methods = [LSQFACE, *PEER_NAMES]
    measured = [method for method in methods if method in benchmark.predictions]
    similarity = sum(variant.group == SIMILARITY for variant in benchmark.variants) // max(1, len(benchmark.faces))
    parts = [f"# lsqface real-photo benchmark: {benchmark.split} split", ""]
    parts += [f"{line}  " for line in notes]
    parts += [
        f"Faces: {len(benchmark.faces)} ({', '.join(face.name for face in benchmark.faces)}); pictures per face: the "
        f"rolls 0, 90, 180, 270 and {similarity} random similarities; {len(benchmark.variants)} pictures.", "",
        "Error: 5-landmark NME, the mean distance to dlib's 68-point predictor on the upright photo (moved with the "
        "picture) over its inter-ocular distance, percent; eye centres are the means of the six eye-contour points. "
        "'> 10 %': failure rate. A method that finds no face scores 100 %. dlib is the reference's own estimator, so "
        "its upright numbers are near zero by construction.", "",
        "## 5-landmark error per roll", "", roll_table(benchmark, methods), "",
        *status_lines(benchmark),
        "## Per face, upright and at 180 degrees", "", face_table(benchmark, methods), "",
        f"## Targets ({TARGET_MEDIAN:g} % median, {TARGET_FAILURES:g} % failures, {TARGET_PHOTO:g} % per shared photo; "
        "set for the test split)", "",
    ]
    parts += target_lines(benchmark) + [""]
    if benchmark.missing_peers or benchmark.skipped:
        parts += ["## Skipped", ""]
        parts += [f"- {name}: {reason}" for name, reason in benchmark.missing_peers.items()]
        parts += [f"- {name}: {reason}" for name, reason in benchmark.skipped.items()]
        parts.append("")
    failures = benchmark.reasons.get(LSQFACE, {})
    if failures:
        parts += [f"lsqface failed to reconstruct {len(failures)} pictures (scored 100 %): "
                  + "; ".join(f"{benchmark.variants[number].face} {benchmark.variants[number].label}: {reason}"
                              for number, reason in sorted(failures.items())), ""]
    parts += [f"![error against roll]({REPORT_FILES['plot']})", "",
              f"Per-picture landmarks and errors: [{REPORT_FILES['records']}]({REPORT_FILES['records']})", ""]
    write_bytes_atomic(folder / REPORT_FILES["plot"], roll_plot(benchmark, measured))
    write_text_atomic(folder / REPORT_FILES["records"], "".join(json.dumps(record) + "\n" for record in benchmark.records()))
    path = folder / REPORT_FILES["report"]
    write_text_atomic(path, "\n".join(parts))
    return path
