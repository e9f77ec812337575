"""Backgrounds: ImageNet-layout folders, procedural fields, packaged photographs."""

import numpy as np
import pytest
import torch
from PIL import Image

from lsqface.data.backgrounds import BackgroundSampler, packaged_natural_images, procedural_background, random_crop_resize
from lsqface.errors import ImageError


def write_imagenet_layout(root):
    colours = {"n01440764": (250, 10, 10), "n01443537": (10, 250, 10)}
    for synset, colour in colours.items():
        folder = root / "train" / synset
        folder.mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (40 + 8 * k, 32), colour).save(folder / f"{synset}_{k}.JPEG", quality=95)
    return colours


def test_imagenet_layout(tmp_path):
    colours = write_imagenet_layout(tmp_path)
    sampler = BackgroundSampler(tmp_path / "train")
    assert len(sampler) == 4
    first = sampler.sample(6, 24, 32, torch.Generator().manual_seed(0))
    second = sampler.sample(6, 24, 32, torch.Generator().manual_seed(0))
    assert first.shape == (6, 3, 24, 32) and torch.equal(first, second)
    # Every background is one of the two solid colours.
    means = first.mean((2, 3)) * 255
    known = torch.tensor(list(colours.values()), dtype=torch.float32)
    distance = (means[:, None] - known[None]).abs().max(-1).values.min(-1).values
    assert (distance < 6).all()


def test_unreadable_files_skipped_then_reported(tmp_path):
    write_imagenet_layout(tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    sampler = BackgroundSampler([bad, *sorted((tmp_path / "train").rglob("*.JPEG"))])
    assert sampler.sample(8, 16, 16, torch.Generator().manual_seed(1)).shape == (8, 3, 16, 16)
    with pytest.raises(ImageError, match="not an image file"):
        BackgroundSampler([bad]).sample(1, 16, 16)


def test_decoded_photos_are_cached_within_the_bound(tmp_path, monkeypatch):
    import lsqface.data.backgrounds as backgrounds

    write_imagenet_layout(tmp_path)
    reads = []
    original = backgrounds.read_image
    monkeypatch.setattr(backgrounds, "read_image", lambda path: reads.append(path) or original(path))
    cached = BackgroundSampler(tmp_path / "train")
    first = cached.sample(16, 24, 32, torch.Generator().manual_seed(2))
    assert len(reads) == len(set(reads)) >= 3  # each file drawn decoded once (three or four of them)
    reads.clear()
    uncached = BackgroundSampler(tmp_path / "train", cache_bytes=0)
    assert torch.equal(uncached.sample(16, 24, 32, torch.Generator().manual_seed(2)), first)  # no pixel changes
    assert len(reads) == 16
    # A bound of two 32 x 40 photos keeps at most two, dropping the least recently used.
    bound = 2 * 3 * 32 * 48 * 4
    small = BackgroundSampler(tmp_path / "train", cache_bytes=bound)
    assert torch.equal(small.sample(16, 24, 32, torch.Generator().manual_seed(2)), first)
    assert 1 <= len(small._cache) <= 2 and small._cached_bytes <= bound
    assert small._cached_bytes == sum(image.numel() * 4 for image in small._cache.values())


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ImageError, match="no images"):
        BackgroundSampler(tmp_path)
    with pytest.raises(ImageError, match="does not exist"):
        BackgroundSampler(tmp_path / "missing")


def test_procedural_deterministic_and_varied():
    a = procedural_background(3, 32, 48, torch.Generator().manual_seed(5))
    b = procedural_background(3, 32, 48, torch.Generator().manual_seed(5))
    c = procedural_background(3, 32, 48, torch.Generator().manual_seed(6))
    assert a.shape == (3, 3, 32, 48) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert (a.flatten(1).std(1) > 0.03).all()  # not a flat colour
    assert (a[0] - a[1]).abs().mean() > 0.05  # images in a batch differ
    assert torch.equal(BackgroundSampler().sample(3, 32, 48, torch.Generator().manual_seed(5)), a)


def test_random_crop_resize_keeps_content():
    image = torch.zeros(3, 40, 80)
    image[0] = torch.linspace(0, 1, 80)  # red ramps left to right
    crop = random_crop_resize(image, 16, 16, torch.Generator().manual_seed(0))
    assert crop.shape == (3, 16, 16)
    assert (crop[0, :, 1:] >= crop[0, :, :-1] - 1e-6).all()  # still increasing along x
    assert crop[1:].abs().max() == 0


def test_packaged_images_from_a_package_layout(tmp_path, monkeypatch):
    # A package named like scikit-learn with its sample-image folder; found without importing it.
    folder = tmp_path / "sklearn" / "datasets" / "images"
    folder.mkdir(parents=True)
    (tmp_path / "sklearn" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(folder / "china.jpg")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = packaged_natural_images()
    assert folder / "china.jpg" in found
    assert all(path.is_file() for path in found)
    assert not any(path.name in ("astronaut.png", "grace_hopper.jpg") for path in found)


def _deb(path, pictures):
    """A Debian package (ar archive: debian-binary, control.tar.xz, data.tar.xz) holding ``pictures`` {name: array}."""
    import io
    import tarfile

    def tar(entries):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def encoded(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    members = {"debian-binary": b"2.0\n", "control.tar.xz": tar({"./control": b"Package: test\n"}),
               "data.tar.xz": tar({name: encoded(array) for name, array in pictures.items()} | {"./usr/share/doc/README": b"text"})}
    data = b"!<arch>\n"
    for name, payload in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode("ascii")
        data += header + payload + (b"\n" if len(payload) % 2 else b"")
    path.write_bytes(data)


def _picture(seed, height, width):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_collect_backgrounds_from_debian_packages_folders_and_files(tmp_path):
    from lsqface.data.backgrounds import collect_backgrounds

    wallpaper = "./usr/share/wallpapers/Autumn/contents/images/"
    (tmp_path / "debs").mkdir()
    _deb(tmp_path / "debs" / "wallpapers.deb", {
        wallpaper + "640x480.png": _picture(1, 480, 640),  # one wallpaper at three sizes: kept once, largest
        wallpaper + "1600x1200.png": _picture(2, 1200, 1600),
        wallpaper + "800x600.png": _picture(3, 600, 800),
        "./usr/share/backgrounds/field.png": _picture(4, 300, 400),
        "./usr/share/icons/logo.png": _picture(5, 64, 64),  # an icon: too small
    })
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.fromarray(_picture(6, 400, 300)).save(folder / "beach.png")
    single = tmp_path / "single.png"
    Image.fromarray(_picture(7, 256, 256)).save(single)
    out = tmp_path / "backgrounds"
    found = collect_backgrounds([tmp_path / "debs" / "wallpapers.deb", folder, single], out, max_side=512,
                                reject_faces=False, packaged=False)
    assert found == sorted(out.iterdir()) and len(found) == 4
    sizes = sorted(Image.open(path).size for path in found)
    assert sizes == [(256, 256), (300, 400), (400, 300), (512, 384)]  # 1600x1200 scaled to 512, nothing enlarged
    assert not (tmp_path / "usr").exists()  # the package is unpacked out of sight
    again = collect_backgrounds([tmp_path / "debs"], out, max_side=512, reject_faces=False, packaged=False)  # a folder of .deb files
    assert set(again) <= set(found) and len(list(out.iterdir())) == 4  # a second run adds nothing twice
    with pytest.raises(ImageError, match="neither"):
        collect_backgrounds([tmp_path / "missing"], out, reject_faces=False)
    (tmp_path / "broken.deb").write_bytes(b"not an archive")
    with pytest.raises(ImageError, match="not a Debian package"):
        collect_backgrounds([tmp_path / "broken.deb"], out, reject_faces=False)


def test_collect_backgrounds_leaves_out_pictures_with_a_face(tmp_path):
    pytest.importorskip("dlib")
    from lsqface.data.backgrounds import collect_backgrounds
    from lsqface.outputs.batch import demo_photo

    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(demo_photo()).convert("RGB").save(folder / "portrait.png")
    Image.fromarray(_picture(8, 300, 300)).save(folder / "noise.png")
    found = collect_backgrounds([folder], tmp_path / "out", packaged=False)
    assert len(found) == 1 and Image.open(found[0]).size == (300, 300)


def test_backgrounds_command_writes_the_folder_train_reads(tmp_path, capsys):
    from lsqface.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_picture(9, 300, 400)).save(folder / "sky.png")
    assert main(["backgrounds", str(folder), "-o", str(tmp_path / "out"), "--keep-faces", "--max-side", "200"]) == 0
    assert "background pictures in" in capsys.readouterr().out
    written = list((tmp_path / "out").iterdir())
    assert (200, 150) in [Image.open(path).size for path in written]
    assert BackgroundSampler(tmp_path / "out").sample(2, 16, 16, torch.Generator().manual_seed(0)).shape == (2, 3, 16, 16)


def test_collect_backgrounds_without_dlib_says_so_before_writing(tmp_path, monkeypatch):
    import importlib.util

    from lsqface.data.backgrounds import collect_backgrounds
    from lsqface.detect import DetectorError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "dlib" else real(name, *rest))
    with pytest.raises(DetectorError, match="--keep-faces"):
        collect_backgrounds([tmp_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()
