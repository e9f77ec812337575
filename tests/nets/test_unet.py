"""The U-Net against the seed's channel table (seed N)."""

import pytest
import torch

from lsqface.errors import ConfigError, ImageError
from lsqface.nets.unet import UNet, UNetConfig, count_parameters

# Seed N, verbatim: channels entering / leaving each scale.
DOWN_IN, DOWN_OUT = [3, 64, 128, 256, 512], [64, 128, 256, 512, 512]
UP_IN, UP_OUT = [1024, 512, 256, 128, 64], [256, 128, 64, 64, 5]


def conv_bn(k, c_in, c_out):
    """k x k conv with bias, then batch norm (scale and shift)."""
    return k * k * c_in * c_out + c_out + 2 * c_out


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def expected_parameters(factor, n_convs, head="double_conv"):
    """Sum over convs of k*k*cin*cout + bias + BN, from the seed's table.

    Inner channels are scaled by ``factor`` (narrow 0.5, wide 2); input 3 and
    output 5 never are. Encoder scales: c_in -> c_out -> ... -> c_out. Decoder
    scales: c_in -> c_in/2 -> ... -> c_out (our documented reading).
    """
    s = lambda c: c if c in (3, 5) else int(round(c * factor))  # noqa: E731
    total = 0
    for c_in, c_out in zip(DOWN_IN, DOWN_OUT):
        chans = [s(c_in)] + [s(c_out)] * n_convs
        total += sum(conv_bn(3, a, b) for a, b in zip(chans[:-1], chans[1:]))
    for c_in, c_out in zip(UP_IN[:-1], UP_OUT[:-1]):
        chans = [s(c_in)] + [s(c_in // 2)] * (n_convs - 1) + [s(c_out)]
        total += sum(conv_bn(3, a, b) for a, b in zip(chans[:-1], chans[1:]))
    if head == "double_conv":
        total += (n_convs - 1) * conv_bn(3, s(64), s(64)) + conv(3, s(64), 5)
    else:
        total += conv(1, s(64), 5)
    return total


def test_regular_count_written_out():
    # The regular network written out conv by conv, as a check on the formula itself.
    by_hand = (
        conv_bn(3, 3, 64) + conv_bn(3, 64, 64)
        + conv_bn(3, 64, 128) + conv_bn(3, 128, 128)
        + conv_bn(3, 128, 256) + conv_bn(3, 256, 256)
        + conv_bn(3, 256, 512) + conv_bn(3, 512, 512)
        + conv_bn(3, 512, 512) + conv_bn(3, 512, 512)
        + conv_bn(3, 1024, 512) + conv_bn(3, 512, 256)
        + conv_bn(3, 512, 256) + conv_bn(3, 256, 128)
        + conv_bn(3, 256, 128) + conv_bn(3, 128, 64)
        + conv_bn(3, 128, 64) + conv_bn(3, 64, 64)
        + conv_bn(3, 64, 64) + conv(3, 64, 5)
    )
    assert expected_parameters(1.0, 2) == by_hand
    assert count_parameters(UNet(UNetConfig())) == by_hand


@pytest.mark.parametrize(
    "variant, factor, n_convs",
    [("regular", 1.0, 2), ("narrow", 0.5, 2), ("wide", 2.0, 2), ("deep", 1.0, 4)],
)
def test_parameter_count_matches_seed_table(variant, factor, n_convs):
    net = UNet(UNetConfig(variant=variant))
    assert count_parameters(net) == expected_parameters(factor, n_convs)


def test_pointwise_head_count():
    net = UNet(UNetConfig(output_head="pointwise"))
    assert count_parameters(net) == expected_parameters(1.0, 2, head="pointwise")


def test_width_factor_count():
    net = UNet(UNetConfig(width=0.25))
    assert count_parameters(net) == expected_parameters(0.25, 2)


@pytest.mark.parametrize("variant", ["regular", "narrow", "wide", "deep"])
def test_output_shapes_and_ranges(variant):
    # width keeps the wide/deep variants fast on a CPU; the topology is the same.
    net = UNet(UNetConfig(variant=variant, width=0.125)).eval()
    image = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        maps = net(image)
    assert maps.correspondence.shape == (2, 2, 32, 48)
    assert maps.depth.shape == (2, 1, 32, 48)
    assert maps.confidence.shape == (2, 2, 32, 48)
    assert maps.logits.shape == (2, 5, 32, 48)
    assert maps.geometric_confidence.shape == maps.photometric_confidence.shape == (2, 1, 32, 48)
    assert ((maps.correspondence > 0) & (maps.correspondence < 1)).all()
    assert ((maps.confidence > 0) & (maps.confidence <= 1)).all()
    assert (maps.depth > 0).all()


def test_initial_depth_near_one():
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=0.25)).eval()
    with torch.no_grad():
        maps = net(torch.rand(1, 3, 64, 64))
    assert 0.7 < maps.depth.mean().item() < 1.3
    assert (maps.correspondence - 0.5).abs().max() < 0.25


@pytest.mark.parametrize("size", [(33, 64), (64, 40), (8, 8)])
def test_size_not_divisible_by_16_refused(size):
    net = UNet(UNetConfig(width=0.125))
    with pytest.raises(ImageError, match="divisible by 16"):
        net(torch.rand(1, 3, *size))


def test_wrong_channels_refused():
    net = UNet(UNetConfig(width=0.125))
    with pytest.raises(ImageError):
        net(torch.rand(1, 1, 32, 32))


def test_gradients_finite():
    torch.manual_seed(1)
    net = UNet(UNetConfig(width=0.125)).train()
    maps = net(torch.rand(2, 3, 16, 16))
    loss = maps.correspondence.square().mean() + maps.depth.log().mean() + maps.confidence.mean()
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads[:2])  # reaches the first conv


@pytest.mark.parametrize("kwargs", [dict(variant="huge"), dict(width=0), dict(width=-1.0), dict(output_head="x")])
def test_bad_config_refused(kwargs):
    with pytest.raises(ConfigError):
        UNetConfig(**kwargs)


def _trained_looking(network: UNet) -> UNet:
    """Batch norms with statistics and affine maps of their own, as after training."""
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return network


def test_inference_network_gives_the_network_maps():
    """Batch norms folded into the convolutions and channels-last: the same maps within float32 rounding."""
    from lsqface.nets.unet import InferenceNetwork

    torch.manual_seed(0)
    network = _trained_looking(UNet(UNetConfig(variant="narrow", width=0.25))).eval()
    image = torch.rand(3, 3, 32, 32)
    folded = InferenceNetwork(network)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    with torch.no_grad():
        expected, actual = network(image), folded(image)
    for name in ("correspondence", "depth", "confidence", "logits"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), rtol=1e-4, atol=1e-5)
        assert getattr(actual, name).is_contiguous()
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in network.modules())  # the original is kept


def test_inference_network_runs_a_large_batch_in_chunks_with_the_same_maps(monkeypatch):
    """A batch over CHUNK_PIXELS goes through in chunks: the maps of the whole batch in one call, within
    float32 rounding."""
    import lsqface.nets.unet as unet
    from lsqface.nets.unet import InferenceNetwork

    torch.manual_seed(1)
    folded = InferenceNetwork(UNet(UNetConfig(variant="narrow", width=0.25)).eval())
    image = torch.rand(7, 3, 32, 32)
    with torch.no_grad():
        whole = folded(image)
        calls = []
        forward = folded.network.forward
        monkeypatch.setattr(folded.network, "forward", lambda part: calls.append(part.shape[0]) or forward(part))
        monkeypatch.setattr(unet, "CHUNK_PIXELS", 3 * 32 * 32)
        chunked = folded(image)
    assert calls == [3, 3, 1]
    for name in ("correspondence", "depth", "confidence", "logits"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), rtol=1e-5, atol=1e-6)
        assert getattr(chunked, name).is_contiguous() and getattr(chunked, name).shape[0] == 7


def test_network_version_changes_with_the_weights():
    from lsqface.nets.unet import network_version

    network = UNet(UNetConfig(variant="narrow", width=0.125)).eval()
    before = network_version(network)
    assert network_version(network) == before
    with torch.no_grad():
        network.output_head.bias.add_(1.0)
    assert network_version(network) != before


@pytest.mark.parametrize("variant, width, wider, head", [("narrow", 0.125, 0.25, "double_conv"), ("deep", 0.0625, 0.1, "double_conv"),
                                                         ("narrow", 0.125, 0.15, "double_conv"), ("narrow", 0.125, 0.25, "pointwise")])
def test_a_grown_network_gives_the_maps_of_the_network_it_grew_from(variant, width, wider, head):
    """Old weights kept, new channels' outgoing weights zero: the same maps in training and evaluation mode."""
    from lsqface.nets.unet import _input_positions, grow_network

    torch.manual_seed(0)
    network = _trained_looking(UNet(UNetConfig(variant=variant, width=width, output_head=head)))
    grown = grow_network(network, UNetConfig(variant=variant, width=wider, output_head=head))
    fresh = UNet(UNetConfig(variant=variant, width=wider, output_head=head)).state_dict()
    assert {name: value.shape for name, value in grown.state_dict().items()} == {name: value.shape for name, value in fresh.items()}
    image = torch.rand(2, 3, 32, 32)
    for training in (False, True):
        network.train(training)
        grown.train(training)
        torch.testing.assert_close(grown(image).logits, network(image).logits, rtol=1e-5, atol=1e-6)
    # The new channels learn: in every convolution that has new inputs, the loss's gradient reaches the
    # zero weights from them into the old outputs.
    grown(image).logits.square().sum().backward()
    for old, new, positions in _input_positions(network, grown):
        added = torch.ones(new.in_channels, dtype=torch.bool)
        added[positions] = False
        assert torch.equal(new.weight[:old.out_channels, positions], old.weight)
        if added.any():
            assert not new.weight[:old.out_channels, added].any()
            assert new.weight.grad[:old.out_channels, added].abs().sum() > 0


def test_a_network_grows_only_wider_and_in_its_own_layout():
    from lsqface.nets.unet import grow_network

    network = UNet(UNetConfig(variant="narrow", width=0.25))
    with pytest.raises(ConfigError, match="only wider"):
        grow_network(network, UNetConfig(variant="narrow", width=0.125))
    with pytest.raises(ConfigError, match="convolutions per scale"):
        grow_network(network, UNetConfig(variant="deep", width=0.25))
    with pytest.raises(ConfigError, match="head"):
        grow_network(network, UNetConfig(variant="narrow", width=0.5, output_head="pointwise"))
