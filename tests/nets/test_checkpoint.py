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
