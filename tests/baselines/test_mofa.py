"""MoFA baseline: decoder geometry and shading against the synthetic generator, training steps, phases, resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from lsqface.baselines.mofa import (
    PHASES, FaceCamera, MoFAEncoder, MoFANetworkConfig, MoFAParameters, MoFAReconstructor, decode_parameters,
    group_slices, landmark_loss, mofa_landmarks, mofa_mesh, render, rotation_from_6d,
)
from lsqface.baselines.train_mofa import (
    LOSS_LOG_NAME, MoFAMainConfig, MoFAPretrainConfig, MoFATrainConfig, MoFATrainer, loss_medians, phase_at,
    read_loss_log,
)
from lsqface.data.synthetic import SyntheticConfig, generate_faces
from lsqface.lighting.sh import constant_lighting
from lsqface.reconstruct import model_tensors
from lsqface.train.config import DataConfig

TINY_NETWORK = MoFANetworkConfig(width=0.125)


def tiny_config(**changes) -> MoFATrainConfig:
    config = MoFATrainConfig(
        input_size=32, network=TINY_NETWORK, data=DataConfig(synthetic_pool=4),
        pretrain=MoFAPretrainConfig(rotation_xy_steps=2, rotation_translation_steps=2, batch_size=2, learning_rate=1e-3),
        train=MoFAMainConfig(steps=2, batch_size=2, learning_rate=1e-3), checkpoint_every=2, log_every=1,
    )
    return dataclasses.replace(config, **changes)


def dimensions(uv_model):
    model = uv_model.model
    return model.n_identity, model.n_expression, model.n_albedo


def test_rotation_from_6d_recovers_a_rotation_from_its_first_two_columns():
    torch.manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(4, 3, 3, dtype=torch.float64))
    rotation = rotation * torch.linalg.det(rotation)[:, None, None]  # det +1
    scaled = torch.cat([2.0 * rotation[:, :, 0], rotation[:, :, 1] + 0.3 * rotation[:, :, 0]], dim=-1)
    recovered = rotation_from_6d(scaled)
    assert torch.allclose(recovered, rotation, atol=1e-12)


def test_decoder_poses_shades_and_projects_like_the_synthetic_generator(ict_uv_model):
    """The decoded mesh of a synthetic face's true parameters is that face: vertices, landmarks and rendered colours."""
    model = ict_uv_model.model
    faces = generate_faces(ict_uv_model, [11], SyntheticConfig(size=64, albedo_detail=0.0, background="none", roll_range=120.0))
    camera = FaceCamera(model, 64, MoFANetworkConfig())
    camera.intrinsics = faces.intrinsics[0]
    rotation = faces.rotation
    # The generator folds the centring into t: X -> R X + t_g; MoFA poses R (X - c) + t, so t = t_g + R c.
    translation = faces.translation + (rotation @ camera.centroid[:, None])[..., 0]
    parameters = MoFAParameters(rotation, translation, faces.identity, faces.expression, faces.albedo, faces.lighting)
    tensors = model_tensors(model, torch.float64, "cpu")
    indices = torch.as_tensor(model.landmarks_68)
    mesh = mofa_mesh(parameters, tensors, camera, indices)
    assert torch.allclose(mesh.vertices, faces.vertices, atol=1e-6)
    assert torch.allclose(mesh.landmarks_68, faces.landmarks_68.double(), atol=1e-3)
    assert torch.allclose(mofa_landmarks(parameters, tensors, camera, indices), mesh.landmarks_68, atol=1e-9)
    assert float(landmark_loss(mesh.landmarks_68, faces.landmarks_68, 64)) < 1e-5
    rendered, mask = render(mesh, tensors["triangles"], 64)
    covered = (mask[0, 0] > 0) & (faces.confidence[0, 0] > 0)
    assert int(covered.sum()) > 300
    # The generator clamps shading at 0 and colours to [0, 1]; compare where neither clamp acts.
    difference = (rendered[0].clamp(0, 1) - faces.image[0].double()).abs().amax(dim=0)[covered]
    assert float(difference.median()) < 2e-3


def test_training_step_gives_finite_gradients_for_every_parameter(ict_uv_model):
    trainer = MoFATrainer(tiny_config(), "unused", ict_uv_model)
    images, landmarks = trainer.images.batch([0, 1])
    trainer.network.train()
    total, terms = trainer.losses(images, landmarks, "full")
    assert set(terms) == {"photometric", "landmark", "statistical"}
    total.mean().backward()
    for name, parameter in trainer.network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_a_few_steps_lower_the_loss_of_a_fixed_batch(ict_uv_model):
    config = tiny_config(pretrain=MoFAPretrainConfig(0, 0, 2, 1e-3), train=MoFAMainConfig(steps=40, batch_size=2, learning_rate=3e-3))
    trainer = MoFATrainer(config, "unused", ict_uv_model)
    batch = trainer.images.batch([0, 1])

    def loss() -> float:
        trainer.network.eval()
        with torch.no_grad():
            return float(trainer.losses(*batch, "full")[0].mean())

    before = loss()
    for _ in range(30):
        result = trainer.train_step(batch)
        assert not result.skipped and result.phase == "full"
    assert loss() < 0.9 * before


@pytest.mark.parametrize("phase", ["rotation_xy", "rotation_translation"])
def test_pretraining_phases_fix_what_the_seed_fixes(ict_uv_model, phase):
    """Seed P: rotation and xy translation first, then the full translation; 3DMM and lighting fixed in both."""
    sizes = dimensions(ict_uv_model)
    torch.manual_seed(0)
    encoder = MoFAEncoder(TINY_NETWORK, *sizes)
    camera = FaceCamera(ict_uv_model.model, 32, TINY_NETWORK)
    images = torch.rand(2, 3, 32, 32)
    raw = encoder(images) * 50.0  # large outputs, so a group left free would move visibly
    parameters = decode_parameters(raw, camera, sizes, phase)
    objective = sum(getattr(parameters, item.name).square().sum() for item in dataclasses.fields(parameters))
    objective.backward()
    slices = group_slices(*sizes)
    head = encoder.head.weight.grad
    for group, rows in slices.items():
        moved = float(head[rows].abs().sum())
        if group in PHASES[phase]:
            assert moved > 0, group
        else:
            assert moved == 0.0, group
    assert torch.equal(parameters.identity, torch.zeros_like(parameters.identity))
    assert torch.equal(parameters.expression, torch.zeros_like(parameters.expression))
    assert torch.equal(parameters.albedo, torch.zeros_like(parameters.albedo))
    assert torch.allclose(parameters.lighting, constant_lighting(0.9, dtype=torch.float32).expand(2, 3, 9))
    depth_fixed = torch.allclose(parameters.translation[:, 2], torch.full((2,), camera.default_distance))
    assert depth_fixed == (phase == "rotation_xy")


def test_phases_follow_the_step_counts():
    config = tiny_config(pretrain=MoFAPretrainConfig(3, 5, 2, 1e-3), train=MoFAMainConfig(steps=4))
    phases = [phase_at(config, step) for step in range(config.total_steps)]
    assert phases == ["rotation_xy"] * 3 + ["rotation_translation"] * 5 + ["full"] * 4


def test_augmentations_move_the_landmarks_with_the_face(ict_uv_model):
    """Shift keeps shapes (landmark differences equal), similarity keeps ratios of distances."""
    from lsqface.baselines.train_mofa import MoFAImages

    positions = [0, 1, 2]
    plain = MoFAImages(tiny_config(augmentation="none"), ict_uv_model).batch(positions)[1].double()
    shifted = MoFAImages(tiny_config(augmentation="shift"), ict_uv_model).batch(positions)[1].double()
    moved = MoFAImages(tiny_config(augmentation="similarity"), ict_uv_model).batch(positions)[1].double()
    offsets = shifted - plain
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-3)
    assert offsets.abs().amax() > 0.1

    def distances(points):
        return torch.cdist(points, points)

    ratio = distances(moved)[:, 0, 1:] / distances(plain)[:, 0, 1:]
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-3)


def test_resume_is_exact_and_the_loss_log_ends_at_the_checkpoint(tmp_path, ict_uv_model):
    config = tiny_config()
    straight = MoFATrainer(config, tmp_path / "straight", ict_uv_model)
    straight.run(progress=False)
    straight.close()

    first = MoFATrainer(config, tmp_path / "resumed", ict_uv_model)
    first.run(until=3, progress=False)  # checkpoint_every 2: last.pt at 2 and at the end (3)
    first.close()
    second = MoFATrainer(config, tmp_path / "resumed", ict_uv_model)
    second.resume()
    assert second.step == 3
    second.run(progress=False)
    second.close()
    for name, value in straight.network.state_dict().items():
        assert torch.equal(value, second.network.state_dict()[name]), name
    straight_log = read_loss_log(tmp_path / "straight" / LOSS_LOG_NAME)
    resumed_log = read_loss_log(tmp_path / "resumed" / LOSS_LOG_NAME)
    assert [r["step"] for r in resumed_log] == list(range(1, config.total_steps + 1))
    # Wall times differ; everything else (losses of every step) is identical.
    for record in straight_log + resumed_log:
        assert record.pop("seconds") >= 0
    assert resumed_log == straight_log
    assert [r["phase"] for r in straight_log] == ["rotation_xy"] * 2 + ["rotation_translation"] * 2 + ["full"] * 2


def test_checkpoint_evaluates_through_the_reconstructor(tmp_path, ict_uv_model):
    trainer = MoFATrainer(tiny_config(), tmp_path, ict_uv_model)
    path = trainer.save()
    reconstructor = MoFAReconstructor.from_checkpoint(path, uv_model=ict_uv_model)
    faces = generate_faces(ict_uv_model, [3, 4], SyntheticConfig(size=64))
    images = [image.permute(1, 2, 0).numpy() for image in faces.image]
    result = reconstructor(images)
    # Independent: the mesh of the framed input in the network's frame, mapped back by the inverse framing.
    _, mesh = reconstructor.decode(result.network_image)
    five = mesh.vertices[:, torch.as_tensor(ict_uv_model.model.landmarks_5)].mean(dim=-2)
    projected = five @ reconstructor.camera.intrinsics.T
    network_points = torch.cat([projected[..., :2] / projected[..., 2:3], torch.ones(2, 5, 1, dtype=torch.float64)], dim=-1)
    expected = network_points @ torch.linalg.inv(result.to_network).transpose(1, 2)
    assert torch.allclose(result.landmarks_5, expected[..., :2], atol=1e-6)
    assert result.correspondence.shape == (2, 2, 32, 32) and result.rotation.shape == (2, 3, 3)
    assert torch.allclose(result.rotation @ result.rotation.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3), atol=1e-9)


def test_loss_medians_are_medians_of_each_window():
    rng = np.random.default_rng(0)
    values = rng.random(250)
    records = [{"step": k + 1, "landmark": float(values[k])} for k in range(250)]
    records[10]["landmark"] = float("nan")
    steps, medians = loss_medians(records, "landmark", window=100)
    assert steps.tolist() == [100, 200, 300]
    expected = [np.median(np.delete(values[:100], 10)), np.median(values[100:200]), np.median(values[200:])]
    assert np.allclose(medians, expected)


def test_train_mofa_command_writes_a_checkpoint_and_a_loss_log(tmp_path, run_cli):
    config = tmp_path / "mofa.toml"
    config.write_text(
        'input_size = 32\naugmentation = "shift"\ncheckpoint_every = 2\n[network]\nwidth = 0.125\n'
        "[data]\nsynthetic_pool = 4\n[pretrain]\nrotation_xy_steps = 1\nrotation_translation_steps = 1\nbatch_size = 2\n"
        "[train]\nsteps = 1\nbatch_size = 2\n[losses]\nlandmark_weight = 0.0\n"
    )
    run_dir = tmp_path / "run"
    assert run_cli(["train-mofa", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    log = [json.loads(line) for line in (run_dir / LOSS_LOG_NAME).read_text().splitlines()]
    assert [record["phase"] for record in log] == ["rotation_xy", "rotation_translation", "full"]
    assert set(log[-1]) >= {"photometric", "landmark", "statistical"}
    # The main phase's total leaves the landmark term out when its weight is 0.
    assert log[-1]["loss"] == pytest.approx(log[-1]["photometric"] + log[-1]["statistical"], rel=1e-5)
    assert (run_dir / "last.pt").is_file() and (run_dir / "tensorboard").is_dir()
    assert run_cli(["train-mofa", "--config", str(config), "--run-dir", str(run_dir), "--resume", "--quiet"]) == 0


def test_ctrl_c_writes_a_checkpoint_of_the_last_completed_step(tmp_path, ict_uv_model):
    config = tiny_config(checkpoint_every=100, image_every=1)

    def interrupt(trainer, result):
        if result.step == 5:
            raise KeyboardInterrupt

    trainer = MoFATrainer(config, tmp_path, ict_uv_model)
    summary = trainer.run(progress=False, callback=interrupt)
    trainer.close()
    assert summary["interrupted"] and summary["step"] == 5
    resumed = MoFATrainer(config, tmp_path, ict_uv_model)
    resumed.resume()
    assert resumed.step == 5 and [r["step"] for r in resumed.records] == [1, 2, 3, 4, 5]
    for name, value in trainer.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[name]), name
    assert any(path.name.startswith("events") for path in (tmp_path / "tensorboard").iterdir())


def test_vgg19_like_encoder_has_sixteen_convolutions_and_runs(ict_uv_model):
    sizes = dimensions(ict_uv_model)
    encoder = MoFAEncoder(MoFANetworkConfig(encoder="vgg19-like", width=0.0625), *sizes)
    convolutions = [module for module in encoder.modules() if isinstance(module, torch.nn.Conv2d)]
    assert len(convolutions) == 16
    assert [c.out_channels for c in convolutions] == [4, 4, 8, 8] + [16] * 4 + [32] * 8
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, sum(sizes) + 6 + 3 + 27)
