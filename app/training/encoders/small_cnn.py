"""A small convolutional network trained from scratch on the pixels, end to end with the soft
loss: the image experiment of J. Peterson, R. Battleday, T. Griffiths, O. Russakovsky, "Human
uncertainty makes classification more robust", ICCV 2019 (CIFAR-10H), at a size a CPU trains.

Not frozen: `encode` only turns images into model input rows (size x size RGB, channel-first,
flattened, as float 0..255), and `trunk` is the trainable network the trainer puts between the
model's input standardization (the training split's mean and std per pixel and channel, kept
in the model like the feature path's) and the configured linear/MLP head:

    Standardize -> [conv3x3 - BatchNorm - ReLU - maxpool2] x len(widths) -> global mean -> head

Augmentation while training only (the usual CIFAR recipe, K. He, X. Zhang, S. Ren, J. Sun,
"Deep residual learning for image recognition", CVPR 2016): a random crop after 4-pixel zero
padding (zero = the training mean after standardization) and a random horizontal flip, drawn
from torch's global RNG, which the trainer seeds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.training.encoders.base import (
    Content,
    NothingToFit,
    Progress,
    encode_batched,
    version_string,
)
from app.training.encoders.images import to_pixels
from app.training.encoders.options import SmallCNNOptions

CODE_VERSION = 1  # bump when the preprocessing changes
BATCH = 1024  # images decoded per step: progress granularity
PAD = 4


class ImageTrunk(nn.Module):
    """(n, 3 * size * size) standardized rows -> (n, widths[-1]) features."""

    def __init__(self, size: int, widths: list[int], augment: bool) -> None:
        super().__init__()
        self.size, self.augment = size, augment
        blocks: list[nn.Module] = []
        cin = 3
        for w in widths:
            # bias=False: BatchNorm's shift makes a conv bias redundant
            blocks += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)]
            blocks += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*blocks)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 3, self.size, self.size)
        if self.training and self.augment:
            x = _augment(x)
        return self.features(x).mean(dim=(2, 3))


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Per image: a random size x size crop of the zero-padded image, then a coin-flip mirror."""
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * PAD + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


class SmallCNNEncoder(NothingToFit):
    name = "small-cnn"
    modality = "image"
    end_to_end = True

    def __init__(self, options: SmallCNNOptions, device: str = "cpu") -> None:
        self.options = options
        self.dim = 3 * options.size * options.size

    @property
    def version(self) -> str:
        # The rows depend on the resizing only (the network is trained per job).
        return version_string(self.name, CODE_VERSION, self.options.size)

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        def one(batch: Content) -> np.ndarray:
            pixels = to_pixels(batch, self.options.size, self.name)  # (b, s, s, 3) uint8
            return pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1)  # channel-first rows

        return encode_batched(content, BATCH, one, self.dim, progress)

    def trunk(self) -> ImageTrunk:
        o = self.options
        return ImageTrunk(o.size, list(o.widths), o.augment)
