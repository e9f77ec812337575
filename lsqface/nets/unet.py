"""The per-pixel prediction network: a U-Net (seed N; DESIGN.md "Network").

The seed gives, per scale, only the channels entering and leaving it:

    down  in   3,  64, 128, 256,  512     out  64, 128, 256, 512, 512
    up    in 1024, 512, 256, 128,   64    out 256, 128,  64,  64,   5

Our reading (the only topology we found that produces exactly this table; it
is the widely used bilinear U-Net of ``milesial/Pytorch-UNet``):

- Encoder: five scales. The first works at full resolution; each of the next
  four starts with a 2x2 max-pool ("four down-sampling layers"). The deepest
  one (the bottleneck) keeps 512 channels instead of doubling to 1024, so that
  after bilinear up-sampling its 512 channels concatenated with the 512 of the
  skip connection give the decoder's first input of 1024.
- Decoder: four scales, each bilinear x2 up-sampling, concatenation
  ``[skip, up-sampled]`` and a double convolution: 1024 -> 256, 512 -> 128,
  256 -> 64, 128 -> 64. Inside a decoder scale the first convolution halves
  its input (1024 -> 512 -> 256), as in that U-Net; the seed does not say, and
  the parameter count in docs/nets-data.md depends on this choice.
- Output scale 64 -> 5: by default two 3x3 convolutions 64 -> 64 -> 5 ("each
  scale contains two convolution layers"); the last one is the output head and
  has no batch norm or ReLU. ``output_head="pointwise"`` gives the other
  reading, a single 1x1 convolution 64 -> 5 as in ``milesial/Pytorch-UNet``.

Every other convolution is 3x3, padding 1, with a bias, then batch norm, then
ReLU. Variants: ``narrow`` halves and ``wide`` doubles every channel count
except the 3 input and 5 output channels; ``deep`` uses four convolutions per
scale instead of two (the first changes the channel count, the last one gives
the scale's output channels). ``width`` multiplies every inner channel count
further (e.g. 0.25 for a small CPU model).

The five output channels (DESIGN.md leaves the fifth to us):

- 0, 1: correspondence (u, v) into the UV-3DMM, sigmoid, in (0, 1).
- 2: depth, ``softplus(x + log(e - 1)) + 0.001``: positive, and exactly 1.001
  when the raw output is 0. Depth is relative (the geometric solve's inverse
  camera P absorbs its scale), so we only need it positive and near 1.
- 3: geometric confidence (weights the geometric least squares), sigmoid.
- 4: photometric confidence (weights the photometric least squares), sigmoid.

The head's weights start at 0.1 times PyTorch's default initialisation, so at
initialisation the raw outputs are near 0: correspondence near the UV centre
(0.5, 0.5), depth near 1, both confidences near 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lsqface.errors import ConfigError, ImageError

#: Channels entering and leaving each encoder scale (seed N), bottleneck last.
ENCODER_CHANNELS = ((3, 64), (64, 128), (128, 256), (256, 512), (512, 512))
#: Channels entering and leaving each decoder scale (seed N); the last is the output scale.
DECODER_CHANNELS = ((1024, 256), (512, 128), (256, 64), (128, 64), (64, 5))

VARIANTS = {"regular": (1.0, 2), "narrow": (0.5, 2), "wide": (2.0, 2), "deep": (1.0, 4)}
OUTPUT_HEADS = ("double_conv", "pointwise")
#: Input height and width must be divisible by this (four 2x2 max-pools).
SIZE_MULTIPLE = 16
_DEPTH_SHIFT = math.log(math.e - 1.0)  # softplus(_DEPTH_SHIFT) == 1
_DEPTH_OFFSET = 1e-3


@dataclass(frozen=True)
class UNetConfig:
    """Which U-Net to build.

    Attributes:
        variant: ``"regular"`` (the paper's), ``"narrow"``, ``"wide"`` or ``"deep"`` (seed N).
        width: extra factor on every inner channel count (1.0 = the paper's).
        output_head: ``"double_conv"`` (3x3 64 -> 64 then 3x3 64 -> 5) or
            ``"pointwise"`` (one 1x1 conv 64 -> 5).
    """

    variant: str = "regular"
    width: float = 1.0
    output_head: str = "double_conv"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"Unknown U-Net variant {self.variant!r}; choose one of {', '.join(VARIANTS)}.")
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and self.width > 0):
            raise ConfigError(f"U-Net width must be a positive number, got {self.width!r}.")
        if self.output_head not in OUTPUT_HEADS:
            raise ConfigError(f"Unknown U-Net output head {self.output_head!r}; choose one of {', '.join(OUTPUT_HEADS)}.")

    @property
    def channel_factor(self) -> float:
        return VARIANTS[self.variant][0] * float(self.width)

    @property
    def convs_per_scale(self) -> int:
        return VARIANTS[self.variant][1]

    def inner(self, channels: int) -> int:
        """An inner channel count of the paper's network scaled by variant and width (at least 1)."""
        return max(1, int(round(channels * self.channel_factor)))


@dataclass(frozen=True)
class NetworkMaps:
    """The network's per-pixel predictions for a batch of B images of H x W pixels.

    Attributes:
        correspondence: (B, 2, H, W) UV coordinates (u, v) in (0, 1).
        depth: (B, 1, H, W) relative depth, positive (about 1 at initialisation).
        confidence: (B, 2, H, W) in (0, 1): channel 0 geometric, channel 1 photometric.
        logits: (B, 5, H, W) the raw outputs before the squashing functions.
    """

    correspondence: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    logits: torch.Tensor

    @property
    def geometric_confidence(self) -> torch.Tensor:
        """(B, 1, H, W) weight of each pixel in the geometric least squares."""
        return self.confidence[:, 0:1]

    @property
    def photometric_confidence(self) -> torch.Tensor:
        """(B, 1, H, W) weight of each pixel in the photometric least squares."""
        return self.confidence[:, 1:2]


def maps_from_logits(logits: torch.Tensor) -> NetworkMaps:
    """Squash raw network outputs ``logits`` (B, 5, H, W) into :class:`NetworkMaps`."""
    correspondence = torch.sigmoid(logits[:, 0:2])
    depth = F.softplus(logits[:, 2:3] + _DEPTH_SHIFT) + _DEPTH_OFFSET
    confidence = torch.sigmoid(logits[:, 3:5])
    return NetworkMaps(correspondence=correspondence, depth=depth, confidence=confidence, logits=logits)


def _conv_block(channels: list[int]) -> nn.Sequential:
    """3x3 conv + batch norm + ReLU for each consecutive pair in ``channels``."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _scale_channels(c_in: int, c_mid: int, c_out: int, n_convs: int) -> list[int]:
    """Channel sequence through one scale: c_in -> c_mid ... c_mid -> c_out."""
    return [c_in] + [c_mid] * (n_convs - 1) + [c_out]


class UNet(nn.Module):
    """U-Net from an image (B, 3, H, W) to :class:`NetworkMaps`; H and W divisible by 16.

    The image is whatever the caller feeds (lsqface feeds the softplus
    pre-processed image, seed E); the network itself does no normalisation.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        n = config.convs_per_scale

        self.encoder = nn.ModuleList()
        encoder_out: list[int] = []
        c_prev = 3
        for _, c_out_paper in ENCODER_CHANNELS:
            c_out = config.inner(c_out_paper)
            self.encoder.append(_conv_block(_scale_channels(c_prev, c_out, c_out, n)))
            encoder_out.append(c_out)
            c_prev = c_out

        self.decoder = nn.ModuleList()
        skips = encoder_out[-2::-1]  # 512, 256, 128, 64 (paper)
        for (c_in_paper, c_out_paper), c_skip in zip(DECODER_CHANNELS[:-1], skips):
            c_in = c_prev + c_skip
            c_mid = config.inner(c_in_paper // 2)
            c_out = config.inner(c_out_paper)
            self.decoder.append(_conv_block(_scale_channels(c_in, c_mid, c_out, n)))
            c_prev = c_out

        n_outputs = DECODER_CHANNELS[-1][1]
        if config.output_head == "double_conv":
            self.output_features = _conv_block([c_prev] * n)  # n - 1 convs 64 -> 64 (paper)
            self.output_head = nn.Conv2d(c_prev, n_outputs, 3, padding=1)
        else:
            self.output_features = nn.Sequential()
            self.output_head = nn.Conv2d(c_prev, n_outputs, 1)
        with torch.no_grad():
            self.output_head.weight.mul_(0.1)
            self.output_head.bias.mul_(0.1)

    def forward(self, image: torch.Tensor) -> NetworkMaps:
        """Predict the per-pixel maps.

        Args:
            image: (B, 3, H, W) float, H and W multiples of 16.
        Returns:
            :class:`NetworkMaps` with (B, ., H, W) maps.
        """
        check_network_input(image)
        skips = []
        x = image
        for index, block in enumerate(self.encoder):
            if index > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.decoder, skips[-2::-1]):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        logits = self.output_head(self.output_features(x))
        return maps_from_logits(logits)


def _input_positions(network: UNet, wider: UNet) -> list[tuple[nn.Conv2d, nn.Conv2d, torch.Tensor]]:
    """Each convolution of ``network`` with its counterpart in ``wider`` and where its input channels lie there.

    In a grown network every tensor keeps its old channels first, so a convolution's old inputs are the
    first ones, except after a decoder's concatenation ``[skip, up-sampled]``, whose up-sampled half
    starts after the wider skip.
    """
    # Each decoder block's skip: the old and the wider channel counts of the encoder scale it joins.
    skips = [(block[-3].out_channels, wide[-3].out_channels) for block, wide in zip(network.encoder, wider.encoder)][-2::-1]
    blocks = [*((block, wide, None) for block, wide in zip(network.encoder, wider.encoder)),
              *zip(network.decoder, wider.decoder, skips), (network.output_features, wider.output_features, None)]
    pairs = []
    for block, wide, skip in blocks:
        convs = [(old, new) for old, new in zip(block, wide) if isinstance(old, nn.Conv2d)]
        for index, (old, new) in enumerate(convs):
            positions = torch.arange(old.in_channels)
            if index == 0 and skip is not None:
                old_skip, wide_skip = skip
                positions[old_skip:] += wide_skip - old_skip
            pairs.append((old, new, positions))
    pairs.append((network.output_head, wider.output_head, torch.arange(network.output_head.in_channels)))
    return pairs


def grow_network(network: UNet, config: UNetConfig) -> UNet:
    """A wider U-Net of ``config`` that computes exactly what ``network`` computes, to train on from there.

    Every convolution keeps its old weights for its old channels; each new output channel gets PyTorch's
    random initialisation, and every weight from a new channel into an old one is zero, so the new
    channels change nothing until training moves those weights (their gradient is not zero, as the new
    channels' activations are not). A new batch norm channel starts at the identity. The maps are the
    same in training and in evaluation mode (tests/nets/test_unet.py). This starts a larger network
    from a trained one instead of from scratch.

    Raises:
        ConfigError: ``config`` is not the same U-Net with at least as many channels everywhere.
    """
    old = network.config
    if config.convs_per_scale != old.convs_per_scale or config.output_head != old.output_head:
        raise ConfigError(f"A {old.variant!r} U-Net with a {old.output_head!r} head grows only into one with as many "
                          f"convolutions per scale and the same head, not {config.variant!r} with {config.output_head!r}.")
    wider = UNet(config).to(next(network.parameters()).device)
    pairs = _input_positions(network, wider)
    if any(new.out_channels < old.out_channels or new.in_channels < old.in_channels for old, new, _ in pairs):
        raise ConfigError(f"A U-Net of channel factor {old.channel_factor:g} cannot grow into one of "
                          f"{config.channel_factor:g}: a network grows only wider.")
    norms = [(old, new) for old, new in zip(network.modules(), wider.modules()) if isinstance(old, nn.BatchNorm2d)]
    with torch.no_grad():
        for old, new, positions in pairs:
            outputs = old.out_channels
            new.weight[:outputs] = 0.0
            new.weight[:outputs, positions] = old.weight
            new.bias[:outputs] = old.bias
        for old, new in norms:
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new, name)[:old.num_features] = getattr(old, name)
            new.num_batches_tracked.copy_(old.num_batches_tracked)
    return wider.train(network.training)


def check_network_input(image: torch.Tensor) -> None:
    """Raise :class:`ImageError` unless ``image`` is (B, 3, H, W) with H, W multiples of 16."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ImageError(f"The network needs a (batch, 3, height, width) image tensor, got {shape}.")
    height, width = image.shape[-2:]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height == 0 or width == 0:
        raise ImageError(
            f"The network needs image height and width divisible by {SIZE_MULTIPLE}, got {height}x{width}; "
            f"resize or pad the image (e.g. to {max(SIZE_MULTIPLE, round(height / SIZE_MULTIPLE) * SIZE_MULTIPLE)}"
            f"x{max(SIZE_MULTIPLE, round(width / SIZE_MULTIPLE) * SIZE_MULTIPLE)})."
        )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


#: Input pixels per call of :class:`InferenceNetwork` on the CPU (16 images of 64 x 64).
CHUNK_PIXELS = 16 * 64 * 64


class InferenceNetwork(nn.Module):
    """A network's frozen copy for inference: batch norms folded into the convolutions, channels-last.

    In eval mode a batch norm is an affine map per channel, so ``conv`` then ``bn`` is one
    convolution with scaled weights and a shifted bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`);
    the copy runs on channels-last tensors, the layout oneDNN's CPU convolutions are fastest in
    (25-30 % less time for the shipped 64-pixel network, benchmarks/bench_inference.py). Its maps equal
    the original's within float32 rounding (tests/nets/test_unet.py); they are returned in the usual
    contiguous layout. Any module whose forward is a U-Net's works (subclasses included): only the
    (Conv2d, BatchNorm2d) pairs inside ``nn.Sequential`` blocks are changed.

    Args:
        network: the trained network, in eval mode; it is copied, not changed.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        import copy

        from torch.nn.utils.fusion import fuse_conv_bn_eval

        folded = copy.deepcopy(network).eval()
        for module in folded.modules():
            if not isinstance(module, nn.Sequential):
                continue
            children = list(module.named_children())
            for (name, conv), (next_name, norm) in zip(children[:-1], children[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                    setattr(module, name, fuse_conv_bn_eval(conv, norm))
                    setattr(module, next_name, nn.Identity())
        for parameter in folded.parameters():
            parameter.requires_grad_(False)
        self.network = folded.to(memory_format=torch.channels_last)

    def forward(self, image: torch.Tensor) -> NetworkMaps:
        """The maps of ``image`` (B, 3, H, W), as the original network's forward gives them.

        A large batch goes through in chunks of at most ``CHUNK_PIXELS`` input pixels (16 images of 64 px):
        on one CPU core a convolution's time per image is least at 8-16 such images and a fifth more at 32-64,
        whose activations no longer stay in cache (the 4 turned copies of 16 photos: 19.5 against 16.3 ms
        per photo). On a GPU the batch goes through whole.
        """
        names = ("correspondence", "depth", "confidence", "logits")
        chunk = image.shape[0] if image.device.type != "cpu" else max(1, CHUNK_PIXELS // (image.shape[-2] * image.shape[-1]))
        parts = [self.network(part.contiguous(memory_format=torch.channels_last)) for part in image.split(chunk)]
        if len(parts) == 1:
            return NetworkMaps(**{name: getattr(parts[0], name).contiguous() for name in names})
        return NetworkMaps(**{name: torch.cat([getattr(part, name) for part in parts]).contiguous() for name in names})


def network_version(network: nn.Module) -> tuple:
    """A key that changes whenever ``network``'s parameters or buffers change (in-place updates included).

    An :class:`InferenceNetwork` made from a network is current as long as this key is the same.
    """
    return (id(network), network.training,
            tuple(tensor._version for tensor in (*network.parameters(), *network.buffers())),
            tuple(id(tensor) for tensor in network.parameters()))
