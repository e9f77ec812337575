"""The training loop: finite gradients through the solve, learning, exact resume, refusals, skips."""

import dataclasses

import numpy as np
import pytest
import torch

from lsqface.errors import CheckpointError
from lsqface.nets.unet import UNetConfig
from lsqface.train.config import load_train_config
from lsqface.train.config import MainTrainConfig
from lsqface.train.trainer import Trainer, learning_rate_factor
from tests.conftest import REPOSITORY_ROOT

TINY = REPOSITORY_ROOT / "configs" / "tiny.toml"


@pytest.fixture(scope="module")
def tiny():
    return load_train_config(TINY)


@pytest.fixture(scope="module")
def fixed_batch(ict_uv_model, tiny):
    from lsqface.train.data import TrainingImages

    images, _ = TrainingImages(tiny.data, tiny.input_size, ict_uv_model, seed=5).images([0, 1])
    return images


def _parameters(trainer):
    return {name: value.detach().clone() for name, value in trainer.network.named_parameters()}


def _assert_resume_reaches(finished, config, run_dir, uv_model):
    """Run ``config`` again in ``run_dir``, stop it with Ctrl-C after one step, resume it in a fresh
    trainer, and check that it ends with exactly the parameters of the uninterrupted run ``finished``."""

    def interrupt(trainer, result):
        raise KeyboardInterrupt

    first = Trainer(config, "train", run_dir, uv_model)
    assert first.run(progress=False, callback=interrupt).step == 1
    second = Trainer(config, "train", run_dir, uv_model)
    second.resume()
    second.run(progress=False)
    for name, value in _parameters(finished).items():
        assert torch.equal(value, _parameters(second)[name]), name


def _fixed_loss(trainer, images):
    with torch.no_grad():
        loss, _, _ = trainer.losses(images, torch.eye(2, 3).expand(images.shape[0], 2, 3), torch.Generator().manual_seed(0))
    return float(loss)


@pytest.mark.parametrize("stage", ["pretrain", "train"])
def test_step_gives_finite_gradients_to_every_parameter(stage, ict_uv_model, tiny, fixed_batch, tmp_path):
    trainer = Trainer(tiny, stage, tmp_path, ict_uv_model)
    before = _fixed_loss(trainer, fixed_batch)
    result = trainer.train_step([fixed_batch])
    assert not result.skipped and result.loss == pytest.approx(before, rel=1e-5)
    for name, parameter in trainer.network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_pretraining_lowers_a_fixed_batch_loss(ict_uv_model, tiny, fixed_batch, tmp_path):
    trainer = Trainer(tiny, "pretrain", tmp_path, ict_uv_model)
    before = _fixed_loss(trainer, fixed_batch)
    for _ in range(5):
        trainer.train_step([fixed_batch])
    assert _fixed_loss(trainer, fixed_batch) < 0.97 * before


def test_unsupervised_gradient_through_the_solve_is_a_descent_direction(ict_uv_model, tiny, fixed_batch, tmp_path):
    """A small step against the gradient lowers the fixed-batch loss by about step x |gradient|.

    Adam's first steps move every parameter by the learning rate whatever its gradient, which on
    this tiny, sharp problem is no test of the gradient; the first-order prediction is.
    Batch norm is in eval mode so the loss is a fixed function of the parameters.
    """
    trainer = Trainer(dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, camera_centre_steps=0)), "train",
                      tmp_path, ict_uv_model)
    trainer.network.eval()
    generator_seed = 0

    def loss():
        value, _, _ = trainer.losses(fixed_batch, None, torch.Generator().manual_seed(generator_seed))
        return value

    value = loss()
    value.backward()
    parameters = list(trainer.network.parameters())
    gradient = [parameter.grad.clone() for parameter in parameters]
    norm = float(torch.sqrt(sum(g.square().sum() for g in gradient)))
    assert norm > 0
    step = 1e-4
    with torch.no_grad():
        for parameter, g in zip(parameters, gradient):
            parameter -= step * g / norm
        lowered = float(loss())
    decrease = float(value.detach()) - lowered
    assert 0.5 * step * norm < decrease < 1.5 * step * norm


def test_interrupt_then_resume_is_bit_identical(ict_uv_model, tiny, tmp_path):
    config = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, steps=3, camera_centre_steps=1), checkpoint_every=100)
    straight = Trainer(config, "train", tmp_path / "straight", ict_uv_model)
    straight.run(progress=False)

    def interrupt(trainer, result):
        if trainer.step == 2:
            raise KeyboardInterrupt

    first = Trainer(config, "train", tmp_path / "resumed", ict_uv_model)
    summary = first.run(progress=False, callback=interrupt)
    assert summary.interrupted and summary.step == 2 and summary.checkpoint.is_file()
    # A fresh process would build a new trainer (other initial weights) and resume.
    second = Trainer(dataclasses.replace(config, seed=config.seed), "train", tmp_path / "resumed", ict_uv_model)
    torch.manual_seed(123)
    second.resume()
    assert second.step == 2
    second.run(progress=False)
    for name, value in _parameters(straight).items():
        assert torch.equal(value, _parameters(second)[name]), name
    assert torch.equal(straight.adaptive.weight, second.adaptive.weight)
    assert torch.equal(straight.adaptive.mean_square, second.adaptive.mean_square)


def test_bad_checkpoints_are_refused(ict_uv_model, tiny, tmp_path):
    trainer = Trainer(tiny, "pretrain", tmp_path / "run", ict_uv_model)
    path = trainer.save()
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut short"):
        trainer.resume(cut)
    other = dataclasses.replace(tiny, network=UNetConfig(variant="narrow", width=0.25))
    with pytest.raises(CheckpointError, match="another model"):
        Trainer(other, "pretrain", tmp_path / "other", ict_uv_model).resume(path)
    with pytest.raises(CheckpointError, match="'pretrain' stage"):
        Trainer(tiny, "train", tmp_path / "train", ict_uv_model).resume(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.resume(tmp_path / "missing.pt")


def test_non_finite_batch_is_skipped_and_never_written(ict_uv_model, tiny, fixed_batch, tmp_path):
    trainer = Trainer(tiny, "train", tmp_path, ict_uv_model)
    path = trainer.save()
    good = path.read_bytes()
    before = _parameters(trainer)
    poisoned = fixed_batch.clone()
    poisoned[0, :, 3, 3] = float("nan")
    result = trainer.train_step([poisoned])
    assert result.skipped and trainer.skipped == 1 and trainer.step == 1
    for name, value in _parameters(trainer).items():
        assert torch.equal(value, before[name]), name
    # A network that went non-finite is never written over the last good checkpoint.
    with torch.no_grad():
        next(trainer.network.parameters()).fill_(float("nan"))
    assert trainer.save() is None
    assert path.read_bytes() == good


@pytest.fixture(scope="module")
def true_maps_setup(ict_uv_model, tiny):
    from lsqface.train.data import TrainingImages

    config = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, supervision="true_maps", learning_rate=1e-3))
    images, maps = TrainingImages(config.data, config.input_size, ict_uv_model, seed=5).images_and_true_maps([0, 1])
    return config, images, maps


def test_true_maps_come_with_the_same_images(ict_uv_model, tiny, true_maps_setup):
    from lsqface.train.data import TrainingImages

    config, images, maps = true_maps_setup
    plain, _ = TrainingImages(config.data, config.input_size, ict_uv_model, seed=5).images([0, 1])
    assert torch.equal(images, plain)
    face = maps["confidence"] > 0.5
    assert face.any() and (maps["depth"][face] > 0).all() and (maps["depth"][~face] == 0).all()


def test_true_maps_supervision_steps_with_finite_gradients_and_lowers_a_fixed_batch_loss(ict_uv_model, true_maps_setup, tmp_path):
    config, images, maps = true_maps_setup
    trainer = Trainer(config, "train", tmp_path, ict_uv_model)

    def fixed_loss():
        with torch.no_grad():
            loss, terms, statistics = trainer.losses(images, None, None, maps)
        assert statistics is None and set(terms) == {"correspondence", "depth", "confidence"}
        return float(loss)

    before = fixed_loss()
    adaptive_before = trainer.adaptive.weight.clone()
    result = trainer.train_step([images], [maps])
    assert not result.skipped and result.loss == pytest.approx(before, rel=1e-5)
    for name, parameter in trainer.network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    for _ in range(5):
        trainer.train_step([images], [maps])
    assert fixed_loss() < 0.97 * before
    # No solve, so the adaptive regularisation is left alone.
    assert torch.equal(trainer.adaptive.weight, adaptive_before)


def test_true_maps_carry_the_coefficients_of_the_rendered_face(ict_uv_model, true_maps_setup):
    from lsqface.evaluate.metrics import vertex_error

    config, images, maps = true_maps_setup
    model = ict_uv_model.model
    assert maps["shape"].shape == (2, model.n_shape)
    # They are the generator's own coefficients of each face, and they rebuild its posed vertices.
    from lsqface.data.synthetic import generate_faces
    from lsqface.train.data import position_generator, synthetic_config

    seeds = [int(position_generator(5, position, "train").initial_seed() % (1 << 31)) for position in (0, 1)]
    faces = generate_faces(ict_uv_model, seeds, synthetic_config(config.data, config.input_size))
    assert torch.equal(maps["shape"], torch.cat([faces.identity, faces.expression], dim=1).float())
    coefficients = maps["shape"].double().numpy()
    shapes = torch.as_tensor(np.stack([model.shape(c[:model.n_identity], c[model.n_identity:]) for c in coefficients]))
    rotation, translation = faces.rotation.double(), faces.translation.double()
    camera = faces.vertices.double()
    model_frame = torch.einsum("bij,bvj->bvi", rotation.transpose(1, 2), camera - translation[:, None])
    assert vertex_error(shapes, model_frame).max() < 1e-3
    assert torch.equal(maps["landmarks_5"], faces.landmarks_5)
    assert torch.equal(maps["rotation"], faces.rotation.float())


def test_the_fit_of_true_maps_lands_on_the_true_landmarks_and_rotation(ict_uv_model, true_maps_setup):
    # The generator's pixels and the solver's pixels are one convention: the least-squares layer on
    # a face's true maps puts the fitted landmarks where the generator put the true ones.
    from lsqface.solver.fit import SolverConfig, fit_geometry
    from lsqface.train.losses import true_landmark_loss, true_rotation_loss
    from lsqface.reconstruct import model_tensors

    config, images, maps = true_maps_setup
    result = fit_geometry(ict_uv_model, images, maps["correspondence"], maps["depth"], maps["confidence"].expand(-1, 2, -1, -1),
                          SolverConfig(sample_count=4000, shape_weight=1e-3), torch.Generator().manual_seed(0))
    tensors = model_tensors(ict_uv_model.model, torch.float64, "cpu")
    rows = torch.as_tensor(ict_uv_model.model.landmarks_5)
    error = true_landmark_loss(tensors["shape_mean"], tensors["shape_basis"], rows, result, maps["landmarks_5"])
    assert error.max() < 2.0, error
    # The carried rotation is the fitted camera's convention (model to camera): the fit of true maps
    # recovers it within a degree.
    assert true_rotation_loss(result.rotation, maps["rotation"]).max() < 1.0


@pytest.mark.parametrize("weight_name, term, weight", [("true_shape_weight", "shape", 0.01),
                                                       ("true_landmark_weight", "landmarks", 0.02),
                                                       ("true_rotation_weight", "rotation", 0.01)])
def test_fit_terms_train_the_maps_through_the_solve(ict_uv_model, true_maps_setup, tmp_path, weight_name, term, weight):
    config, images, maps = true_maps_setup
    config = dataclasses.replace(config, losses=dataclasses.replace(config.losses, **{weight_name: weight}),
                                 solver=dataclasses.replace(config.solver, sample_count=200))
    trainer = Trainer(config, "train", tmp_path, ict_uv_model)
    with torch.no_grad():
        loss, terms, _ = trainer.losses(images, None, torch.Generator().manual_seed(0), maps)
    assert set(terms) == {"correspondence", "depth", "confidence", term}
    assert (terms[term] > 0).all()
    maps_only = terms["correspondence"] + terms["depth"] + 0.1 * terms["confidence"]
    assert float(loss) == pytest.approx(float((maps_only + weight * terms[term]).mean()), rel=1e-5)
    result = trainer.train_step([images], [maps])
    assert not result.skipped and term in result.terms
    grads = [p.grad for p in trainer.network.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("weight_name, cap_name, term", [("true_landmark_weight", "true_landmark_cap", "landmarks"),
                                                          ("true_rotation_weight", "true_rotation_cap", "rotation")])
def test_a_fit_term_is_capped_per_face(ict_uv_model, true_maps_setup, tmp_path, weight_name, cap_name, term):
    config, images, maps = true_maps_setup
    losses = dataclasses.replace(config.losses, **{weight_name: 0.02, cap_name: 1e-3})
    config = dataclasses.replace(config, losses=losses, solver=dataclasses.replace(config.solver, sample_count=200))
    # A face past the cap adds its cap and no gradient.
    capped_trainer = Trainer(config, "train", tmp_path, ict_uv_model)
    capped_terms = capped_trainer.losses(images, None, None, maps)[1]
    assert torch.equal(capped_terms[term].detach(), torch.full((2,), 1e-3))
    capped_terms[term].sum().backward()
    assert all((p.grad is None or not p.grad.any()) for p in capped_trainer.network.parameters())


def test_true_rotation_term_is_the_fitted_cameras_angle_from_the_true_one(ict_uv_model, true_maps_setup, tmp_path):
    from lsqface.reconstruct import network_input
    from lsqface.solver.fit import fit_geometry
    from lsqface.train.losses import true_rotation_loss

    config, images, maps = true_maps_setup
    assert maps["rotation"].shape == (2, 3, 3)
    config = dataclasses.replace(config, losses=dataclasses.replace(config.losses, true_rotation_weight=0.01),
                                 solver=dataclasses.replace(config.solver, sample_count=200))
    trainer = Trainer(config, "train", tmp_path, ict_uv_model)
    with torch.no_grad():
        terms = trainer.losses(images, None, torch.Generator().manual_seed(0), maps)[1]
        network_maps = trainer.model(network_input(images, config.solver.softplus_eps))
        result = fit_geometry(ict_uv_model, images, network_maps.correspondence, network_maps.depth,
                              network_maps.confidence, config.solver, torch.Generator().manual_seed(0))
    expected = true_rotation_loss(result.rotation, maps["rotation"]).clamp_max(90.0)
    assert torch.allclose(terms["rotation"], expected.to(terms["rotation"].dtype), rtol=1e-4)


def test_true_maps_run_draws_its_own_maps_and_resumes(ict_uv_model, true_maps_setup, tmp_path):
    config, _, _ = true_maps_setup
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=2), checkpoint_every=100)
    straight = Trainer(config, "train", tmp_path / "straight", ict_uv_model)
    straight.run(progress=False)
    _assert_resume_reaches(straight, config, tmp_path / "resumed", ict_uv_model)


def test_cosine_schedule_warms_up_then_falls_to_the_final_fraction():
    section = MainTrainConfig(steps=1000, learning_rate_decay="cosine", final_learning_rate_fraction=0.05)
    factor = learning_rate_factor(section)
    warmup = 50  # min(100, steps / 20)
    assert factor(0) == pytest.approx(1 / warmup) and factor(warmup - 1) == pytest.approx(1.0)
    assert factor(warmup) == pytest.approx(1.0)
    # Half-way through the decay the cosine is at the mean of 1 and the final fraction.
    assert factor(warmup + (1000 - warmup) // 2) == pytest.approx(0.525, abs=2e-3)
    assert factor(999) == pytest.approx(0.05, abs=1e-4)
    values = [factor(step) for step in range(warmup, 1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    constant = learning_rate_factor(MainTrainConfig(steps=1000))
    assert constant(999) == 1.0 and constant(0) == pytest.approx(1 / warmup)


def test_two_fresh_runs_of_one_config_are_bit_identical_and_another_seed_is_not(ict_uv_model, true_maps_setup, tmp_path):
    # What the default model's reproducibility rests on: on one machine, `lsqface train --config
    # configs/default.toml` from nothing gives the same weights; --seed gives an independent run.
    config, _, _ = true_maps_setup
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=3, learning_rate_decay="cosine"),
                                 checkpoint_every=100)
    runs = []
    for name, seed in (("first", 0), ("second", 0), ("other", 1)):
        torch.manual_seed(1000 + len(runs))  # global state the run must not depend on
        trainer = Trainer(dataclasses.replace(config, seed=seed), "train", tmp_path / name, ict_uv_model)
        trainer.run(progress=False)
        runs.append(_parameters(trainer))
    first, second, other = runs
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
    assert any(not torch.equal(value, other[name]) for name, value in first.items())


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, ict_uv_model):
    """Six unlabelled 'photos' (synthetic renderings written as PNG files: no truth travels with them)."""
    from PIL import Image

    from lsqface.data.synthetic import SyntheticConfig, generate_faces

    folder = tmp_path_factory.mktemp("photos")
    faces = generate_faces(ict_uv_model, list(range(50, 56)), SyntheticConfig(size=48, roll_range=0.0))
    for index, image in enumerate(faces.image):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"face{index}.png")
    return folder


def test_mixed_supervision_adds_an_unsupervised_photo_batch_and_resumes(ict_uv_model, true_maps_setup, photo_folder, tmp_path):
    config, _, _ = true_maps_setup
    config = dataclasses.replace(
        config, checkpoint_every=100,
        data=dataclasses.replace(config.data, photos=str(photo_folder)),
        train=dataclasses.replace(config.train, supervision="mixed", steps=2, photo_batch_size=2, photo_weight=0.5))
    trainer = Trainer(config, "train", tmp_path / "straight", ict_uv_model)
    before = trainer.adaptive.mean_square.clone()
    result = trainer.train_step()
    assert not result.skipped and np.isfinite(result.loss)
    # Both supervisions in one step: the true-map terms and the photos' photometric loss through the fit.
    assert {"correspondence", "photo_photometric", "photo_statistical"} <= set(result.terms)
    assert not torch.equal(trainer.adaptive.mean_square, before)  # photos drive the adaptive weights
    trainer.run(progress=False)
    _assert_resume_reaches(trainer, config, tmp_path / "resumed", ict_uv_model)


def test_mixed_supervision_needs_photos(ict_uv_model, tiny, tmp_path):
    from lsqface.errors import ConfigError

    config = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, supervision="mixed"))
    with pytest.raises(ConfigError, match="data.photos"):
        Trainer(config, "train", tmp_path, ict_uv_model)


def test_a_stage_stopped_early_keeps_its_schedule_and_evaluates_only_at_its_end(ict_uv_model, tiny, tmp_path):
    from lsqface.train.trainer import run_stage

    config = dataclasses.replace(tiny, evaluate_count=2, checkpoint_every=100)
    early = run_stage(config, "train", tmp_path / "run", uv_model=ict_uv_model, progress=False, until=2)
    assert early.step == 2 and not (tmp_path / "run" / "evaluation.json").exists()
    finished = run_stage(config, "train", tmp_path / "run", uv_model=ict_uv_model, progress=False, resume=True)
    assert finished.step == config.train.steps and (tmp_path / "run" / "evaluation.json").exists()
    straight = run_stage(config, "train", tmp_path / "straight", uv_model=ict_uv_model, progress=False)
    from lsqface.nets.checkpoint import load_checkpoint

    first = load_checkpoint(tmp_path / "run" / "last.pt")["network_state"]
    second = load_checkpoint(tmp_path / "straight" / "last.pt")["network_state"]
    assert straight.step == finished.step and all(torch.equal(first[name], second[name]) for name in first)


def test_init_starts_a_stage_at_another_input_size_or_width_but_not_another_network(ict_uv_model, tiny, tmp_path,
                                                                                   monkeypatch):
    import lsqface.train.trainer as trainer_module
    from lsqface.nets.checkpoint import load_checkpoint, network_from_checkpoint
    from lsqface.nets.unet import UNet
    from lsqface.train.trainer import run_stage

    config = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, steps=1), checkpoint_every=1)
    run_stage(config, "train", tmp_path / "small", uv_model=ict_uv_model, progress=False)
    start = tmp_path / "small" / "last.pt"
    larger = dataclasses.replace(config, input_size=config.input_size + 16)
    # The U-Net is fully convolutional: the same weights start a stage at a larger input.
    weights = load_checkpoint(start)["network_state"]
    trainer = Trainer(larger, "train", tmp_path / "unused", ict_uv_model, initial_network=weights)
    assert all(torch.equal(value, trainer.network.state_dict()[name]) for name, value in weights.items())
    summary = run_stage(larger, "train", tmp_path / "large", uv_model=ict_uv_model, progress=False, init=start)
    assert summary.step == 1 and load_checkpoint(tmp_path / "large" / "last.pt")["input_size"] == larger.input_size
    narrower = dataclasses.replace(config.network, width=config.network.width / 2)
    other = dataclasses.replace(config, network=narrower)
    with pytest.raises(CheckpointError, match="another network.*only wider"):
        run_stage(other, "train", tmp_path / "other", uv_model=ict_uv_model, progress=False, init=start)
    # A wider network of the same layout starts grown from the checkpoint: the trainer starts from weights
    # whose maps are the checkpoint network's.
    started = []

    class Recording(Trainer):
        def __init__(self, *args, initial_network=None, **kwargs):
            started.append(initial_network)
            super().__init__(*args, initial_network=initial_network, **kwargs)

    monkeypatch.setattr(trainer_module, "Trainer", Recording)
    wider = dataclasses.replace(config, network=dataclasses.replace(config.network, width=config.network.width * 2))
    summary = run_stage(wider, "train", tmp_path / "wide", uv_model=ict_uv_model, progress=False, init=start)
    grown = load_checkpoint(tmp_path / "wide" / "last.pt")
    assert summary.step == 1 and grown["network_config"] == dataclasses.asdict(wider.network)
    narrow = network_from_checkpoint(load_checkpoint(start), start).eval()
    wide = UNet(wider.network)
    wide.load_state_dict(started[0])
    image = torch.rand(2, 3, config.input_size, config.input_size)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(image).logits, narrow(image).logits, rtol=1e-5, atol=1e-6)
