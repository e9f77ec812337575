import numpy as np
import torch
from PIL import Image

from lsqface.cli import main
from lsqface.lighting.sh import constant_lighting, sh_basis
from lsqface.lighting.validate import (
    fit_inverse_lighting,
    random_lighting,
    random_sphere_points,
    sphere_normal_image,
    validate_inverse_lighting,
    write_validation_picture,
)


def test_inverse_fit_equals_numpy_lstsq():
    generator = torch.Generator().manual_seed(0)
    coefficients = random_lighting(3, generator)
    points = random_sphere_points(500, generator)
    inverse = fit_inverse_lighting(coefficients, points)
    basis = sh_basis(points).numpy()
    for e in range(3):
        expected = np.linalg.lstsq(basis, 1.0 / (basis @ coefficients[e].numpy()), rcond=None)[0]
        np.testing.assert_allclose(inverse[e].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_constant_lighting_is_inverted_exactly():
    points = random_sphere_points(1000, torch.Generator().manual_seed(1))
    inverse = fit_inverse_lighting(constant_lighting(0.9)[None], points)
    torch.testing.assert_close(inverse[0], constant_lighting(1 / 0.9))


def test_random_lighting_statistics():
    coefficients = random_lighting(20000, torch.Generator().manual_seed(2))
    offset = coefficients - constant_lighting(0.9)
    assert abs(offset.std().item() - 0.2) < 0.005 and abs(offset.mean().item()) < 0.005


def test_errors_are_small_and_of_the_seeds_order():
    examples = validate_inverse_lighting(examples=4, seed=0, points=20000)
    for example in examples:
        assert 0 < example.rms_error <= example.max_error < 0.3
        assert example.rms_error < 0.06


def test_picture_and_command(tmp_path, capsys):
    examples = validate_inverse_lighting(examples=2, points=2000)
    normals, mask = sphere_normal_image(32)
    path = write_validation_picture(examples, tmp_path / "picture.png", normals, mask)
    assert Image.open(path).size[0] > 100
    assert main(["validate-lighting", "--sphere", "--examples", "2", "--points", "3000", "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "Seed max error" in printed and (tmp_path / "out" / "validate-lighting.png").is_file()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["validate-lighting.png"]
