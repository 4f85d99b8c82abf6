"""Is the reconstruction low-rank? Singular-value spectra of frames, reconstructions and background features.

    python -m utils.lowrank --checkpoint checkpoints/lrrnet_sirst_v1.pt --data-root DIR --split test \
        --out results/lowrank/sirst_v1 [--frames N] [--device auto] [--log-level info]

LRRNet's premise (docs/network.md#why-a-low-rank-background) is that an infrared frame is a
low-rank background plus a sparse target, and that the network reconstructs the background in
feature space. This command measures it. For every frame it takes four matrices:

- ``frame``: the input frame, H x W, intensity in [0, 1];
- ``D``: the network's reconstruction of the frame, H x W;
- ``shallow``: the shallow features u = init_conv(frame), 16 x H x W (the minuend of the head);
- ``background``: the decoder's last output x, 16 x H x W, the reconstructed background features
  that the head subtracts from u (``y = out_resblock(u - x)`` in models/lrrnet.py). Both feature
  maps are captured with forward hooks (on ``net.init_conv`` and ``net.ups[-1]``) and cropped from
  the padded size back to H x W.

A C x H x W feature map is decomposed channel by channel: each channel is an H x W matrix,
like the frame, so its spectrum has the same length (min(H, W)) and its numbers are directly
comparable with the frame's; and the paper's claim is about *spatial* low rank (a background
image whose rows are nearly linear combinations of a few rows), which is what the rank of an
H x W map measures. A (C*H) x W unfolding would mix the channel axis into the row space and
change the spectrum's length; a C x (H*W) unfolding would measure channel redundancy (rank
<= 16), not spatial structure. The feature map's numbers are the means over its channels of
the per-channel numbers (channels that are exactly zero are left out), and its plotted
spectrum is the mean over channels of the per-channel normalised spectra.

For a spectrum s_1 >= s_2 >= ... >= s_n >= 0 (no centring: the mean level of the frame is part
of the background and lands mostly in s_1):

- effective rank (Roy & Vetterli, "The effective rank: a measure of effective dimensionality",
  EUSIPCO 2007): p_i = s_i / sum(s), erank = exp(-sum p_i log p_i), between 1 (rank 1) and n
  (all singular values equal);
- energy in the top k: sum_{i<=k} s_i^2 / sum s_i^2, for k = 1, 5, 10 (1.0 when n <= k).

Every number is also given for M - mean(M) (columns ending in ``_centred``; each channel
centred on its own mean): a constant level alone is a rank-1 matrix, so an uncentred frame on
a bright, flat background looks nearly rank 1 whatever its structure, and the centred numbers
show the structure beyond the mean level.

Writes OUT/lowrank.csv (one row per frame and kind), OUT/lowrank.json (means and medians per
kind, the fraction of frames where D's effective rank is below the frame's and where the
background features' is below the shallow features', the verdict) and OUT/spectra.png
(spectra normalised by s_1, as is and centred: median and interquartile band per kind, log
scale), all atomically. The verdict uses the uncentred effective rank: D counts as lower-rank
than the frame when its median is lower and it is lower in more than half of the frames.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from models import CheckpointError, load_model
from utils import RESULTS_DIR
from utils.cli import ArgumentParser, BoolFlag, add_device, add_log_level, fail, positive_int, setup_logging
from utils.data import LAYOUTS, SPLITS, DataError, IRSTDDataset, resolve_data_root
from utils.files import OutputError, atomic_write, atomic_write_text, check_output, write_json
from utils.infer.device import select_device

logger = logging.getLogger(__name__)

KINDS = ("frame", "D", "shallow", "background")  # the matrices measured per frame
TOP_K = (1, 5, 10)                               # energy fractions in the top-k singular values
BASE_METRICS = ("effective_rank",) + tuple(f"energy_top{k}" for k in TOP_K)
METRICS = BASE_METRICS + tuple(f"{m}_centred" for m in BASE_METRICS)  # "_centred": of M - mean(M)
CSV_FIELDS = ("frame", "kind", "height", "width", "channels", "n_singular") + METRICS
PLOT_COLOURS = {"frame": "tab:blue", "D": "tab:orange", "shallow": "tab:green", "background": "tab:red"}
OUTPUTS = ("lowrank.csv", "lowrank.json", "spectra.png")  # written into --out


# ----------------------------------------------------------------------------- spectra


def singular_values(matrices: torch.Tensor) -> torch.Tensor:
    """Return the singular values (float64, descending) of a ... x H x W batch of matrices: ... x min(H, W).

    Runs on one CPU thread: on this project's 2-core machine, shared with other jobs, MKL's
    batched SVD with 2 threads took 20-60 s for 32 matrices of 256 x 256 against 1 s with one
    (threads spinning at barriers on an oversubscribed CPU); idle, the difference is small.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.svdvals(matrices.detach().to("cpu", torch.float64))
    finally:
        torch.set_num_threads(threads)


def effective_rank(s: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return exp(Shannon entropy of s / sum(s)) over the last axis: a rank between 1 and len(s); NaN for s = 0."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = s / total
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = terms.sum(axis=-1)
    return np.where(total[..., 0] > 0, np.exp(entropy), np.nan)


def energy_fraction(s: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """Return sum of the top-k squared singular values / sum of all squared (a fraction; 1 when len(s) <= k)."""
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    energy = np.asarray(s, dtype=np.float64) ** 2
    total = energy.sum(axis=-1)
    top = np.sort(energy, axis=-1)[..., ::-1][..., :k].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, top / total, np.nan)


def spectrum_metrics(s: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Return effective_rank and energy_top{1,5,10} of one spectrum, or the channel means for a C x n batch."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    alive = s.sum(axis=-1) > 0  # an all-zero channel has no spectrum to speak of
    if not alive.any():
        return {name: float("nan") for name in BASE_METRICS}
    s = s[alive]
    out = {"effective_rank": float(effective_rank(s).mean())}
    for k in TOP_K:
        out[f"energy_top{k}"] = float(energy_fraction(s, k).mean())
    return out


def normalised_spectrum(s: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return s / s_1 (1-D), or the mean over the non-zero channels of s_c / s_c1 for a C x n batch."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    s = s[s[:, 0] > 0]
    return (s / s[:, :1]).mean(axis=0) if len(s) else np.full(np.asarray(s).shape[-1], np.nan)


# ----------------------------------------------------------------------------- the network


class FeatureTap:
    """Forward hooks on net.init_conv (shallow features u) and net.ups[-1] (background features x)."""

    def __init__(self, net: torch.nn.Module):
        missing = [name for name in ("init_conv", "ups") if not hasattr(net, name)]
        if missing:
            raise CheckpointError(f"the network has no {missing}: utils.lowrank reads LRRNet's features; "
                                  "pass an LRRNet checkpoint")
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [net.init_conv.register_forward_hook(self._keep("shallow")),
                         net.ups[-1].register_forward_hook(self._keep("background"))]

    def _keep(self, kind: str):
        def hook(_module, _inputs, output):
            self.features[kind] = output.detach()
        return hook

    def remove(self) -> None:
        """Remove the hooks from the network."""
        for handle in self._handles:
            handle.remove()


@torch.inference_mode()
def frame_matrices(net: torch.nn.Module, tap: FeatureTap, frame: torch.Tensor,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """Return {kind: C x H x W matrices} for one 1 x H x W frame in [0, 1]: C = 1 for frame and D, 16 for features."""
    h, w = frame.shape[-2:]
    d, _ = net(frame[None].to(device, torch.float32))                # 1 x 1 x H x W
    out = {"frame": frame, "D": d[0]}
    for kind in ("shallow", "background"):
        out[kind] = tap.features[kind][0, :, :h, :w]                # C x H x W, padding cropped
    return {kind: m.contiguous() for kind, m in out.items()}


def matrix_spectra(matrices: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Return (singular values, singular values after subtracting each matrix's mean): C x min(H, W) each."""
    m = matrices.detach().to("cpu", torch.float64)
    centred = m - m.mean(dim=(-2, -1), keepdim=True)
    both = singular_values(torch.stack((m, centred)))               # one batched SVD: 2 x C x n
    return both[0].numpy(), both[1].numpy()


def pick_frames(n_total: int, n_wanted: int | None) -> list[int]:
    """Return the indices of n_wanted frames spread evenly over the split (all of them when None or >= n_total)."""
    if n_wanted is None or n_wanted >= n_total:
        return list(range(n_total))
    return sorted(set(np.linspace(0, n_total - 1, n_wanted).round().astype(int).tolist()))


# ----------------------------------------------------------------------------- summaries and writers


def summarise(rows: Sequence[dict]) -> dict:
    """Return {"kinds": {kind: {metric: {mean, median}}}, "fraction_...": ...} over the CSV rows."""
    by_kind: dict[str, dict[str, list[float]]] = {kind: {m: [] for m in METRICS} for kind in KINDS}
    ranks: dict[str, dict[tuple[str, str], float]] = {kind: {} for kind in KINDS}
    for row in rows:
        for m in METRICS:
            by_kind[row["kind"]][m].append(row[m])
        for m in ("effective_rank", "effective_rank_centred"):
            ranks[row["kind"]][(m, row["frame"])] = row[m]
    kinds = {kind: {m: {"mean": float(np.nanmean(v)) if v else float("nan"),
                        "median": float(np.nanmedian(v)) if v else float("nan")}
                    for m, v in values.items()} for kind, values in by_kind.items()}

    def fraction_below(low: str, high: str, metric: str) -> float:
        keys = sorted(k for k in ranks[low].keys() & ranks[high].keys() if k[0] == metric)
        below = [ranks[low][k] < ranks[high][k] for k in keys]
        return float(np.mean(below)) if below else float("nan")

    return {"kinds": kinds,
            "fraction_D_below_frame": fraction_below("D", "frame", "effective_rank"),
            "fraction_D_below_frame_centred": fraction_below("D", "frame", "effective_rank_centred"),
            "fraction_background_below_shallow": fraction_below("background", "shallow", "effective_rank"),
            "fraction_background_below_shallow_centred": fraction_below("background", "shallow",
                                                                        "effective_rank_centred")}


def d_is_lower_rank(summary: dict, suffix: str = "") -> bool:
    """Return True when D's median effective rank is below the frame's and D is lower in most frames."""
    kinds = summary["kinds"]
    metric = "effective_rank" + suffix
    return bool(kinds["D"][metric]["median"] < kinds["frame"][metric]["median"]
                and summary["fraction_D_below_frame" + suffix] > 0.5)


def verdict(summary: dict) -> str:
    """Return one line: whether D is lower-rank than the frame (median effective ranks, fraction of frames)."""
    k = summary["kinds"]
    d, f = k["D"]["effective_rank"]["median"], k["frame"]["effective_rank"]["median"]
    dc, fc = k["D"]["effective_rank_centred"]["median"], k["frame"]["effective_rank_centred"]["median"]
    b, s = k["background"]["effective_rank"]["median"], k["shallow"]["effective_rank"]["median"]
    return (f"D is {'' if d_is_lower_rank(summary) else 'NOT '}lower-rank than the frame: median effective rank "
            f"{d:.2f} vs {f:.2f}, lower in {100 * summary['fraction_D_below_frame']:.1f} % of frames "
            f"(mean subtracted: {dc:.2f} vs {fc:.2f}, {100 * summary['fraction_D_below_frame_centred']:.1f} %); "
            f"background features {b:.2f} vs shallow features {s:.2f} "
            f"(lower in {100 * summary['fraction_background_below_shallow']:.1f} %)")


def format_table(summary: dict) -> str:
    """Return a markdown table: kind x mean (median) effective rank and energy fractions, as is and mean subtracted."""
    lines = ["| kind | eff. rank, mean (median) | top-1 energy | top-5 | top-10 "
             "| mean subtracted: eff. rank, mean (median) | top-1 | top-10 |",
             "|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        k = summary["kinds"][kind]
        cells = [f"{k['effective_rank']['mean']:.2f} ({k['effective_rank']['median']:.2f})"]
        cells += [f"{k[f'energy_top{t}']['mean']:.4f}" for t in TOP_K]
        cells += [f"{k['effective_rank_centred']['mean']:.2f} ({k['effective_rank_centred']['median']:.2f})",
                  f"{k['energy_top1_centred']['mean']:.4f}", f"{k['energy_top10_centred']['mean']:.4f}"]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Write the per-frame rows (fractions and ranks with 6 significant digits) to a CSV file, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})
    atomic_write_text(path, buffer.getvalue())


def plot_spectra(path: Path, panels: dict[str, dict[str, list[np.ndarray]]], title: str) -> None:
    """Write normalised spectra (s_i / s_1, log y), one panel per variant: median line and interquartile band per kind."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, no display; imported only here
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2 * len(panels), 4.4), dpi=120)
    FigureCanvasAgg(figure)
    for j, (variant, spectra) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), j + 1)
        for kind in KINDS:
            curves = [c for c in spectra[kind] if np.isfinite(c).all()]
            if not curves:
                continue
            n = min(len(c) for c in curves)                # frames of several sizes: the shortest spectrum
            stack = np.clip(np.stack([c[:n] for c in curves]), 1e-12, None)  # zeros have no place on a log axis
            q25, q50, q75 = np.percentile(stack, [25, 50, 75], axis=0)
            index = np.arange(1, n + 1)
            axes.fill_between(index, q25, q75, color=PLOT_COLOURS[kind], alpha=0.2, linewidth=0)
            axes.plot(index, q50, color=PLOT_COLOURS[kind], label=kind)
        axes.set_yscale("log")
        axes.set_xlabel("singular value index i")
        axes.set_ylabel("s_i / s_1 (median over frames, IQR band)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="upper right")
        axes.set_title(f"{variant}", fontsize=9)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    atomic_write(path, lambda f: figure.savefig(f, format="png"))


# ----------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = ArgumentParser(
        prog="python -m utils.lowrank",
        description="Singular-value spectra, effective rank and top-k energy of frames, LRRNet's reconstruction D "
                    "and its background features (docs/network.md#why-a-low-rank-background).")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="run_configs.py checkpoint or the authors' state_dict")
    parser.add_argument("--data-root", required=True, help="dataset folder, or a release name read from ./datasets/")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to measure (default test)")
    parser.add_argument("--layout", default=None, choices=LAYOUTS, help="dataset layout (default: detected)")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="measure N frames spread evenly over the split (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/lowrank/NAME)")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace the files of an earlier measurement in --out")
    parser.add_argument("--quiet", action=BoolFlag, help="no progress bar")
    add_device(parser)
    add_log_level(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the spectra; print the table and verdict, write lowrank.csv/.json and spectra.png; 0, or 2 on an error."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        device = select_device(args.device)
    except ValueError as error:  # select_device names the device and the fix
        return fail(str(error))
    try:
        root = resolve_data_root(args.data_root)
        out = args.out if args.out is not None else RESULTS_DIR / "lowrank" / root.name
        for name in OUTPUTS:
            check_output(out / name, args.overwrite, [("--checkpoint", args.checkpoint)], label=str(out / name))
        net, meta = load_model(args.checkpoint)
        tap = FeatureTap(net)
        dataset = IRSTDDataset(root, args.split, args.layout)
    except (CheckpointError, DataError, OutputError) as error:
        return fail(str(error))
    if len(dataset) == 0:
        return fail(f"split {args.split} of {root} holds no frames: pick another --split or --data-root")
    net = net.to(device).eval()
    chosen = pick_frames(len(dataset), args.frames)

    rows: list[dict] = []
    spectra: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
    centred_spectra: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
    for i in tqdm(chosen, desc="lowrank", unit="frame", disable=True if args.quiet else None, file=sys.stderr):
        item = dataset[i]
        h, w = item["image"].shape[-2:]
        for kind, matrices in frame_matrices(net, tap, item["image"], device).items():
            s, s_centred = matrix_spectra(matrices)
            centred = {f"{k}_centred": v for k, v in spectrum_metrics(s_centred).items()}
            rows.append({"frame": item["name"], "kind": kind, "height": h, "width": w, "channels": s.shape[0],
                         "n_singular": s.shape[-1], **spectrum_metrics(s), **centred})
            spectra[kind].append(normalised_spectrum(s))
            centred_spectra[kind].append(normalised_spectrum(s_centred))
    tap.remove()

    summary = summarise(rows)
    line = verdict(summary)
    report = {"checkpoint": str(args.checkpoint), "data_root": str(root), "split": args.split,
              "n_frames": len(chosen), "n_split": len(dataset), "device": str(device),
              **summary, "D_lower_rank_than_frame": d_is_lower_rank(summary),
              "D_lower_rank_than_frame_centred": d_is_lower_rank(summary, "_centred"),
              "verdict": line,
              "definitions": {
                  "effective_rank": "exp(Shannon entropy of s / sum(s)) (Roy & Vetterli 2007); 1 = rank one",
                  "energy_topk": "sum of the k largest s^2 / sum of all s^2",
                  "_centred": "the same numbers for M - mean(M) (each channel's own mean for features)",
                  "frame, D": "the H x W matrix, no centring",
                  "shallow, background": "each of the 16 channels as an H x W matrix; channel means of the numbers",
                  "background": "output of net.ups[-1] (x in y = out_resblock(u - x)), cropped to H x W",
                  "shallow": "output of net.init_conv (u), cropped to H x W"},
              "checkpoint_meta": {k: meta[k] for k in ("epoch", "selected_weights", "code_revision", "source")
                                  if k in meta}}
    write_csv(out / "lowrank.csv", rows)
    write_json(out / "lowrank.json", report)
    plot_spectra(out / "spectra.png", {"as is": spectra, "mean subtracted": centred_spectra},
                 f"{args.checkpoint.name} on {root.name}/{args.split}, {len(chosen)} frames")
    print(format_table(summary))
    print(line)
    print(f"wrote {out / 'lowrank.csv'}, {out / 'lowrank.json'} and {out / 'spectra.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
