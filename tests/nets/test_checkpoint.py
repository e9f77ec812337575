import pytest
import torch

from lsqface.errors import CheckpointError
from lsqface.nets.checkpoint import config_dict, load_checkpoint, network_from_checkpoint, save_checkpoint
from lsqface.nets.unet import UNet, UNetConfig

CONFIG = UNetConfig(variant="narrow", width=0.125)


def _write(path, config=CONFIG, state=None):
    network = UNet(config)
    contents = {"network_config": config_dict(config), "input_size": 32, "network_state": state or network.state_dict()}
    save_checkpoint(path, contents)
    return network


def test_round_trip_gives_the_same_network(tmp_path):
    network = _write(tmp_path / "a.pt")
    loaded = network_from_checkpoint(load_checkpoint(tmp_path / "a.pt"))
    network.eval(), loaded.eval()
    image = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(image).logits, network(image).logits)


def test_missing_cut_short_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    _write(tmp_path / "a.pt")
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut short"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an lsqface checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_weights_of_another_model_are_refused(tmp_path):
    other = UNet(UNetConfig(variant="narrow", width=0.25)).state_dict()
    _write(tmp_path / "mixed.pt", state=other)
    with pytest.raises(CheckpointError, match="another network"):
        network_from_checkpoint(load_checkpoint(tmp_path / "mixed.pt"), tmp_path / "mixed.pt")


def test_a_mofa_baseline_checkpoint_is_named_as_such(tmp_path):
    save_checkpoint(tmp_path / "mofa.pt", {"kind": "mofa", "network_config": {}, "input_size": 64, "network_state": {}})
    with pytest.raises(CheckpointError, match="MoFA baseline"):
        network_from_checkpoint(load_checkpoint(tmp_path / "mofa.pt"), tmp_path / "mofa.pt")


def test_a_small_file_asking_for_a_huge_network_is_refused_before_allocating(tmp_path):
    import lsqface.nets.checkpoint as checkpoint

    small = UNet(CONFIG).state_dict()
    built = []

    class Recorded(UNet):
        def __init__(self, config):
            built.append(torch.empty(0).device.type)  # the default device while it is built
            super().__init__(config)

    for width, fragment in ((2.0, "another network than its config"), (8.0, "more than 200,000,000")):
        save_checkpoint(tmp_path / "wide.pt", {"network_config": {**config_dict(CONFIG), "width": width},
                                               "input_size": 32, "network_state": small})
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(checkpoint, "UNet", Recorded)
            with pytest.raises(CheckpointError, match=fragment):
                network_from_checkpoint(load_checkpoint(tmp_path / "wide.pt"))
    assert built == ["meta", "meta"]  # laid out without memory, never built


@pytest.mark.parametrize("change, fragment", [
    ({"input_size": 10**9}, "input_size"),
    ({"network_config": {**config_dict(CONFIG), "width": 1e6}}, "network_config.width"),
    ({"solver_config": {"robust_iterations": 10**9}}, "solver_config.robust_iterations"),
    ({"solver_config": {"robust_scale": float("nan")}}, "solver_config.robust_scale"),
    ({"reconstruct_config": {"refine_passes": 1000}}, "reconstruct_config.refine_passes"),
    ({"input_size": "big"}, "input_size"),
])
def test_out_of_range_settings_are_refused(tmp_path, change, fragment):
    contents = {"network_config": config_dict(CONFIG), "input_size": 32, "network_state": UNet(CONFIG).state_dict()}
    save_checkpoint(tmp_path / "a.pt", {**contents, **change})
    with pytest.raises(CheckpointError, match=fragment.replace(".", r"\.")):
        load_checkpoint(tmp_path / "a.pt")


def test_nan_weights_are_refused(tmp_path):
    state = UNet(CONFIG).state_dict()
    next(iter(state.values())).view(-1)[0] = float("nan")
    _write(tmp_path / "nan.pt", state=state)
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        network_from_checkpoint(load_checkpoint(tmp_path / "nan.pt"))


def test_export_average_is_the_mean_of_the_weights_of_one_runs_checkpoints(tmp_path, capsys):
    from lsqface.cli import main

    networks = []
    for number in range(3):
        torch.manual_seed(number)
        network = UNet(CONFIG)
        for buffer in network.buffers():  # batch-norm statistics differ too; counters differ by checkpoint
            buffer.add_(number + 1) if buffer.is_floating_point() else buffer.fill_(10 * number)
        contents = {"network_config": config_dict(CONFIG), "input_size": 32, "network_state": network.state_dict(),
                    "training": {"step": 500 * (number + 1)}}
        save_checkpoint(tmp_path / f"{number}.pt", contents)
        networks.append(network)
    output = tmp_path / "averaged.pt"
    assert main(["export", str(tmp_path / "2.pt"), "-o", str(output), "--average", str(tmp_path / "0.pt"),
                 str(tmp_path / "1.pt")]) == 0
    averaged = load_checkpoint(output)
    states = [network.state_dict() for network in networks]
    for key, tensor in averaged["network_state"].items():
        if tensor.is_floating_point():
            expected = (states[0][key].double() + states[1][key].double() + states[2][key].double()) / 3
            torch.testing.assert_close(tensor, expected.float(), rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(tensor, states[2][key])  # the first-named checkpoint's counters
    assert averaged["metadata"]["averaged_steps"] == [1500, 500, 1000]
    assert averaged["metadata"]["training_step"] == 1500
    network_from_checkpoint(averaged)  # loads as any export does
    # Another network (or input size) is refused in one line, and nothing is written.
    _write(tmp_path / "wider.pt", config=UNetConfig(variant="narrow", width=0.25))
    capsys.readouterr()
    assert main(["export", str(tmp_path / "0.pt"), "-o", str(tmp_path / "never.pt"), "--average",
                 str(tmp_path / "wider.pt")]) == 2
    error = capsys.readouterr().err.strip()
    assert "another network or input size" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "never.pt").exists()
