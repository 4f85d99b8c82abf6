"""The device feeder (``--loader device``): training batches cut and augmented where the network runs.

Every training frame is decoded once and held on the device (8-bit frames as uint8, one flat
buffer; mask and ignore bits in another), with the list of each frame's target pixels. Each
batch is then made there in a few vectorised operations, with the same rules as the CPU path
(``utils.data.transforms.TrainTransform`` and ``utils.data.mixture.MixedTrainSet``):

- frames drawn as the DataLoader path draws them: one pass without replacement (a rank's share
  under torchrun), with replacement when --steps-per-epoch is set, by ``sample_weights`` for
  several sources (mined frames included);
- a crop_size window (frames smaller than it padded bottom/right with 0), placed uniformly, or
  with probability target_prob so as to contain a target pixel drawn uniformly from the frame's
  mask, or (frames with mined false alarms, probability ``FOCUS_PROB``) one of those;
- pasted targets (probability copy_paste, 1-3 of them, ``utils.data.synthetic``'s target
  model and rules) — on the crop rather than the whole frame, the one difference from the CPU
  path: a pasted target always lies inside its crop, and the busy pixels it keeps away from are
  those of the crop;
- horizontal and vertical flips, transposition and a uniform number of 90-degree turns, each
  drawn per crop with the CPU path's probabilities.

``--base-size`` resizes every frame once when it is loaded (the CPU path resizes each draw the
same way). Randomness comes from one generator on the device, seeded per epoch and rank
(``utils.train.setup.epoch_seed``), so a resumed run draws what an unbroken one draws.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from utils.data.mixture import FOCUS_PROB, PASTE_COUNT, MixedTrainSet
from utils.data.synthetic import (
    CLUTTER_WINDOW_PX,
    DIAMETER_PX,
    EDGE_MARGIN_PX,
    FAINT_DIAMETER_PX,
    FAINT_PEAK,
    FWHM_PER_SIGMA,
    MASK_FRACTION,
    MIN_PEAK,
    MIN_SEPARATION_PX,
    SCR_RANGE,
)
from utils.data.transforms import TrainTransform

log = logging.getLogger(__name__)
CANDIDATES = 4 * PASTE_COUNT[1]     # centres tried per pasting crop, as paste_targets tries 4 per target
BLOB_HALF = math.ceil(4 * DIAMETER_PX[1] / FWHM_PER_SIGMA * 1.25)   # the widest blob's half-window, px


def frame_arrays(train, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return training frame i of a train set without augmentation: (image H x W float32, mask uint8, ignore uint8)."""
    if isinstance(train, MixedTrainSet):
        return train.raw(i)
    item = train[i]
    mask = (item["mask"][0].numpy() > 0).astype(np.uint8)
    ignore = (item["ignore"][0].numpy() > 0).astype(np.uint8) if "ignore" in item else np.zeros_like(mask)
    return item["image"][0].numpy(), mask, ignore


def uniform(generator: torch.Generator, shape, low, high, device) -> torch.Tensor:
    """Return floats drawn uniformly in [low, high) (tensors or numbers) from generator."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def integers(generator: torch.Generator, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Return integers drawn uniformly in [low, high] (inclusive, elementwise, int64) from generator."""
    u = torch.rand(low.shape, generator=generator, device=low.device, dtype=torch.float64)
    return low + torch.minimum((u * (high - low + 1).double()).long(), high - low)


class DeviceFeeder:
    """The training frames of a run held on a device, and the batches of one epoch cut from them (``epoch``)."""

    def __init__(self, train, crop_size: int, target_prob: float, flip: bool, rot90: bool, copy_paste: float,
                 base_size: int, device: torch.device, progress=None, paste_faint: float = 0.0):
        self.train, self.device, self.paste_faint = train, device, paste_faint
        self.size = crop_size or base_size
        self.target_prob, self.flip, self.rot90, self.copy_paste = target_prob, flip, rot90, copy_paste
        resize = TrainTransform(crop_size=None, flip=False, rot90=False, base_size=base_size) if base_size else None
        images, labels, targets, native = [], [], [], []
        indices = range(len(train))
        for i in (progress(indices, "frames to the device") if progress else indices):
            image, mask, ignore = frame_arrays(train, i)
            native.append(image.shape)
            if resize is not None:
                resized, target = resize(torch.from_numpy(image)[None], torch.from_numpy(np.stack([mask, ignore])))
                image, mask, ignore = resized[0].numpy(), target[0].numpy() > 0, target[1].numpy() > 0
            images.append(image)
            labels.append((mask > 0).astype(np.uint8) | ((ignore > 0).astype(np.uint8) << 1))
            targets.append(np.argwhere(mask > 0))                        # K x 2 (row, col)
        grey = [np.rint(im * 255.0) for im in images]
        exact = all(np.array_equal((g / 255.0).astype(np.float32), im) for g, im in zip(grey, images))
        flat = np.concatenate([g.reshape(-1) for g in grey] if exact else [im.reshape(-1) for im in images])
        self.pixels = torch.from_numpy(flat.astype(np.uint8 if exact else np.float32)).to(device)
        self.scale = 1 / 255.0 if exact else 1.0     # uint8 grey levels, or floats kept as they are
        self.labels = torch.from_numpy(np.concatenate([b.reshape(-1) for b in labels])).to(device)
        hw = np.array([im.shape for im in images], np.int64)
        self.height, self.width = (torch.from_numpy(hw[:, k].copy()).to(device) for k in (0, 1))
        self.offset = torch.from_numpy(np.concatenate([[0], np.cumsum(hw[:, 0] * hw[:, 1])[:-1]])).to(device)
        self.target_pixels, self.target_start, self.target_count = self.flat_points(
            [t.astype(np.float32) for t in targets])
        self.native = torch.from_numpy(np.array(native, np.float64)).to(device)   # N x 2, for mined points
        self.has_ignore = any(b.max(initial=0) > 1 for b in labels)
        self.hard_pixels, self.hard_start, self.hard_count = self.flat_points([np.zeros((0, 2), np.float32)] * len(hw))
        log.info("device feeder: %d training frames on %s, %.1f MB (%s)", len(hw), device,
                 (self.pixels.numel() * self.pixels.element_size() + self.labels.numel()) / 1e6,
                 "uint8 grey levels" if exact else "float32")

    def __len__(self) -> int:
        return len(self.offset)

    def flat_points(self, points: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (all points M x 2 float32, each frame's first index, each frame's count) on the device."""
        counts = np.array([len(p) for p in points], np.int64)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        flat = np.concatenate(points).reshape(-1, 2) if counts.sum() else np.zeros((1, 2), np.float32)
        return (torch.from_numpy(flat.astype(np.float32)).to(self.device), torch.from_numpy(start).to(self.device),
                torch.from_numpy(counts).to(self.device))

    def set_hard_points(self, points: dict[int, np.ndarray]) -> None:
        """Hold mined false alarms {frame: K x 2 (row, col) in native pixels}; crops centre on them (FOCUS_PROB)."""
        per_frame = [np.asarray(points.get(i, np.zeros((0, 2))), np.float32).reshape(-1, 2) for i in range(len(self))]
        self.hard_pixels, self.hard_start, self.hard_count = self.flat_points(per_frame)

    def draw(self, steps: int, batch_size: int, shared_seed: int, rank: int, world: int, replacement: bool,
             generator: torch.Generator) -> torch.Tensor:
        """Return steps x batch_size frame indices of one epoch on one rank (the DataLoader path's samplers' rules);
        ``shared_seed``: the same on every rank (their shares of one permutation)."""
        n, total = len(self), steps * batch_size
        if isinstance(self.train, MixedTrainSet):
            weights = torch.as_tensor(self.train.sample_weights(), dtype=torch.float64, device=self.device)
            picks = torch.multinomial(weights, total, replacement=True, generator=generator)
        elif replacement:
            picks = torch.randint(0, n, (total,), generator=generator, device=self.device)
        elif world > 1:   # one permutation shared by every rank (seeded alike), each taking its share
            shared = torch.Generator(device=self.device).manual_seed(shared_seed)
            picks = torch.randperm(n, generator=shared, device=self.device)[rank::world][:total]
        else:
            picks = torch.randperm(n, generator=generator, device=self.device)[:total]
        return picks.view(steps, batch_size)

    def epoch(self, steps: int, batch_size: int, seed: int, shared_seed: int = 0, rank: int = 0, world: int = 1,
              replacement: bool = False) -> Iterator[dict]:
        """Yield one epoch's batches {"image", "mask", "ignore" (when any frame has one)}, each B x 1 x S x S float32.

        ``seed``: this epoch's on this rank; ``shared_seed``: this epoch's on rank 0 (one pass split among ranks).
        """
        generator = torch.Generator(device=self.device).manual_seed(seed)
        if isinstance(self.train, MixedTrainSet):
            self.set_hard_points(self.train.hard_points)
        picks = self.draw(steps, batch_size, shared_seed, rank, world, replacement, generator)
        for step in range(steps):
            yield self.batch(picks[step], generator)

    def batch(self, frames: torch.Tensor, generator: torch.Generator) -> dict:
        """Return the augmented crops of the given frames (a B vector of indices), as ``epoch`` yields them."""
        image, mask, ignore = self.crops(frames, generator)
        if self.copy_paste > 0:
            image, mask = paste_targets(image, mask, ignore, self.copy_paste, generator, self.paste_faint)
        x = torch.cat([image, mask, ignore], 1)             # B x 3 x S x S: moved together
        x = random_symmetries(x, self.flip, self.rot90, generator).contiguous()
        out = {"image": x[:, :1].contiguous(), "mask": x[:, 1:2].contiguous()}
        if self.has_ignore:
            out["ignore"] = x[:, 2:3].contiguous()
        return out

    def crop_corners(self, frames: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (top, left) of each frame's crop window in its (padded) frame, int64 B vectors."""
        size, device = self.size, self.device
        height = torch.clamp(self.height[frames], min=size)      # padded bottom/right up to the crop
        width = torch.clamp(self.width[frames], min=size)
        zero = torch.zeros_like(height)
        top, left = integers(generator, zero, height - size), integers(generator, zero, width - size)
        b = len(frames)
        # a point the window must hold: a mined false alarm (FOCUS_PROB), else a target pixel (target_prob)
        hard = self.hard_count[frames]
        focus = (hard > 0) & (torch.rand(b, generator=generator, device=device) < FOCUS_PROB)
        pick = torch.clamp(self.hard_start[frames] + integers(generator, zero, torch.clamp(hard - 1, min=0)),
                           max=len(self.hard_pixels) - 1)      # (frames without points: any row, unused)
        scale = torch.stack([self.height[frames] / self.native[frames, 0],
                             self.width[frames] / self.native[frames, 1]], 1)          # base_size resize
        hard_point = (self.hard_pixels[pick].double() * scale).long()
        count = self.target_count[frames]
        aim = ~focus & (count > 0) & (torch.rand(b, generator=generator, device=device) < self.target_prob)
        pick = torch.clamp(self.target_start[frames] + integers(generator, zero, torch.clamp(count - 1, min=0)),
                           max=len(self.target_pixels) - 1)
        point = torch.where(focus[:, None], hard_point, self.target_pixels[pick].long())
        row = torch.minimum(torch.clamp(point[:, 0], min=0), height - 1)
        col = torch.minimum(torch.clamp(point[:, 1], min=0), width - 1)
        aimed_top = integers(generator, torch.clamp(row - size + 1, min=0), torch.minimum(row, height - size))
        aimed_left = integers(generator, torch.clamp(col - size + 1, min=0), torch.minimum(col, width - size))
        placed = focus | aim
        return torch.where(placed, aimed_top, top), torch.where(placed, aimed_left, left)

    def crops(self, frames: torch.Tensor, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (image, mask, ignore) crops of the frames, each B x 1 x S x S float32 (0 outside a small frame)."""
        size = self.size
        top, left = self.crop_corners(frames, generator)
        steps = torch.arange(size, device=self.device)
        rows = top[:, None] + steps                                   # B x S
        cols = left[:, None] + steps
        inside = (rows < self.height[frames, None])[:, :, None] & (cols < self.width[frames, None])[:, None, :]
        index = self.offset[frames, None, None] + rows[:, :, None] * self.width[frames, None, None] + cols[:, None, :]
        index = torch.where(inside, index, torch.zeros_like(index))   # B x S x S
        image = self.pixels[index].float() * self.scale * inside
        bits = self.labels[index] * inside
        mask, ignore = (bits & 1).float(), ((bits >> 1) & 1).float()
        return image[:, None], mask[:, None], ignore[:, None]


def random_symmetries(x: torch.Tensor, flip: bool, rot90: bool, generator: torch.Generator) -> torch.Tensor:
    """Return B x C x S x S crops each flipped, transposed and turned at random, as TrainTransform does one crop:
    horizontal flip (p 0.5), vertical flip (p 0.5), transposition (p 0.5), then 0-3 quarter turns (uniform)."""
    b, device = x.shape[0], x.device

    def per_crop(on: torch.Tensor, turned: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return torch.where(on[:, None, None, None], turned, current)

    if flip:
        x = per_crop(torch.rand(b, generator=generator, device=device) < 0.5, x.flip(-1), x)
        x = per_crop(torch.rand(b, generator=generator, device=device) < 0.5, x.flip(-2), x)
    if rot90:
        x = per_crop(torch.rand(b, generator=generator, device=device) < 0.5, x.transpose(-2, -1), x)
        turns = torch.randint(0, 4, (b,), generator=generator, device=device)
        out = x
        for k in (1, 2, 3):
            out = per_crop(turns == k, torch.rot90(x, k, (-2, -1)), out)
        x = out
    return x


def window_sums(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, half: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum, pixel count) of B x H x W x over the (2 half + 1)-px square around each of the B x K pixels
    (rows, cols), cut to the frame; from an integral image (float64), so only the K windows cost anything."""
    b, height, width = x.shape
    integral = F.pad(x.double().cumsum(1).cumsum(2), (1, 0, 1, 0))          # B x (H + 1) x (W + 1)
    r0, r1 = torch.clamp(rows - half, min=0), torch.clamp(rows + half + 1, max=height)
    c0, c1 = torch.clamp(cols - half, min=0), torch.clamp(cols + half + 1, max=width)
    batch = torch.arange(b, device=x.device)[:, None]
    total = (integral[batch, r1, c1] - integral[batch, r0, c1] - integral[batch, r1, c0]
             + integral[batch, r0, c0])
    return total, ((r1 - r0) * (c1 - c0)).double()


def paste_targets(image: torch.Tensor, mask: torch.Tensor, ignore: torch.Tensor, prob: float,
                  generator: torch.Generator, faint: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (image, mask) of B x 1 x S x S crops with 1-3 synthetic targets pasted on each with probability prob.

    ``utils.data.synthetic.paste_targets``' rules on each chosen crop: up to 4 centres per
    target drawn uniformly at least EDGE_MARGIN_PX inside the crop, a centre kept when it is
    MIN_SEPARATION_PX (square) from every target or ignored pixel and (round) from the centres kept
    before it; each blob a rotated elliptical Gaussian of half-maximum diameter DIAMETER_PX whose
    peak is SCR_RANGE times the standard deviation of the crop in the CLUTTER_WINDOW_PX window around
    it (at least MIN_PEAK grey levels), or with probability ``faint`` a faint point (FAINT_DIAMETER_PX,
    FAINT_PEAK grey levels, log-uniform); mask = the blob above MASK_FRACTION of its peak; a pasted
    crop rounded to 8 bits and clipped to [0, 1].
    """
    b, _, size, _ = image.shape
    device = image.device
    if size < 2 * EDGE_MARGIN_PX + 1:
        return image, mask
    chosen = torch.rand(b, generator=generator, device=device) < prob
    wanted = torch.randint(PASTE_COUNT[0], PASTE_COUNT[1] + 1, (b,), generator=generator, device=device)
    k = CANDIDATES
    centre = uniform(generator, (b, k, 2), EDGE_MARGIN_PX, size - EDGE_MARGIN_PX, device)   # (row, col)
    cell = centre.long()
    # free: no target or ignored pixel in the square of MIN_SEPARATION_PX around it (paste_targets' dilation)
    busy, _ = window_sums(((mask + ignore) > 0)[:, 0].float(), cell[..., 0], cell[..., 1], MIN_SEPARATION_PX)
    free = busy == 0                                                                          # B x K
    kept = torch.zeros(b, k, dtype=torch.bool, device=device)
    for j in range(k):          # in order, as paste_targets takes them: apart from those kept before
        apart = ((centre[:, :j] - centre[:, j:j + 1]) ** 2).sum(-1) >= MIN_SEPARATION_PX ** 2
        apart = (apart | ~kept[:, :j]).all(1)
        kept[:, j] = chosen & (j < 4 * wanted) & free[:, j] & apart & (kept[:, :j].sum(1) < wanted)
    scaled = image[:, 0] * 255.0                                                          # B x S x S grey levels
    total, count = window_sums(scaled, cell[..., 0], cell[..., 1], CLUTTER_WINDOW_PX)
    squares, _ = window_sums(scaled ** 2, cell[..., 0], cell[..., 1], CLUTTER_WINDOW_PX)
    std = torch.sqrt(torch.clamp(squares / count - (total / count) ** 2, min=0)).float()   # B x K, grey levels
    batch = torch.arange(b, device=device)[:, None]
    diameter = uniform(generator, (b, k), *DIAMETER_PX, device)
    sigma = diameter / FWHM_PER_SIGMA
    sx = sigma * uniform(generator, (b, k), 0.8, 1.25, device)
    sy = sigma * uniform(generator, (b, k), 0.8, 1.25, device)
    angle = uniform(generator, (b, k), 0.0, math.pi, device)
    scr = uniform(generator, (b, k), *SCR_RANGE, device)
    peak = torch.clamp(scr * std, min=MIN_PEAK)
    if faint > 0:               # drawn only then, so that the default stream is kept
        weak = torch.rand((b, k), generator=generator, device=device) < faint
        scale = uniform(generator, (b, k), *FAINT_DIAMETER_PX, device) / diameter   # the faint diameter, same axes
        sx, sy = torch.where(weak, sx * scale, sx), torch.where(weak, sy * scale, sy)
        level = torch.exp(uniform(generator, (b, k), math.log(FAINT_PEAK[0]), math.log(FAINT_PEAK[1]), device))
        peak = torch.where(weak, level, peak)
    # each blob on a fixed window around its centre's pixel, cut where paste_targets cuts it (4 sigma)
    offsets = torch.arange(-BLOB_HALF, BLOB_HALF + 2, device=device)
    rows = cell[..., 0, None] + offsets                                                   # B x K x W
    cols = cell[..., 1, None] + offsets
    half = torch.ceil(4 * torch.maximum(sx, sy)).long()[..., None]
    row_in = (offsets >= -half) & (offsets < half + 2) & (rows >= 0) & (rows < size)
    col_in = (offsets >= -half) & (offsets < half + 2) & (cols >= 0) & (cols < size)
    dy = rows.float() - centre[..., 0, None]
    dx = cols.float() - centre[..., 1, None]
    cos, sin = torch.cos(angle)[..., None, None], torch.sin(angle)[..., None, None]
    u = dx[..., None, :] * cos + dy[..., :, None] * sin                                  # B x K x W x W
    v = -dx[..., None, :] * sin + dy[..., :, None] * cos
    shape = torch.exp(-0.5 * ((u / sx[..., None, None]) ** 2 + (v / sy[..., None, None]) ** 2))
    valid = row_in[..., :, None] & col_in[..., None, :] & kept[..., None, None]
    where = (batch[..., None, None] * size * size + rows[..., :, None].clamp(0, size - 1) * size
             + cols[..., None, :].clamp(0, size - 1))
    where = where.expand_as(shape).reshape(-1)      # positions outside a blob's window add 0
    signal = torch.zeros(b * size * size, device=device)
    signal.index_add_(0, where, (peak[..., None, None] * shape * valid).reshape(-1))
    pasted = torch.zeros(b * size * size, device=device)
    pasted.index_add_(0, where, ((shape > MASK_FRACTION) & valid).float().reshape(-1))
    out = torch.clamp(torch.round(scaled + signal.view(b, size, size)), 0, 255) / 255.0
    image = torch.where(chosen[:, None, None, None], out[:, None], image)
    return image, torch.maximum(mask, (pasted.view(b, 1, size, size) > 0).float())
