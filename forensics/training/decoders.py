"""The decoder bank of `gscan synth`: small autoencoders whose decoding half upsamples the way a family of
generators does (transposed convolution as in pix2pix/CycleGAN; nearest then convolution and a 1x1 to-RGB as in
ProGAN/StyleGAN; bilinear; pixel shuffle; StyleGAN2's [1,3,3,1]-filtered upsampling with modulated convolutions
and noise; an x8 decoder with residual blocks like a latent-diffusion VAE's). forensics/training/synth.py trains
them and writes the twins."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError

UPSAMPLERS = ("transposed", "nearest", "bilinear", "pixelshuffle", "stylegan2", "vae")


@dataclass(frozen=True)
class DecoderSpec:
    """One decoder of the bank: how it upsamples, how many x2 stages, how wide."""

    name: str
    upsample: str
    stages: int
    channels: int = 32

    @property
    def latent(self) -> int:
        # enough latent channels that a few hundred CPU steps reach about 30 dB: the trace, not blur, should differ
        return min(48, 3 * 4 ** self.stages)


DEFAULT_BANK = (
    DecoderSpec("transposed-x2", "transposed", 1),
    DecoderSpec("transposed-x4", "transposed", 2),
    DecoderSpec("nearest-x2", "nearest", 1),
    DecoderSpec("nearest-x4", "nearest", 2),
    DecoderSpec("bilinear-x2", "bilinear", 1),
    DecoderSpec("pixelshuffle-x2", "pixelshuffle", 1),
    DecoderSpec("stylegan2-x2", "stylegan2", 1),
    DecoderSpec("stylegan2-x4", "stylegan2", 2),
    DecoderSpec("nearest-x8", "nearest", 3),
    DecoderSpec("vae-x8", "vae", 3),
)


def _fir_up(x: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's upsampling: zeros inserted, then the separable [1,3,3,1] low-pass (gain 4)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=x.device)
    kernel = (torch.outer(k, k) / k.sum() ** 2 * 4).expand(c, 1, 4, 4)
    return F.conv2d(F.pad(up, (2, 1, 2, 1)), kernel, groups=c)


class ModulatedConv(nn.Module):
    """StyleGAN2's modulated and demodulated 3x3 convolution, the style from the latent's mean."""

    def __init__(self, c_in: int, c_out: int, style_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3) / math.sqrt(c_in * 9))
        self.affine = nn.Linear(style_dim, c_in)
        nn.init.ones_(self.affine.bias)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weight = self.weight[None] * self.affine(style)[:, None, :, None, None]
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        out = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(-1, c, 3, 3), padding=1, groups=n)
        return out.reshape(n, -1, h, w) + self.bias[None, :, None, None]


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise with a learned strength, as StyleGAN adds after each convolution."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.full((), 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.strength * torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 twice, with a skip: the block of a latent-diffusion VAE's decoder."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpStage(nn.Module):
    """One x2 stage of a decoder, in the style of its family."""

    def __init__(self, kind: str, c: int, style_dim: int):
        super().__init__()
        self.kind = kind
        act = nn.LeakyReLU(0.2)
        if kind == "transposed":  # pix2pix / CycleGAN / DCGAN: 4x4 stride-2 transposed convolution
            self.body = nn.Sequential(nn.ConvTranspose2d(c, c, 4, 2, 1), act)
        elif kind in ("nearest", "bilinear"):  # ProGAN / StyleGAN: interpolate, then two 3x3 convolutions
            up = nn.Upsample(scale_factor=2, mode=kind, **({"align_corners": False} if kind == "bilinear" else {}))
            self.body = nn.Sequential(up, nn.Conv2d(c, c, 3, padding=1), act, nn.Conv2d(c, c, 3, padding=1), act)
        elif kind == "pixelshuffle":  # sub-pixel convolution
            self.body = nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), act)
        elif kind == "stylegan2":
            self.conv0, self.conv1 = ModulatedConv(c, c, style_dim), ModulatedConv(c, c, style_dim)
            self.noise0, self.noise1, self.act = NoiseInjection(), NoiseInjection(), act
        elif kind == "vae":  # nearest x2, a 3x3 convolution, a residual block
            self.body = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1),
                                      ResBlock(c))
        else:
            raise DataError(f"unknown upsampler {kind!r}: use one of {', '.join(UPSAMPLERS)}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.kind != "stylegan2":
            return self.body(x)
        x = self.act(self.noise0(self.conv0(_fir_up(x), style)))
        return self.act(self.noise1(self.conv1(x, style)))


class TwinAutoencoder(nn.Module):
    """Strided-convolution encoder, then a generator-like decoder back to the input's size."""

    def __init__(self, spec: DecoderSpec):
        super().__init__()
        if not 1 <= spec.stages <= 3:
            raise DataError(f"decoder {spec.name}: 1 to 3 x2 stages, not {spec.stages}")
        c = spec.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(spec.stages):
            layers += [nn.Conv2d(c, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*layers, nn.Conv2d(c, spec.latent, 1))
        self.from_latent = nn.Conv2d(spec.latent, c, 3, padding=1)
        self.stages = nn.ModuleList(UpStage(spec.upsample, c, spec.latent) for _ in range(spec.stages))
        # a 1x1 to-RGB as ProGAN/StyleGAN have; the others end in a 3x3 convolution
        k = 1 if spec.upsample in ("nearest", "stylegan2") else 3
        self.to_rgb = nn.Conv2d(c, 3, k, padding=k // 2)
        self.factor = 2 ** spec.stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        style = z.mean(dim=(2, 3))
        h = F.leaky_relu(self.from_latent(z), 0.2)
        for stage in self.stages:
            h = stage(h, style)
        return self.to_rgb(h)
