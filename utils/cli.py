"""One command-line convention for every entry point: device, dtype, booleans, numbers, logging, errors.

- ``--device auto|cpu|cuda|cuda:N`` (auto = CUDA when present, else the CPU);
- ``--dtype fp32|bf16|fp16`` for the compute precision (training adds ``auto``);
- booleans are ``--flag`` / ``--no-flag`` (``--flag true|false`` is accepted too, as config files write them);
- ``--log-level debug|info|warning|error``; warnings go through ``logging``, once, to stderr;
- a user error ends in one line, ``error: ...`` naming the value or file and the fix, and exit code 2; a bad
  command line too (``ArgumentParser``: one line and a pointer to --help, not argparse's usage block);
- Ctrl-C ends in one line, ``interrupted: ...`` saying what was kept and how to go on, and exit code 130.
"""
from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR = 0, 1, 2  # 1: some items skipped (named), the rest done; 2: nothing done
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DTYPE_CHOICES = ("fp32", "bf16", "fp16")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_bool(text: str) -> bool:
    """Return True/False for true/false, 1/0, yes/no, on/off (any case); ValueError otherwise."""
    lowered = str(text).lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")


def device_name(text: str) -> str:
    """argparse type: return a device string auto, cpu, cuda or cuda:N (availability is checked later)."""
    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda or cuda:N")
    return text


def positive_int(text: str) -> int:
    """argparse type: return an int >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: return an int >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def finite_float(text: str) -> float:
    """argparse type: return a finite float (nan and inf refused)."""
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


class BoolFlag(argparse.Action):
    """``--flag`` sets True, ``--no-flag`` sets False, ``--flag true|false`` sets the value given."""

    def __init__(self, option_strings, dest, default=False, help=None, **kwargs):
        strings = list(option_strings)
        for option in option_strings:
            if option.startswith("--"):
                strings.append("--no-" + option[2:])
        super().__init__(strings, dest, nargs="?", default=default, help=help, metavar="true|false")

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
            return
        try:
            setattr(namespace, self.dest, True if values is None else parse_bool(values))
        except ValueError as err:
            parser.error(f"{option_string}: {err}")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, with a BoolFlag shown as ``--flag [true|false], --no-flag`` (--no-flag takes no value)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not isinstance(action, BoolFlag):
            return super()._format_action_invocation(action)
        on = [f"{s} [true|false]" for s in action.option_strings if not s.startswith("--no-")]
        return ", ".join(on + [s for s in action.option_strings if s.startswith("--no-")])


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter that keeps the description's line breaks (a module docstring as the description)."""


class ArgumentParser(argparse.ArgumentParser):
    """The project's parser: a bad command line ends in one line, ``error: ...`` with a pointer to --help, exit 2
    (not argparse's usage block); BoolFlag options shown as they work (HelpFormatter)."""

    def __init__(self, *args, formatter_class: type = HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):
        command = self.prog if self.prog.startswith("python") else f"python {self.prog}"
        self.exit(EXIT_ERROR, f"error: {message} ({command} --help lists the options)\n")


INTERRUPTED = 130  # the shell's exit code for a command stopped by Ctrl-C (128 + SIGINT)


def interrupted(what: str) -> int:
    """Print one line 'interrupted: what' (what was kept and how to go on) to stderr and return INTERRUPTED (130)."""
    print(f"interrupted: {what}", file=sys.stderr)
    return INTERRUPTED


def add_device(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """Add --device auto|cpu|cuda|cuda:N."""
    parser.add_argument("--device", type=device_name, default=default,
                        help=f"auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default {default})")


def add_dtype(parser: argparse.ArgumentParser, default: str = "fp32") -> None:
    """Add --dtype fp32|bf16|fp16 (the compute precision); with default "auto", also auto."""
    choices = ("auto", *DTYPE_CHOICES) if default == "auto" else DTYPE_CHOICES
    told = ("auto: bf16 on a CPU that computes it natively (AVX512-BF16 or AMX), fp32 elsewhere"
            if default == "auto" else default)
    parser.add_argument("--dtype", default=default, choices=choices,
                        help=f"compute precision (default {told}; bf16 is 2-4x faster on a CPU with AVX512-BF16 or "
                             "AMX and emulated, about 10x slower, without; fp16 needs CUDA)")


def add_verify(parser: argparse.ArgumentParser) -> None:
    """Add ``--verify`` / ``--no-verify``: apply a checkpoint's second stage (utils.verify) when it has one."""
    parser.add_argument("--verify", action=BoolFlag, default=True,
                        help="apply the checkpoint's verifier when it has one (default; python -m utils.verify trains "
                             "it): candidates it rejects fall below the threshold; --no-verify: LRRNet alone")


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """Add --log-level debug|info|warning|error (default info)."""
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                        help="messages shown: debug, info (default), warning or error")


class _Formatter(logging.Formatter):
    """'warning: text' for warnings and errors, plain text for info; optionally 'HH:MM:SS ' in front."""

    def __init__(self, timestamps: bool):
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        stamp = time.strftime("%H:%M:%S ", time.localtime(record.created)) if self.timestamps else ""
        text = stamp + prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


_OURS = "_lrrnet_handler"  # marks the handlers this module installed (others, e.g. pytest's, stay)


def setup_logging(level: str = "info", log_file: Path | None = None, timestamps: bool = False,
                  quiet_rank: bool = False) -> None:
    """Configure the root logger once per entry point: stderr (and log_file when given) at `level`.

    quiet_rank=True (a DDP rank other than 0) shows warnings and errors only. Calling it again
    replaces the handlers it installed before, so a test can call main() many times.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    numeric = logging.WARNING if quiet_rank else getattr(logging, level.upper())
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        setattr(handler, _OURS, True)
        handler.setFormatter(_Formatter(timestamps))
        root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)


def fail(message: str) -> int:
    """Print one line 'error: message' to stderr and return EXIT_ERROR (2)."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def warn_once(logger: logging.Logger, notes: Sequence[str], seen: set[str] | None = None) -> None:
    """Log each note as a warning, skipping any already in `seen` (which is updated)."""
    seen = set() if seen is None else seen
    for note in notes:
        if note not in seen:
            seen.add(note)
            logger.warning(note)
