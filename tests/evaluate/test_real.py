"""The real-photo benchmark: pictures and reference points move together, the split, the score, absent photos."""

import importlib.util
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from lsqface.errors import DatasetError
from lsqface.evaluate import real
from lsqface.evaluate.real import (
    CROP_SIZE, DLIB_EXAMPLES, ROLLS, SIMILARITY, SPLITS, Photo, RealBenchmark, RealFace, Variant, assemble, crop_matrix,
    draw_similarities, face_variants, find_photos, move_points, nme, similarity_parameters,
)


def _dots(height, width, points, sigma=1.5):
    """(H, W, 3) float32 image, black with a Gaussian dot at each (x, y) of ``points`` (pixel centres at j + 0.5)."""
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    image = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points)
    return np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)


def _centroid(image, around, radius=10.0):
    """The intensity-weighted centre (x, y) of ``image`` (H, W, 3) within ``radius`` of ``around``."""
    height, width = image.shape[:2]
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    weights = image[..., 0] * (np.hypot(xs - around[0], ys - around[1]) <= radius)
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def test_reference_points_land_where_the_warped_picture_puts_their_dots():
    # A 200 x 240 "photo" with four dots; the face box is 80 px, so its crop is 128 px shown at 256.
    dots = np.array([[75.0, 70.0], [125.0, 72.5], [100.5, 110.0], [88.0, 126.0]])
    reference = np.resize(dots, (68, 2))  # the 68 reference points are the four dots over and over
    box = (60.0, 50.0, 80.0, 80.0)
    face = RealFace("dots.png", "dots.png", "shared", box, reference, crop_matrix(box))
    variants = face_variants(face, _dots(200, 240, dots), similarity=6)
    assert [variant.group for variant in variants] == ["0", "90", "180", "270"] + [SIMILARITY] * 6
    for variant in variants:
        assert variant.image.shape == (CROP_SIZE, CROP_SIZE, 3)
        np.testing.assert_allclose(variant.reference, move_points(reference, variant.matrix))
        for point in variant.reference[:4]:
            np.testing.assert_allclose(_centroid(variant.image, point), point, atol=0.15)
    # The crop is centred on the box at 256 / (1.6 x 80) = 2 pixels per photo pixel.
    np.testing.assert_allclose(move_points(np.array([[100.0, 90.0]]), variants[0].matrix), [[128.0, 128.0]])
    np.testing.assert_allclose(variants[0].matrix[:, :2], 2.0 * np.eye(2))
    # A roll is an exact quarter turn of the upright picture, clockwise on screen.
    for turns, variant in enumerate(variants[:4]):
        np.testing.assert_allclose(variant.image, np.rot90(variants[0].image, k=-turns, axes=(0, 1)), atol=1e-5)
        assert variant.angle == ROLLS[turns] and variant.scale == pytest.approx(1.0)
    # Roll 90: the dot right of the centre goes below it.
    np.testing.assert_allclose(move_points(np.array([[110.0, 90.0]]), variants[1].matrix), [[128.0, 148.0]], atol=1e-9)


def test_every_drawn_similarity_keeps_the_face_inside_and_the_draw_is_fixed():
    rng = np.random.default_rng(0)
    angles = []
    for name in ("a.jpg", "t1.jpg#3", "Tom_Hanks_54745.png"):
        # A face filling the middle 60 % of the crop, the size of dlib's 68 points in a 1.6 x box crop.
        points = rng.uniform(0.2 * CROP_SIZE, 0.8 * CROP_SIZE, size=(68, 2))
        matrices = draw_similarities(name, 40, points)
        for matrix in matrices:
            moved = move_points(points, matrix)
            assert moved.min() >= 0.0 and moved.max() <= CROP_SIZE
            angle, scale, shift = similarity_parameters(matrix)
            assert 0.8 - 1e-9 <= scale <= 1.25 + 1e-9 and np.all(np.abs(shift) <= 0.1 * CROP_SIZE + 1e-9)
            angles.append(angle)
        np.testing.assert_array_equal(matrices, draw_similarities(name, 40, points))  # fixed by the name
        np.testing.assert_array_equal(matrices[:5], draw_similarities(name, 5, points))  # the first N of any larger N
    assert not np.allclose(draw_similarities("a.jpg", 3, points), draw_similarities("b.jpg", 3, points))
    assert min(angles) < 30 and max(angles) > 330  # the whole circle
    with pytest.raises(DatasetError, match="keeps face"):
        draw_similarities("far.jpg", 1, np.array([[-50.0, 10.0]]), max_draws=20)


#: dlib 19.5.0's example photos by hand: file stems per folder of its docs/docs/cache/examples/.
DLIB_EXAMPLE_NAMES = {
    "faces": "2007_007763 2008_001009 2008_001322 2008_002079 2008_002470 2008_002506 2008_004176 2008_007676 "
             "2009_004587 bald_guys",
    "johns/John_Salley": "000179_02159509 000183_02159543 000186_02159346 000189_02159361 000190_02159501 "
                         "000192_02159531 000194_02159572 000197_02159322 000197_02159525 000198_02159470 000200_02159354",
    "johns/John_Savage": "000264_01099001 000274_01099061 000277_01099000 000289_01099139 000290_01099067 "
                         "000290_01099090 000291_01099023 000291_01099214 000293_01099081 000296_01099007 000299_01099008",
    "johns/John_Schneider": "000288_00925786 000302_00925785 000307_00925823 000325_00925954 000326_00925765 "
                            "000326_00926089 000326_00926128 000326_00926139 000329_00925859 000329_00925963 "
                            "000331_00926012",
    "johns/John_Shimkus": "000373_03228153 000375_03227651 000376_02340068 000378_02340151 000378_03227610 "
                          "000383_03227939 000385_03227766 000388_03227773 000390_03227666 000394_02340150 "
                          "000396_03227722",
    "johns/John_Simm": "000288_00470387 000297_00470170 000300_00470148 000304_00470122 000305_00470162 "
                       "000305_00470717 000306_00470222 000306_00470223 000309_00470287 000310_00470421 000310_00470511",
}


def test_the_split_is_fixed_by_photo_disjoint_and_holds_the_shared_photos_in_test():
    dlib_photos = [f"{folder}/{stem}.jpg" for folder, stems in DLIB_EXAMPLE_NAMES.items() for stem in stems.split()]
    assert len(dlib_photos) == 65 and dlib_photos == sorted(dlib_photos)
    assert SPLITS == {
        "validation": (("insightface", "t1.jpg"), ("insightface", "mask_black.jpg"), ("insightface", "mask_blue.jpg"),
                       ("insightface", "mask_green.jpg"), ("insightface", "mask_white.jpg"))
                      + tuple(("dlib", name) for name in dlib_photos),
        "test": (("shared", "astronaut.png"), ("shared", "biden.jpg"), ("shared", "grace_hopper.jpg"),
                 ("shared", "obama.jpg"), ("shared", "obama2.jpg"), ("shared", "obama3.jpg"),
                 ("insightface", "Tom_Hanks_54745.png")),
    }
    validation, test = ({name for _, name in SPLITS[split]} for split in ("validation", "test"))
    assert not validation & test
    assert set(real.SHARED_PHOTOS) <= test
    # No photo of either split is a training background (compared by file name, the dlib photos' too).
    from lsqface.data.backgrounds import _PACKAGED

    backgrounds = {name for _, names in _PACKAGED.values() for name in names}
    assert not backgrounds & {name.rsplit("/", 1)[-1] for name in validation | test}


def test_nme_is_the_mean_distance_over_the_reference_eye_distance_by_hand():
    reference = np.array([[[10.0, 20.0], [30.0, 20.0], [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]]])  # eyes 20 apart
    predicted = reference.copy()
    predicted[0, 0] += [3.0, 4.0]  # 5 px off
    predicted[0, 4] += [-6.0, 8.0]  # 10 px off
    # (5 + 0 + 0 + 0 + 10) / 5 = 3 px over 20 px = 15 %.
    assert nme(predicted, reference) == pytest.approx([15.0])
    # Turned and scaled together, the error is the same; no landmarks is 100 %.
    turn = np.array([[0.0, -2.0, 100.0], [2.0, 0.0, 5.0]])
    both = np.concatenate([move_points(predicted, turn), np.full((1, 5, 2), np.nan)])
    assert nme(both, np.concatenate([move_points(reference, turn), reference])) == pytest.approx([15.0, 100.0])


def _variant(face, group, index=0):
    reference = np.resize(np.array([[10.0, 20.0], [30.0, 20.0], [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]]), (68, 2))
    # 68 points whose eye contours average to the 5 above: every point of 36..41 and 42..47 on its eye centre.
    reference[36:42], reference[42:48] = [10.0, 20.0], [30.0, 20.0]
    reference[30], reference[48], reference[54] = [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]
    return Variant(face, group, index, float(group) if group != SIMILARITY else 33.0, 1.0, np.zeros(2),
                   np.eye(2, 3), np.zeros((4, 4, 3), np.float32), reference)


def test_summary_per_roll_and_records_follow_from_hand_errors():
    variants = [_variant("a", "0"), _variant("b", "0"), _variant("c", "0"), _variant("a", "180"), _variant("a", SIMILARITY)]
    five = np.stack([variant.reference_five for variant in variants])
    lsqface = five.copy()
    lsqface[0, 1] += [2.0, 0.0]  # 2 / 5 / 20 = 2 %
    lsqface[1, 2] += [0.0, 30.0]  # 30 %
    lsqface[2] = np.nan  # failed: 100 %
    lsqface[3, 0] += [0.0, 5.0]  # 5 %
    benchmark = RealBenchmark("test", [], variants, predictions={"lsqface": lsqface},
                              reasons={"lsqface": {2: "the solve failed"}},
                              confident_fraction=np.array([0.3, 0.2, np.nan, 0.3, 0.1]),
                              status=[("ok", ""), ("low_confidence", "little face"), None, ("ok", ""), ("ok", "")])
    np.testing.assert_allclose(benchmark.errors("lsqface"), [2.0, 30.0, 100.0, 5.0, 0.0])
    summary = benchmark.summary()
    assert list(summary) == ["0", "180", SIMILARITY]
    assert summary["0"]["lsqface"] == pytest.approx({"mean": 44.0, "median": 30.0, "failure_rate": 200 / 3, "count": 3})
    assert summary["180"]["lsqface"]["median"] == pytest.approx(5.0)
    records = benchmark.records()
    assert records[2]["lsqface"] == {"five": None, "error": 100.0, "failed": "the solve failed", "confident_fraction": None}
    assert records[0]["variant"] == "roll 0" and records[4]["variant"] == "similarity 0"
    assert records[0]["lsqface"]["confident_fraction"] == pytest.approx(0.3)
    assert (records[1]["lsqface"]["status"], records[1]["lsqface"]["status_reason"]) == ("low_confidence", "little face")
    assert real.status_lines(benchmark)[2:5] == ["- 0 deg: failed 1, low_confidence 1, ok 1", "- 180 deg: ok 1",
                                                 "- random similarity: ok 1"]
    assert benchmark.face_errors("0") == {"a": {"lsqface": pytest.approx(2.0)}, "b": {"lsqface": pytest.approx(30.0)},
                                          "c": {"lsqface": 100.0}}


def test_absent_photos_are_skipped_with_a_reason(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="does not exist"):
        real.shared_folder(tmp_path / "nowhere")
    monkeypatch.setattr(real, "insightface_folder", lambda: None)
    photos, skipped = find_photos("test", tmp_path)
    assert photos == [] and set(skipped) == {name for _, name in SPLITS["test"]}
    assert skipped["obama.jpg"] == f"not in {tmp_path}"
    assert "pip install --no-deps insightface==2.1" in skipped["Tom_Hanks_54745.png"]
    (tmp_path / "obama.jpg").write_bytes(b"")
    photos, _ = find_photos("test", tmp_path)
    assert photos == [Photo("shared", "obama.jpg", tmp_path / "obama.jpg")]
    monkeypatch.setattr(real, "shared_folder", lambda folder=None: None)
    _, skipped = find_photos("validation")
    assert "insightface" in skipped["t1.jpg"]
    with pytest.raises(DatasetError, match="validation, test"):
        find_photos("train")


def _jpeg(seed, height, width):
    """The bytes of a JPEG of random smooth colours, (height, width) pixels."""
    coarse = np.random.default_rng(seed).random((height // 10, width // 10, 3)) * 255
    buffer = io.BytesIO()
    Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _dlib_archive(path, files):
    """A .tar.gz in dlib 19.5.0's layout at ``path``: {name under examples/: bytes}, plus a file outside examples/."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {**{DLIB_EXAMPLES + name: data for name, data in files.items()},
                           "dlib-19.5.0/setup.py": b"print()\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


SALLEY, VOC, BROKEN = "johns/John_Salley/000179_02159509.jpg", "faces/2008_001009.jpg", "faces/2008_001322.jpg"


def test_dlib_photos_are_read_from_the_archive_as_pil_decodes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(real, "insightface_folder", lambda: None)
    files = {SALLEY: _jpeg(1, 150, 150), VOC: _jpeg(2, 120, 160), BROKEN: b"not a JPEG",
             "faces/training.xml": b"<dataset/>", "faces/dogs.jpg": _jpeg(3, 100, 100)}
    archive = _dlib_archive(tmp_path / "dlib-19.5.0.tar.gz", files)
    photos, skipped = find_photos("validation", dlib_examples=archive)
    assert photos == [Photo("dlib", VOC, archive), Photo("dlib", BROKEN, archive), Photo("dlib", SALLEY, archive)]
    dlib_skipped = {name: reason for name, reason in skipped.items() if "/" in name}
    assert len(dlib_skipped) == 62 and set(dlib_skipped.values()) == {f"not in {archive}"}
    assert "faces/dogs.jpg" not in skipped and "insightface" in skipped["t1.jpg"]

    # The reference sees each photo as PIL decodes its JPEG; the 2008 photo has two faces.
    seen = {}

    def reference(photo):
        seen[photo.shape] = photo
        points = np.stack([np.linspace(50, 90, 68), 60 + 15 * np.sin(np.linspace(0, 6, 68))], axis=1)
        face = ((40.0, 40.0, 60.0, 60.0), points)
        return [face] if photo.shape[0] == 150 else [face, ((60.0, 40.0, 60.0, 60.0), points + 10.0)]

    faces, variants, skipped = assemble("validation", similarity=1, reference=reference, dlib_examples=archive)
    assert [(face.name, face.photo, face.source) for face in faces] == [
        (f"{VOC}#1", VOC, "dlib"), (f"{VOC}#2", VOC, "dlib"), (SALLEY, SALLEY, "dlib")]
    assert [variant.face for variant in variants] == [f"{VOC}#1"] * 5 + [f"{VOC}#2"] * 5 + [SALLEY] * 5
    for name, shape in ((SALLEY, (150, 150, 3)), (VOC, (120, 160, 3))):
        decoded = np.asarray(Image.open(io.BytesIO(files[name])).convert("RGB"), dtype=np.float32) / 255
        np.testing.assert_array_equal(seen[shape], decoded)
    assert skipped[BROKEN].startswith(f"{BROKEN} of {archive} is not an image lsqface can read")
    assert len(skipped) == 5 + 62 + 1  # insightface's, the dlib photos not in this archive, the broken one


def test_without_the_dlib_archive_its_photos_are_skipped_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(real, "insightface_folder", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    photos, skipped = find_photos("validation")
    assert photos == []
    reasons = {reason for name, reason in skipped.items() if (("dlib", name) in SPLITS["validation"])}
    assert reasons == {f"{tmp_path / 'cache' / 'lsqface' / 'dlib-19.5.0.tar.gz'} not found; `make validation-photos` "
                       "downloads dlib 19.5.0's source distribution there (or pass --dlib-examples PATH)"}
    assert len(skipped) == 70
    with pytest.raises(DatasetError, match="dlib examples archive .* does not exist.*make validation-photos"):
        find_photos("validation", dlib_examples=tmp_path / "nowhere.tar.gz")


def test_a_corrupt_dlib_archive_is_a_one_sentence_error(tmp_path, monkeypatch):
    monkeypatch.setattr(real, "insightface_folder", lambda: None)
    whole = _dlib_archive(tmp_path / "whole.tar.gz", {SALLEY: _jpeg(1, 150, 150)}).read_bytes()
    for name, data in (("text.tar.gz", b"not an archive"), ("cut.tar.gz", whole[: len(whole) // 2])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=rf"The dlib examples archive {tmp_path / name} cannot be read \(.*\); "
                                               r"delete it and run `make validation-photos` again\.$"):
            find_photos("validation", dlib_examples=tmp_path / name)
    # The test split holds no dlib photo: it does not read the archive.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "lsqface").mkdir()
    (tmp_path / "lsqface" / "dlib-19.5.0.tar.gz").write_bytes(b"not an archive")
    find_photos("test", tmp_path)


def test_without_photos_the_benchmark_says_which_are_missing_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr(real, "insightface_folder", lambda: None)
    with pytest.raises(DatasetError, match=r"No face of the test split is present \(astronaut.png: not in"):
        real.evaluate_real(None, "test", folder=tmp_path)  # stops before any reconstruction


def test_the_shared_photos_have_one_face_each_inside_its_crop():
    """The real photos, where present: dlib finds one reference face in each shared photo tried, and
    its 68 points lie in the face's crop (so every roll keeps them in the picture)."""
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed (pip install 'lsqface[identity]')")
    folder = real.shared_folder()
    if folder is None:
        pytest.skip(f"{real.SHARED_FOLDER} is absent")
    import dlib

    from lsqface.data.images import read_image
    from lsqface.evaluate.reference import predictor_path

    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))
    for name in ("grace_hopper.jpg", "astronaut.png"):  # the two smallest photos, for speed (all six: docs/evaluation.md)
        (face,) = real.reference_faces(read_image(folder / name), detector, predictor)
        box, points = face
        assert real.inside(move_points(points, crop_matrix(box)), CROP_SIZE)
        # The box holds the eyes, the nose and the mouth.
        five = real.five_from_sixty_eight(points)
        assert np.all(five >= [box[0], box[1]]) and np.all(five <= [box[0] + box[2], box[1] + box[3]])
