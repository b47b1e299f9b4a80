"""A pretrained torchvision backbone, frozen: its penultimate features are the embedding.

The architecture comes from torchvision (`arch`, any torchvision.models builder, built with
weights=None so the hub is never asked), the weights from a local file only (`weights_path`):
a state_dict saved with torch.save (loaded with weights_only=True) or a .safetensors file. A
checkpoint dict with the state under "state_dict" or "model" is unwrapped. The classification
head (`fc`, `classifier`, `heads` or `head`) is replaced by the identity, so its shape need not
match: a backbone fine-tuned on any number of classes loads.

Preprocessing (the ImageNet recipe the torchvision weights expect): RGB, shorter side resized
to `size` then center-cropped (images.py), scaled to [0, 1], normalized with ImageNet's
per-channel mean and std.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.training.encoders.base import (
    Content,
    EncoderUnavailableError,
    NothingToFit,
    Progress,
    encode_batched,
    import_torchvision,
    version_string,
)
from app.training.encoders.images import to_pixels
from app.training.encoders.options import TorchvisionOptions
from app.training.errors import JobError

CODE_VERSION = 1  # bump when a change here changes the embeddings
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("fc", "classifier", "heads", "head")


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise JobError(f"{str(path)!r} holds a {type(state).__name__}, not a state_dict")
    return state


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TorchvisionEncoder(NothingToFit):
    name = "torchvision"
    modality = "image"
    end_to_end = False

    def __init__(self, options: TorchvisionOptions, device: str = "cpu") -> None:
        self.options, self.device = options, device
        path = Path(options.weights_path).expanduser()
        if not path.is_file():
            raise EncoderUnavailableError(
                f"encoder 'torchvision': no weights file at {str(path)!r}; save the "
                f"{options.arch} state_dict there (torch.save(model.state_dict(), path)) and "
                "set encoder.weights_path to it (nothing is downloaded at run time)"
            )
        tv = import_torchvision(self.name)
        try:
            builder = tv.models.get_model_builder(options.arch)
        except ValueError:
            raise JobError(
                f"torchvision {tv.__version__} has no model {options.arch!r} "
                "(see torchvision.models.list_models())"
            ) from None
        model = builder(weights=None)
        head = next((h for h in HEADS if isinstance(getattr(model, h, None), nn.Module)), None)
        if head is not None:
            setattr(model, head, nn.Identity())
        state = _load_state(path)
        if head is not None:
            state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise JobError(f"{str(path)!r} is not a {options.arch} state_dict: {first}") from None
        self.model = model.to(device).eval()
        with torch.inference_mode():
            probe = torch.zeros(1, 3, options.size, options.size, device=device)
            self.dim = int(self.model(probe).flatten(1).shape[1])
        self._weights = file_sha256(path)
        self._tv_version = tv.__version__
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @property
    def version(self) -> str:
        return version_string(
            self.name,
            CODE_VERSION,
            self.options.model_dump(exclude={"batch_size", "weights_path"}),
            self._weights,  # the file's bytes, not its name: moving it changes nothing
            self._tv_version,
            torch.__version__,
        )

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        @torch.inference_mode()
        def one(batch: Content) -> np.ndarray:
            # decoded batch by batch: 100k images at 224 px would be 15 GB of pixels at once
            pixels = to_pixels(batch, self.options.size, self.name)
            x = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            out = self.model((x - self._mean) / self._std).flatten(1)
            return out.float().cpu().numpy()  # type: ignore[no-any-return]

        return encode_batched(content, self.options.batch_size, one, self.dim, progress)
