"""utils.cli: one convention for every entry point (device, dtype, booleans, numbers, logging, errors)."""
import argparse
import logging

import pytest

import cal_from_mask
import inference
from utils import cli, robustness


def parser_with_flag():
    parser = argparse.ArgumentParser()
    parser.add_argument("--compile", action=cli.BoolFlag)
    parser.add_argument("--tiling", action=cli.BoolFlag, default=True)
    cli.add_device(parser)
    return parser


@pytest.mark.parametrize("argv, compile_, tiling", [([], False, True), (["--compile"], True, True),
                                                    (["--no-compile"], False, True), (["--compile", "false"], False, True),
                                                    (["--compile=yes", "--no-tiling"], True, False),
                                                    (["--tiling", "0"], False, False)])
def test_boolean_syntax(argv, compile_, tiling):
    args = parser_with_flag().parse_args(argv)
    assert (args.compile, args.tiling) == (compile_, tiling)


def test_bad_boolean_and_device_are_refused(capsys):
    with pytest.raises(SystemExit):
        parser_with_flag().parse_args(["--compile", "maybe"])
    assert "'maybe' is not a boolean" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser_with_flag().parse_args(["--device", "gpu"])
    assert "use auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    assert parser_with_flag().parse_args(["--device", "cuda:1"]).device == "cuda:1"


@pytest.mark.parametrize("kind, text", [(cli.finite_float, "nan"), (cli.finite_float, "inf"),
                                        (cli.finite_float, "x"), (cli.positive_int, "0"),
                                        (cli.non_negative_int, "-1"), (cli.positive_int, "1.5")])
def test_numbers_are_checked(kind, text):
    with pytest.raises(argparse.ArgumentTypeError):
        kind(text)


@pytest.mark.parametrize("main", [inference.main, robustness.main])
def test_entry_points_share_device_dtype_and_log_level(main, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--device", "--dtype", "--log-level", "--no-quiet"):
        assert option in text
    assert "cuda:N" in text and "fp32,bf16,fp16" in text


def test_scorer_has_log_level_and_no_device(capsys):
    with pytest.raises(SystemExit):
        cal_from_mask.main(["--help"])
    text = capsys.readouterr().out
    assert "--log-level" in text and "--device" not in text and "--no-allow-missing" in text


def test_setup_logging_twice_prints_each_warning_once(capsys):
    log = logging.getLogger("tests.cli")
    cli.setup_logging("info")
    cli.setup_logging("warning")
    log.info("not shown at warning level")
    log.warning("shown once")
    err = capsys.readouterr().err
    assert err.count("warning: shown once") == 1 and "not shown" not in err
    cli.setup_logging("info", timestamps=True)
    log.info("with time")
    assert capsys.readouterr().err.strip().endswith("with time")


def test_fail_prints_one_line(capsys):
    assert cli.fail("checkpoint x.pt does not exist; pass a file") == cli.EXIT_ERROR
    assert capsys.readouterr().err == "error: checkpoint x.pt does not exist; pass a file\n"
