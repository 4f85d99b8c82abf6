"""Applying the second stage: a trained verifier re-scores LRRNet's candidates of a frame and puts the rejected
ones below the detection threshold (``Verification``; ``inference.py`` loads it from a checkpoint with
``load_verification``).

Each connected component of p > t (t = 0.5, the detection threshold) is a candidate; its inputs are a
patch of the frame, of the probabilities and of its own pixels, and five numbers (``candidate_inputs``).
A candidate scoring s < tau is rejected, and its pixels' probabilities are multiplied by (s / tau) * t,
which puts them below t. Accepted candidates and every other pixel are unchanged, so the maps, masks,
detections and scores downstream all see the same decision. Training it: ``utils.verify.train``.
"""
from __future__ import annotations

import numpy as np
import torch

from models import CheckpointError
from models.verifier import CandidateVerifier, VerifierConfig
from utils.eval.metrics import THRESHOLD, Components, find_components
from utils.infer.predict import component_table

# ----------------------------------------------------------------------------- inputs of one frame


def candidate_inputs(frame: np.ndarray, prob: np.ndarray, threshold: float = THRESHOLD, patch: int = 48
                     ) -> tuple[Components, np.ndarray, np.ndarray]:
    """Return (components of prob > threshold, patches N x 3 x P x P float32, features N x 5 float32).

    Patch channels: the frame (float in [0, 1]; reflected beyond its border), the probabilities
    and the candidate's own pixels (0 beyond the border), centred on the rounded centroid.
    Features: area (px), peak and mean probability, box width and height (px).
    """
    comps = find_components(np.asarray(prob) > threshold)
    if comps.n == 0:
        return comps, np.zeros((0, 3, patch, patch), np.float32), np.zeros((0, 5), np.float32)
    t = component_table(prob, comps)
    half = patch // 2
    image = np.pad(np.asarray(frame, np.float32), half, mode="reflect")
    probs = np.pad(np.asarray(prob, np.float32), half)
    labels = np.pad(comps.labels(), half)
    rows = np.rint(t["y"]).astype(np.int64)[:, None] + np.arange(patch)  # in padded coordinates: centre +- half
    cols = np.rint(t["x"]).astype(np.int64)[:, None] + np.arange(patch)
    window = (rows[:, :, None], cols[:, None, :])
    own = labels[window] == np.arange(1, comps.n + 1)[:, None, None]
    patches = np.stack([image[window], probs[window], own.astype(np.float32)], 1)
    features = np.stack([t["area"], t["peak"], t["mean"], t["width"], t["height"]], 1).astype(np.float32)
    return comps, patches, features


def suppress(prob: np.ndarray, comps: Components, scores: np.ndarray, tau: float, threshold: float) -> np.ndarray:
    """Return prob with each rejected component (score < tau) multiplied by (score / tau) * threshold (and kept
    strictly below threshold, which float rounding of a p = 1 pixel could otherwise reach)."""
    rejected = scores < tau
    if not rejected.any():
        return prob
    factor = np.ones(comps.n + 1, np.float32)
    factor[1:][rejected] = (scores[rejected] / tau) * threshold
    out = np.array(prob, np.float32, copy=True, order="C")        # C order: reshape(-1) below must be a view
    flat = out.reshape(-1)
    sel = rejected[comps.label - 1]                              # the pixels of rejected components only
    below = np.nextafter(np.float32(threshold), np.float32(0))   # float rounding may land on t itself: stay under
    hit = comps.index[sel]
    flat[hit] = np.minimum(flat[hit] * factor[comps.label[sel]], below)
    return out


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Return the k-th (0..7) of the 8 rotations and flips of N x C x P x P patches."""
    x = torch.rot90(x, k % 4, (2, 3))
    return x.flip(3) if k >= 4 else x


@torch.inference_mode()
def score_patches(net: CandidateVerifier, patches: np.ndarray, features: np.ndarray, device: torch.device,
                  batch: int = 256) -> np.ndarray:
    """Return the verifier's probabilities (float64, N) for candidate inputs: the mean over the patches' 8 rotations
    and flips (on the IR-Drone-Video val frames this kept 0.5 points more Pd at equal false alarms than one view)."""
    net.eval()
    out = []
    for k in range(0, len(patches), batch):
        x = torch.from_numpy(np.asarray(patches[k:k + batch], np.float32)).to(device)
        f = torch.from_numpy(np.asarray(features[k:k + batch], np.float32)).to(device)
        views = torch.cat([dihedral(x, turn) for turn in range(8)])        # one forward for all 8 views
        out.append(torch.sigmoid(net(views, f.repeat(8, 1))).view(8, -1).mean(0).cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


class Verification:
    """A trained verifier and its acceptance level, applied to each frame's probabilities after LRRNet."""

    def __init__(self, net: CandidateVerifier, tau: float, device: torch.device | str = "cpu"):
        if not 0 < tau <= 1:
            raise ValueError(f"verifier tau {tau} must lie in (0, 1]")
        self.device = torch.device(device)
        self.net, self.tau = net.to(self.device).eval(), float(tau)

    def __call__(self, frame: np.ndarray, prob: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
        """Return prob with the rejected candidates (components of prob > threshold) put below threshold."""
        comps, patches, features = candidate_inputs(frame, prob, threshold, self.net.config.patch)
        if comps.n == 0:
            return prob
        return suppress(prob, comps, score_patches(self.net, patches, features, self.device), self.tau, threshold)

    def describe(self) -> dict:
        """Return what a manifest records of it."""
        return {"tau": self.tau, "patch": self.net.config.patch,
                "parameters": sum(p.numel() for p in self.net.parameters())}


def describe_verification(predictor) -> dict | None:
    """Return what a report records of the predictor's attached verifier (its ``describe()``), None without one."""
    verification = getattr(predictor, "verification", None)
    return verification.describe() if verification is not None else None


def load_verification(meta: dict, device: torch.device | str = "cpu") -> Verification | None:
    """Return the Verification stored in a checkpoint's metadata (``load_model``'s meta), None when it has none."""
    entry = meta.get("verifier")
    if not isinstance(entry, dict):
        return None
    try:
        net = CandidateVerifier(VerifierConfig(**entry["hparams"]))
        net.load_state_dict(entry["state_dict"], strict=True)
        return Verification(net, float(entry["tau"]), device)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"the checkpoint's verifier entry does not load ({str(error).splitlines()[0]}); "
                              "rewrite it with python -m utils.verify, or run with --no-verify") from None
