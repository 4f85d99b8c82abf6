"""Training configuration: one frozen dataclass, named configs, and the command line generated from it.

Precedence: dataclass defaults < named config < command line. Every field carries a help
sentence, and where it has them its choices and allowed range; ``add_arguments`` turns them
into ``--key value`` options (booleans ``--flag`` / ``--no-flag`` / ``--flag true|false``), and
``validate`` applies the same checks to a config.json. Every named config says in its comments
why a value differs from the default. Recipes and datasets: docs/protocols.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from utils import cli
from utils.cli import DEVICE_PATTERN, BoolFlag
from utils.train.recipes import CONFIGS


class ConfigError(ValueError):
    """A bad config name, key or value; the message lists the valid choices."""


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts: low <= x (or low < x), and x <= high (or x < high) when high is set."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below

    def __str__(self) -> str:
        low = f"{self.low:g} {'<' if self.low_open else '<='} x"
        if self.high is None:
            return f"x {'>' if self.low_open else '>='} {self.low:g}"
        return f"{low} {'<' if self.high_open else '<='} {self.high:g}"


AT_LEAST_0, AT_LEAST_1, ABOVE_0 = Range(0), Range(1), Range(0, low_open=True)
FRACTION, FRACTION_BELOW_1 = Range(0, 1), Range(0, 1, high_open=True)


def option(default: Any, help: str, choices: tuple[str, ...] = (), bounds: Range | None = None) -> Any:
    """Return a dataclass field whose metadata holds its --help sentence, choices and allowed range."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "range": bounds})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as config.json in the run directory and inside every checkpoint."""

    # data
    dataset: str = option("SIRSTv1", "dataset: a release name (read from ./datasets/NAME) or a folder; "
                                     "see datasets/README.md")
    data_root: str = option("", "dataset folder; overrides --dataset when set")
    layout: str = option("auto", "how the dataset folder is organised (auto: detected)",
                         ("auto", "folder", "sirst", "basicirstd"))
    val_fraction: float = option(0.1, "fraction of the training frames kept for validation where the layout has "
                                      "no val split of its own", bounds=FRACTION_BELOW_1)
    val_seed: int = option(0, "seed of that validation subset")
    crop_size: int = option(256, "side of the random training crops in px; 0: whole frames "
                                 "(needs --batch-size 1 or --base-size)", bounds=AT_LEAST_0)
    base_size: int = option(0, "resize every training frame to this square side in px first, as the release "
                               "does; 0: keep the frames' sizes", bounds=AT_LEAST_0)
    target_prob: float = option(0.5, "chance that a crop is placed so that it contains a target", bounds=FRACTION)
    flip: bool = option(True, "random horizontal and vertical flips")
    rot90: bool = option(True, "random transposition and 90-degree rotations")
    sixteen_bit: str = option("range", "how 16-bit frames become [0, 1]: range divides by 65535, percentile "
                                       "stretches each frame's 0.5-99.5 percentiles (raw sensor data)",
                              ("range", "percentile"))
    synthetic: bool = option(False, "train on generated scenes written into the run folder instead of a dataset")
    synthetic_frames: int = option(96, "generated training + validation frames (the test split gets half as many)",
                                   bounds=Range(4))
    synthetic_size: int = option(128, "side of the generated frames in px", bounds=Range(32))
    # several sources in one run (docs/protocols.md#general-model)
    sources: str = option("", "train on several datasets at once: NAME[:WEIGHT],... (release names or folders, "
                              "box-labelled videos included); each source is drawn with its WEIGHT's share of the "
                              "samples, validated on its own val split, and the first one's test split is scored; "
                              "overrides --dataset / --data-root")
    video_every: int = option(30, "take every N-th labelled frame of a video source for training", bounds=AT_LEAST_1)
    video_val_every: int = option(30, "take every N-th labelled frame of a video source for validation",
                                  bounds=AT_LEAST_1)
    copy_paste: float = option(0.0, "chance that a training frame gets 1-3 synthetic targets (utils/synthetic.py's "
                                    "target model, exact masks) pasted onto its background", bounds=FRACTION)
    paste_faint: float = option(0.0, "share of those pasted targets that are faint points instead: half-maximum "
                                     "diameter 1.5-6 px, peak 6-40 grey levels (log-uniform) whatever the clutter",
                                bounds=FRACTION)
    noise_prob: float = option(0.0, "chance that a training crop gets white Gaussian noise", bounds=FRACTION)
    noise_sigma: float = option(10.0, "largest sigma of that noise in grey levels of 255 (drawn uniformly from "
                                      "0 to it)", bounds=AT_LEAST_0)
    hard_negatives: int = option(0, "every N epochs, find the model's false alarms on the training frames and "
                                    "centre crops on them (0: off)", bounds=AT_LEAST_0)
    hard_negative_frac: float = option(0.25, "share of the training samples drawn from frames with mined false "
                                             "alarms, each crop centred on one of them", bounds=FRACTION)
    hard_negative_frames: int = option(0, "training frames scanned per mining, drawn at random (0: all)",
                                       bounds=AT_LEAST_0)
    # model (docs/network.md)
    model: str = option("LRRNet", "network architecture", ("LRRNet",))
    dropout: float = option(0.2, "dropout rate of the network", bounds=FRACTION_BELOW_1)
    target_prior: float = option(0.0, "start the target head at this probability (its bias set to the logit); "
                                      "0: PyTorch's initialisation", bounds=FRACTION_BELOW_1)
    init: str = option("", "start from the weights in this file (a run_configs.py checkpoint or the release's "
                           "state_dict) with a fresh optimiser: fine-tuning")
    # optimisation (docs/network.md for the loss)
    epochs: int = option(400, "epochs to train", bounds=AT_LEAST_1)
    batch_size: int = option(8, "frames per step on each process", bounds=AT_LEAST_1)
    steps_per_epoch: int = option(0, "batches sampled per epoch; 0: one pass over the training frames",
                                  bounds=AT_LEAST_0)
    lr: float = option(1e-4, "peak learning rate of Adam", bounds=ABOVE_0)
    weight_decay: float = option(0.0, "Adam's L2 weight decay", bounds=AT_LEAST_0)
    schedule: str = option("poly", "learning-rate schedule, stepped every iteration (poly is the release's)",
                           ("poly", "cosine", "constant"))
    poly_power: float = option(0.9, "exponent of the poly schedule", bounds=AT_LEAST_0)
    warmup_iters: int = option(0, "iterations of linear warm-up before the schedule", bounds=AT_LEAST_0)
    min_lr_ratio: float = option(0.0, "floor of the cosine schedule as a fraction of --lr", bounds=FRACTION)
    grad_clip: float = option(0.0, "largest gradient norm; larger gradients are scaled down (0: off)",
                              bounds=AT_LEAST_0)
    ema_decay: float = option(0.0, "keep an exponential moving average of the weights with this decay and "
                                   "validate it beside them (0: off)", bounds=FRACTION_BELOW_1)
    loss: str = option("release", "release: the release's loss value exactly; weighted: the three weights below",
                       ("release", "weighted"))
    w_softiou: float = option(1.0, "weight of the SoftIoU term (--loss weighted)", bounds=AT_LEAST_0)
    w_l1: float = option(0.0, "weight of mean(sigmoid(T)), a differentiable sparsity term (--loss weighted)",
                         bounds=AT_LEAST_0)
    w_mse: float = option(0.1, "weight of the reconstruction MSE(D, image) (--loss weighted)", bounds=AT_LEAST_0)
    w_fa: float = option(0.0, "weight of the false-alarm term: mean softplus(T) over each crop's --fa-topk most "
                              "confident background pixels farther than 3 px from a target or box (0: off)",
                         bounds=AT_LEAST_0)
    fa_topk: int = option(16, "background pixels per crop in the false-alarm term", bounds=AT_LEAST_1)
    nan_patience: int = option(5, "non-finite losses or gradients in a row before the run stops (each one "
                                  "skips its step)", bounds=AT_LEAST_1)
    # validation and logging
    val_every: int = option(1, "validate every N epochs (and after the last)", bounds=AT_LEAST_1)
    image_every: int = option(5, "write TensorBoard image grids every N validations", bounds=AT_LEAST_1)
    # runtime
    device: str = option("auto", "auto (CUDA when present, else the CPU), cpu, cuda or cuda:N")
    dtype: str = option("auto", "compute precision: auto is bf16 on CUDA where supported, else fp16 "
                                "(with a loss scaler), and fp32 on the CPU", ("auto", "fp32", "bf16", "fp16"))
    channels_last: bool = option(True, "channels-last memory layout (faster convolutions)")
    compile: bool = option(False, "compile the network with torch.compile")
    workers: int = option(0, "data-loading worker processes", bounds=AT_LEAST_0)
    loader: str = option("dataloader", "how training crops are made: dataloader (each crop cut on the CPU, in "
                                       "--workers processes) or device (every training frame held on the device, "
                                       "crops, flips, turns and pasted targets made there in batches; docs/gpu.md)",
                         ("dataloader", "device"))
    pack: str = option("", "read every split from this pack (python -m utils.train.pack) instead of the dataset "
                           "folders; it must have been packed with this run's data options")
    time_budget: float = option(0.0, "stop after this many minutes of wall-clock time (0: no limit): the run ends "
                                     "at an epoch boundary, validated, with best.pt selected on val, then scored "
                                     "on test (which takes longer still)", bounds=AT_LEAST_0)
    seed: int = option(1, "seed of the weights' initialisation and of every epoch's sampling")
    deterministic: bool = option(False, "deterministic algorithms only: a resumed run ends with bit-identical "
                                        "weights")
    out: str = option("", "run folder (default runs/<time>_<config name>)")
    config_name: str = option("custom", "name recorded in the run folder's name and summary (set by --config)")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}
FIELD_TYPES: dict[str, type] = {f.name: {"int": int, "float": float, "str": str, "bool": bool}[f.type]
                                for f in fields(TrainConfig)}
RESUMABLE = ("epochs", "device", "workers", "val_every", "image_every", "compile", "nan_patience", "time_budget",
             "pack")  # may change on --resume
RENAMED = {"amp": "dtype"}              # old key -> new key, still read from old config.json files
OLD_VALUES = {"amp": {"off": "fp32"}}   # old key -> {old value: new value}



# ----------------------------------------------------------------------------- checking values


def flag(key: str) -> str:
    """Return the command-line option of a field: lr -> --lr, batch_size -> --batch-size."""
    return "--" + key.replace("_", "-")


def check_value(key: str, value: Any) -> None:
    """Raise ConfigError when value is outside the field's choices or range, or a float is nan or inf."""
    meta = FIELDS[key].metadata
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag(key)} {value!r} must be a finite number")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{flag(key)} {value!r} is not valid; choose one of {', '.join(meta['choices'])}")
    if meta["range"] is not None and value not in meta["range"]:
        raise ConfigError(f"{flag(key)} {value!r} is out of range: {meta['range']}")
    if key == "device" and not DEVICE_PATTERN.match(value):
        raise ConfigError(f"{flag(key)} {value!r} is not a device; use auto, cpu, cuda or cuda:N")


def unknown_key(key: str) -> ConfigError:
    """Return the error for a key that is no field: the rename it had, or the closest fields and the whole list."""
    key = key.replace("-", "_")
    if key in RENAMED:
        return ConfigError(f"{flag(key)} is now {flag(RENAMED[key])}; choose one of "
                           f"{', '.join(FIELDS[RENAMED[key]].metadata['choices'])}")
    close = difflib.get_close_matches(key, FIELDS, n=3)
    hint = f"did you mean {' or '.join(flag(k) for k in close)}? " if close else ""
    return ConfigError(f"unknown option {flag(key)}; {hint}valid options: {', '.join(flag(k) for k in sorted(FIELDS))}")


SOURCES_PATH_HINT = "put its path in --sources (/path/to/{name}:WEIGHT)"  # resolve_data_root's hint for --sources


def parse_sources(text: str) -> list[tuple[str, float]]:
    """Return [(name or folder, weight)] of a --sources value "NAME[:WEIGHT],..." (weight 1 when left out).

    Raises ConfigError naming the bad entry. A weight is 0 (validated and selected on, never trained
    on) or a positive number; the first source must be trained on. A name may itself hold
    a colon only when a weight follows it (the last colon splits).
    """
    entries = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"--sources {text!r} has an empty entry: give NAME[:WEIGHT],... without stray commas")
        name, weight = part, 1.0
        head, sep, tail = part.rpartition(":")
        if sep and head:
            try:
                name, weight = head, float(tail)
            except ValueError:
                name = part     # a colon inside a path, no weight
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"--sources entry {part!r}: the weight must be 0 (validate only) or a positive "
                              f"number, e.g. {name}:1")
        entries.append((name, weight))
    if entries[0][1] == 0:
        raise ConfigError(f"--sources {text!r}: the first source is trained on and scored on test; give it a weight > 0")
    names = [n for n, _ in entries]
    if len(set(names)) < len(names):
        raise ConfigError(f"--sources {text!r} names a source twice: give each once, with its weight")
    return entries


def validate(values: dict[str, Any]) -> None:
    """Raise ConfigError for an unknown key, a wrong type or a value outside its choices or range."""
    for key, value in values.items():
        if key not in FIELD_TYPES:
            raise unknown_key(key)
        kind = FIELD_TYPES[key]
        exact = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not exact and not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"config key {key!r} must be {kind.__name__}, got {value!r}")
        check_value(key, value)
    if values.get("sources"):
        parse_sources(values["sources"])


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


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Return the config of a saved dict (config.json or a checkpoint's "config"); old keys such as amp are renamed."""
    values = dict(values)
    for old, new in RENAMED.items():
        if old in values:
            value = values.pop(old)
            values.setdefault(new, OLD_VALUES.get(old, {}).get(value, value))
    return build(None, values)


def load(path: Path) -> TrainConfig:
    """Return the config saved in a run folder's config.json; ConfigError naming the file when it is unreadable,
    not JSON, or not a valid config."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read {path} ({err.strerror or err}): restore the run's config.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}): restore the run's config.json (the checkpoints hold "
                          "a copy: torch.load(last.pt)['config'])") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} holds a JSON {type(values).__name__}, not an object of config keys: restore the "
                          "run's config.json")
    try:
        return from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def resume_disagreement(saved: TrainConfig, stored: dict[str, Any]) -> str | None:
    """Return "key: A here, B in the checkpoint" for the first field other than RESUMABLE and out in which a run's
    config.json (``saved``) differs from the config stored in its last.pt (``stored``), or None when they agree."""
    try:
        truth = from_dict(stored).to_dict()
    except ConfigError:
        return None     # a checkpoint of an older version: nothing to compare with
    here = saved.to_dict()
    for key, value in here.items():
        if key not in RESUMABLE and key != "out" and truth[key] != value:
            return f"{key} is {value!r} there, {truth[key]!r} in the checkpoint"
    return None


def command_line(cfg: TrainConfig) -> list[str]:
    """Return the options that rebuild cfg from its named config (those whose values differ from it)."""
    base = build(cfg.config_name) if cfg.config_name in CONFIGS else TrainConfig()
    argv = ["--config", cfg.config_name] if cfg.config_name in CONFIGS else []
    for key, value in cfg.to_dict().items():
        if value != getattr(base, key) and key not in ("out", "init", "config_name"):
            argv += [flag(key), str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


# ----------------------------------------------------------------------------- the command line


def describe(key: str) -> str:
    """Return a field's help line: its sentence, then type, default, choices and range."""
    f, kind = FIELDS[key], FIELD_TYPES[key]
    default = str(f.default).lower() if kind is bool else repr(f.default) if kind is str else f"{f.default:g}"
    facts = [kind.__name__, f"default {default}"]
    if f.metadata["choices"]:
        facts.append("choices " + ", ".join(f.metadata["choices"]))
    if f.metadata["range"] is not None:
        facts.append(f"range {f.metadata['range']}")
    if kind is float:
        facts.append("finite")
    return f"{f.metadata['help']} [{'; '.join(facts)}]".replace("%", "%%")


def _argument_type(key: str):
    """Return the argparse type of a field: convert the text, then check it against the field."""
    kind = FIELD_TYPES[key]

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        try:
            check_value(key, value)
        except ConfigError as err:   # argparse names the option itself
            raise argparse.ArgumentTypeError(str(err).removeprefix(flag(key) + " ")) from None
        return value
    convert.__name__ = kind.__name__
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per TrainConfig field; only the options given end up in the namespace (see overrides)."""
    group = parser.add_argument_group(
        "config fields", "defaults below; a named config (--list) changes some; the command line changes any")
    for key, kind in FIELD_TYPES.items():
        if kind is bool:
            group.add_argument(flag(key), dest=key, action=BoolFlag, default=argparse.SUPPRESS, help=describe(key))
        else:
            choices = FIELDS[key].metadata["choices"]
            metavar = "{" + ",".join(choices) + "}" if choices else kind.__name__.upper()
            group.add_argument(flag(key), dest=key, type=_argument_type(key), default=argparse.SUPPRESS,
                               metavar=metavar, help=describe(key))


def overrides(namespace: argparse.Namespace) -> dict[str, Any]:
    """Return {field: value} for the config options given on the command line."""
    return {k: v for k, v in vars(namespace).items() if k in FIELDS}


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """Return {field: typed value} from ["--key", "value", "--flag", ...]; ConfigError on any bad item."""
    parser = ArgumentParser(add_help=False, allow_abbrev=False)
    add_arguments(parser)
    args, rest = parser.parse_known_args(argv)
    refuse_leftovers(rest)
    return overrides(args)


def refuse_leftovers(rest: list[str]) -> None:
    """Raise ConfigError for the first argument the parser did not take (an unknown option or a stray value)."""
    if rest and rest[0].startswith("--"):
        raise unknown_key(rest[0][2:].partition("=")[0])
    if rest:
        raise ConfigError(f"unexpected argument {rest[0]!r}; options look like --key value")


class ArgumentParser(cli.ArgumentParser):
    """The project's ArgumentParser, raising ConfigError instead of exiting, so main() returns the exit code."""

    def error(self, message: str):
        raise ConfigError(message)


__all__ = ["CONFIGS", "RESUMABLE", "ArgumentParser", "ConfigError", "Range", "TrainConfig", "add_arguments", "build",
           "command_line", "from_dict", "load", "overrides", "parse_overrides", "refuse_leftovers",
           "resume_disagreement", "validate"]
