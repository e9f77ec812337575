"""The per-pixel prediction network (seed N): U-Net and its variants."""

from lsqface.nets.unet import NetworkMaps, UNet, UNetConfig, count_parameters, maps_from_logits

__all__ = ["NetworkMaps", "UNet", "UNetConfig", "count_parameters", "maps_from_logits"]
