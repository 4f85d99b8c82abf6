"""Joint frame/mask transforms for training (and the release's fixed-size resize for evaluation).

The frame is a ``tv_tensors.Image`` and the mask a ``tv_tensors.Mask`` inside, so torchvision's
v2 kernels resize the mask with nearest neighbour and pad it with 0: it stays exactly binary
and aligned with the frame. Randomness comes from torch's global RNG only, so
``torch.manual_seed`` plus DataLoader worker seeding (torch's default) reproduce a run.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


def _coin(p: float) -> bool:
    """Return True with probability p, drawn from torch's global RNG."""
    return bool(torch.rand(()) < p)


def _randint(low: int, high: int) -> int:
    """Return a uniform integer in [low, high] (inclusive), drawn from torch's global RNG."""
    return int(torch.randint(low, high + 1, ()))


def _check_pair(image: torch.Tensor, mask: torch.Tensor) -> None:
    if image.ndim != 3 or mask.ndim != 3 or image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(
            f"expected image and mask of shape C x H x W, same H x W; got {tuple(image.shape)} and {tuple(mask.shape)}"
        )


def _resize(image: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return both resized to size x size px: frame bilinear antialiased (as PIL), mask nearest-exact."""
    image = F.resize(tv_tensors.Image(image), [size, size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    # nearest-exact samples the source pixel under each output pixel's centre, as PIL's NEAREST and
    # cv2.INTER_NEAREST_EXACT do, so the mask stays centred on the bilinear frame (legacy nearest shifts it)
    mask = F.resize(tv_tensors.Mask(mask), [size, size], interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class TrainTransform:
    """Random joint augmentation: optional resize, target-biased crop, flips, 90-degree rotations and transposition.

    - ``base_size``: first resize to base_size x base_size px (the release: 512 for IRSTD-1K and
      NUDT-SIRST, 256 for SIRST-Aug); the frame bilinearly, the mask by nearest neighbour.
    - ``crop_size``: a crop_size x crop_size px window; frames smaller than it are padded at the
      bottom/right with 0 (mask 0). With probability ``target_prob`` (and a target present) the
      window is placed to contain a target pixel drawn uniformly from the mask; otherwise it is
      uniform. ``None`` keeps the whole frame.
    - ``flip``: horizontal and vertical flips, each with probability 0.5.
    - ``rot90``: transposition with probability 0.5 and a rotation by a uniform multiple of 90
      degrees. With ``flip`` as well this draws uniformly from the 8 symmetries of the square;
      the release's "flips and transposition" draws from the same 8.
    """

    def __init__(
        self,
        crop_size: int | None = 256,
        target_prob: float = 0.5,
        flip: bool = True,
        rot90: bool = True,
        base_size: int | None = None,
    ):
        for name, value in (("crop_size", crop_size), ("base_size", base_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive number of pixels or None")
        if not 0.0 <= target_prob <= 1.0:
            raise ValueError(f"target_prob={target_prob} must be a probability in [0, 1]")
        self.crop_size = crop_size
        self.target_prob = target_prob
        self.flip = flip
        self.rot90 = rot90
        self.base_size = base_size

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, target_prob={self.target_prob}, flip={self.flip}, "
            f"rot90={self.rot90}, base_size={self.base_size})"
        )

    def _crop(self, image: torch.Tensor, mask: torch.Tensor,
              focus: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.crop_size
        height, width = image.shape[-2:]
        if height < size or width < size:  # pad bottom/right with zeros, as the release does
            padding = [0, 0, max(0, size - width), max(0, size - height)]  # left, top, right, bottom
            image = F.pad(tv_tensors.Image(image), padding, fill=0).as_subclass(torch.Tensor)
            mask = F.pad(tv_tensors.Mask(mask), padding, fill=0).as_subclass(torch.Tensor)
            height, width = image.shape[-2:]
        top, left = _randint(0, height - size), _randint(0, width - size)
        point = None
        if focus is not None:
            point = (min(max(int(focus[0]), 0), height - 1), min(max(int(focus[1]), 0), width - 1))
        elif self.target_prob > 0 and _coin(self.target_prob):
            pixels = torch.nonzero(mask[0] > 0)  # N x 2 (row, col) target pixels
            if len(pixels):
                point = tuple(pixels[_randint(0, len(pixels) - 1)].tolist())
        if point is not None:
            row, col = point
            top = _randint(max(0, row - size + 1), min(row, height - size))  # window rows [top, top+size) hold row
            left = _randint(max(0, col - size + 1), min(col, width - size))
        return image[..., top : top + size, left : left + size], mask[..., top : top + size, left : left + size]

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 focus: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (image, mask) transformed together, both C x h x w; mask values are those of the input mask.

        ``focus`` (row, col) in the input frame's pixels: the crop window is placed to contain it
        (instead of a target pixel), e.g. to centre training on a mined false alarm.
        """
        _check_pair(image, mask)
        if self.base_size is not None:
            if focus is not None:
                focus = (focus[0] * self.base_size / image.shape[-2], focus[1] * self.base_size / image.shape[-1])
            image, mask = _resize(image, mask, self.base_size)
        if self.crop_size is not None:
            image, mask = self._crop(image, mask, focus)
        if self.flip:
            if _coin(0.5):
                image, mask = image.flip(-1), mask.flip(-1)
            if _coin(0.5):
                image, mask = image.flip(-2), mask.flip(-2)
        if self.rot90:
            if _coin(0.5):
                image, mask = image.transpose(-2, -1), mask.transpose(-2, -1)
            turns = _randint(0, 3)
            if turns:
                image, mask = torch.rot90(image, turns, (-2, -1)), torch.rot90(mask, turns, (-2, -1))
        return image.contiguous(), mask.contiguous()


class EvalTransform:
    """Evaluation: identity (native size, the network pads), or the release's resize to base_size x base_size px."""

    def __init__(self, base_size: int | None = None):
        if base_size is not None and (not isinstance(base_size, int) or base_size < 1):
            raise ValueError(f"base_size={base_size!r} must be a positive number of pixels or None")
        self.base_size = base_size

    def __repr__(self) -> str:
        return f"EvalTransform(base_size={self.base_size})"

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (image, mask), resized together when base_size is set (mask by nearest neighbour)."""
        _check_pair(image, mask)
        if self.base_size is None:
            return image, mask
        return _resize(image, mask, self.base_size)
