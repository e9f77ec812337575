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
