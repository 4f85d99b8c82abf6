"""Training configuration: one frozen dataclass, named configs, and type-checked command-line overrides.

Precedence: dataclass defaults < named config < command line. Every named config
says in its comments why a value differs from the default.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as config.json in the run directory and inside every checkpoint."""

    # data
    dataset: str = "SIRSTv1"        # a release name (-> ./datasets/NAME) or a path; see datasets/README.md
    data_root: str = ""             # overrides dataset when set
    layout: str = "auto"            # auto, folder, sirst, basicirstd
    val_fraction: float = 0.1       # val subset carved from the training frames where a layout has no val split
    val_seed: int = 0
    crop_size: int = 256            # random training crops (0: whole frames, batch 1 or base_size)
    base_size: int = 0              # > 0: resize every training frame to base_size x base_size (the release)
    target_prob: float = 0.5        # chance that a crop is placed to contain a target
    flip: bool = True
    rot90: bool = True              # transposition and 90-degree rotations
    sixteen_bit: str = "range"      # how 16-bit frames become [0, 1]: range or percentile
    synthetic: bool = False         # generate synthetic scenes into the run directory instead of reading data
    synthetic_frames: int = 96      # trainval frames (test gets half as many)
    synthetic_size: int = 128
    # model
    model: str = "LRRNet"
    dropout: float = 0.2
    target_prior: float = 0.0       # > 0: start the target head at this probability (bias = logit); 0: PyTorch init
    init: str = ""                  # start from these weights (a run_configs.py .pt or a release state_dict): fine-tuning
    # optimisation
    epochs: int = 400
    batch_size: int = 8
    steps_per_epoch: int = 0        # 0: one pass over the training frames; > 0: that many sampled batches
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "poly"          # poly (the release), cosine, constant; stepped every iteration
    poly_power: float = 0.9
    warmup_iters: int = 0
    min_lr_ratio: float = 0.0       # cosine floor as a fraction of lr
    grad_clip: float = 0.0          # max gradient norm; 0: off
    ema_decay: float = 0.0          # exponential moving average of the weights; 0: off
    loss: str = "release"           # release: the release's effective loss exactly; weighted: the weights below
    w_softiou: float = 1.0
    w_l1: float = 0.0               # weight of mean(sigmoid(T)), a differentiable sparsity term
    w_mse: float = 0.1
    nan_patience: int = 5           # non-finite losses in a row before the run stops
    # validation and logging
    val_every: int = 1
    image_every: int = 5            # TensorBoard image grids every N validations
    # runtime
    device: str = "auto"            # auto, cpu, cuda, cuda:N
    amp: str = "auto"               # auto (bf16 on CUDA where supported, else fp16; off on the CPU), off, bf16, fp16
    channels_last: bool = True
    compile: bool = False
    workers: int = 0
    seed: int = 1
    deterministic: bool = False
    out: str = ""                   # run directory; default runs/<time>_<config>
    config_name: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict."""
        return dataclasses.asdict(self)


CHOICES = {
    "layout": ("auto", "folder", "sirst", "basicirstd"),
    "sixteen_bit": ("range", "percentile"),
    "schedule": ("poly", "cosine", "constant"),
    "loss": ("release", "weighted"),
    "amp": ("auto", "off", "bf16", "fp16"),
}

# The release recipe (LRRNET.md section 3): Adam 1e-4, poly 0.9 per iteration, 400 epochs,
# batch 8, seed 1, the release's effective loss. Unlike the release, checkpoints are
# selected on a validation split, never on test.
_RELEASE = dict(epochs=400, batch_size=8, lr=1e-4, schedule="poly", loss="release", seed=1,
                crop_size=0, flip=False, rot90=False, workers=4)

_SIRSTV1_CPU = dict(dataset="SIRSTv1",
                    crop_size=256,           # most SIRST v1 frames are 250-450 px: crops see whole-frame clutter
                    target_prob=0.5,         # half the crops hold a target, half teach the background
                    batch_size=8, steps_per_epoch=14, epochs=70,
                    lr=5e-4, schedule="cosine", warmup_iters=50, min_lr_ratio=0.02,
                    grad_clip=1.0,           # a 5x higher lr than the release: clip the rare large steps
                    ema_decay=0.995,         # averaging smooths the epoch-to-epoch swings of val IoU
                    loss="weighted", w_softiou=1.0, w_l1=0.2, w_mse=0.1,  # a real (differentiable) L1
                    target_prior=0.01,
                    val_every=4,
                    amp="off")               # bf16 autocast: only 8% faster a step here (bench_train)

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "irstd1k": ("release recipe on IRSTD-1K: frames resized to 512 x 512",
                dict(_RELEASE, dataset="IRSTD-1k", base_size=512)),
    "nudt": ("release recipe on NUDT-SIRST: frames resized to 512 x 512",
             dict(_RELEASE, dataset="NUDT-SIRST", base_size=512)),
    "sirstaug": ("release recipe on SIRST-Aug: 256 x 256, flips and transposition",
                 dict(_RELEASE, dataset="sirst_aug", base_size=256, flip=True, rot90=True)),
    "sirstv1": ("release recipe on SIRST v1 (idx_427): resized to 512 x 512, flips and transposition",
                dict(_RELEASE, dataset="SIRSTv1", base_size=512, flip=True, rot90=True)),
    "sirstv1_cpu": ("SIRST v1 stage 1, 82 min on a 2-core CPU: 256 crops, EMA, warm-up + cosine", _SIRSTV1_CPU),
    "sirstv1_ft": ("SIRST v1 stage 2, 36 min on a 2-core CPU: whole frames, from stage 1's best.pt (give it with --init)",
                   dict(_SIRSTV1_CPU,
                        crop_size=0, batch_size=1,   # whole frames, one at a time (their sizes differ)
                        steps_per_epoch=0,           # one pass over the 256 training frames per epoch
                        epochs=10, lr=1e-4, warmup_iters=20,   # a fifth of stage 1's lr: refine, don't restart
                        ema_decay=0.998,             # ~500-step average: 256 single-frame steps an epoch
                        val_every=2)),
    "nudt_cpu": ("NUDT-SIRST in 50 minutes on a 2-core CPU, from SIRST v1 weights (give them with --init)",
                 # from scratch, NUDT's 9-px targets left the head below the prior (p < 0.01 everywhere, val IoU 0)
                 # for 300 steps; the shipped checkpoint started from SIRST v1 stage 1
                 # (git show 010964d:checkpoints/lrrnet_sirst_v1.pt) with --init
                 dict(_SIRSTV1_CPU, dataset="NUDT-SIRST",   # crop 256 = the whole 256 x 256 frame
                      steps_per_epoch=30, epochs=20, val_every=3)),
    "synthetic": ("generated scenes, no data needed; about a minute on a CPU (smoke test and demo)",
                  dict(synthetic=True, synthetic_frames=96, synthetic_size=128,
                       crop_size=64, target_prob=0.8,      # small crops, mostly on targets: many steps a minute
                       batch_size=8, steps_per_epoch=30, epochs=8, lr=2e-3, schedule="cosine", warmup_iters=20,
                       target_prior=0.01,                  # without it the first ~150 steps predict nothing
                       loss="weighted", w_mse=0.1, val_every=1, image_every=3, seed=0)),
}


class ConfigError(ValueError):
    """A bad config name, key or value; the message lists the valid choices."""


def _convert(name: str, kind: type, text: str) -> Any:
    """Return text converted to the field's type; ConfigError naming the field otherwise."""
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        hint = "true or false" if kind is bool else f"a value of type {kind.__name__}"
        raise ConfigError(f"--{name.replace('_', '-')} {text!r}: expected {hint}") from None


FIELD_TYPES = {f.name: {"int": int, "float": float, "str": str, "bool": bool}[f.type] for f in fields(TrainConfig)}


# (low, high, high inclusive): values outside are refused before anything runs
RANGES: dict[str, tuple[float, float | None, bool]] = {
    "epochs": (1, None, True), "batch_size": (1, None, True), "steps_per_epoch": (0, None, True),
    "val_every": (1, None, True), "image_every": (1, None, True), "nan_patience": (1, None, True),
    "crop_size": (0, None, True), "base_size": (0, None, True), "workers": (0, None, True),
    "synthetic_frames": (4, None, True), "synthetic_size": (32, None, True), "warmup_iters": (0, None, True),
    "lr": (0, None, True), "weight_decay": (0, None, True), "grad_clip": (0, None, True),
    "val_fraction": (0, 1, False), "target_prob": (0, 1, True), "dropout": (0, 1, False),
    "ema_decay": (0, 1, False), "target_prior": (0, 1, False), "min_lr_ratio": (0, 1, True),
    "poly_power": (0, None, True), "w_softiou": (0, None, True), "w_l1": (0, None, True), "w_mse": (0, None, True),
}


def _check_range(key: str, value: Any) -> None:
    """Raise ConfigError when a number lies outside its field's range."""
    if key not in RANGES:
        return
    low, high, closed = RANGES[key]
    above = high is not None and (value > high if closed else value >= high)
    if value < low or above or (key == "lr" and value == 0):
        top = "" if high is None else (f", at most {high}" if closed else f", below {high}")
        raise ConfigError(f"--{key.replace('_', '-')} {value!r} is out of range: at least {low}{top}")


def validate(values: dict[str, Any]) -> None:
    """Raise ConfigError for an unknown key, a wrong type or a value outside its choices."""
    for key, value in values.items():
        if key not in FIELD_TYPES:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(FIELD_TYPES))}")
        kind = FIELD_TYPES[key]
        if not (isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))) \
                and not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"config key {key!r} must be {kind.__name__}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{key} {value!r} is not valid; choose one of {', '.join(CHOICES[key])}")
        _check_range(key, value)


def build(name: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Return the resolved config: defaults < named config < overrides."""
    values: dict[str, Any] = {}
    if name is not None:
        if name not in CONFIGS:
            raise ConfigError(f"unknown config {name!r}; named configs: {', '.join(CONFIGS)}")
        values.update(CONFIGS[name][1], config_name=name)
    values.update(overrides or {})
    validate(values)
    return TrainConfig(**{k: float(v) if FIELD_TYPES[k] is float else v for k, v in values.items()})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Return {key: typed value} from ["--key", "value", "--flag=value", ...]; ConfigError on any bad item."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--"):
            raise ConfigError(f"unexpected argument {item!r}; overrides look like --key value")
        key, sep, text = item[2:].partition("=")
        key = key.replace("-", "_")
        if key not in FIELD_TYPES:
            raise ConfigError(f"unknown option --{key.replace('_', '-')}; valid keys: "
                              + ", ".join("--" + k.replace("_", "-") for k in sorted(FIELD_TYPES)))
        if not sep:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise ConfigError(f"--{key.replace('_', '-')} needs a value")
            i += 1
            text = items[i]
        value = _convert(key, FIELD_TYPES[key], text)
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"--{key.replace('_', '-')} {value!r} is not valid; choose one of {', '.join(CHOICES[key])}")
        out[key] = value
        i += 1
    return out


def load(path: Path) -> TrainConfig:
    """Return the config saved in a run directory's config.json."""
    values = json.loads(Path(path).read_text())
    validate(values)
    return TrainConfig(**values)
