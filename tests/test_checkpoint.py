"""Checkpoints: atomic writes, weights_only loading, the release's raw state_dict, slim export."""
import pytest
import torch

from models import CheckpointError, get_model, load_checkpoint, load_model
from tests.conftest import FIXTURES, need
from utils.checkpoint import atomic_save, export, rng_state, set_rng_state


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    atomic_save({"x": torch.arange(3)}, tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["x"], torch.arange(3))


def test_corrupt_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "half.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ValueError, match="half.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder; pass a file in it"):
        load_checkpoint(tmp_path)


def test_release_state_dict_loads_as_a_network():
    net, meta = load_model(need(FIXTURES / "lrrnet_official_format_random_weights.pth"))
    assert meta == {"source": "release state_dict"}
    reference = torch.load(FIXTURES / "lrrnet_official_format_random_weights.pth", weights_only=True)
    for key, value in net.state_dict().items():
        assert torch.equal(value, reference[key])


def test_a_foreign_state_dict_is_refused_with_the_path(tmp_path):
    atomic_save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt does not fit LRRNet"):
        load_model(tmp_path / "other.pt")


def test_a_module_prefixed_state_dict_loads(tmp_path):
    net = get_model("LRRNet")
    atomic_save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ddp.pt")
    loaded, meta = load_model(tmp_path / "ddp.pt")
    assert "module." in meta["note"]
    for key, value in net.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_rng_state_round_trip():
    state = rng_state()
    a = (torch.rand(3), __import__("numpy").random.rand(3))
    set_rng_state(state)
    b = (torch.rand(3), __import__("numpy").random.rand(3))
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all()


def test_export_keeps_weights_and_metadata_only(tmp_path):
    torch.manual_seed(0)
    net = get_model("LRRNet")
    full = {"model": net.state_dict(), "selected_weights": "ema", "model_name": "LRRNet",
            "model_hparams": net.hparams(), "epoch": 3, "optimizer": {"state": {}}, "config": {"lr": 1.0}}
    atomic_save(full, tmp_path / "best.pt")
    export(tmp_path / "best.pt", tmp_path / "ship.pt")
    slim = load_checkpoint(tmp_path / "ship.pt")
    assert "optimizer" not in slim and slim["epoch"] == 3 and slim["selected_weights"] == "ema"
    loaded, _ = load_model(tmp_path / "ship.pt")
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


class _Custom:
    """An object that weights_only loading refuses to build."""


def test_a_pickled_object_is_refused_without_advising_weights_only_false(tmp_path):
    torch.save({"x": _Custom()}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="objects.pt holds Python objects") as err:
        load_checkpoint(tmp_path / "objects.pt")
    assert "weights_only" not in str(err.value) and "trust" not in str(err.value)


def test_bytes_that_are_no_pickle_are_called_corrupt_not_objects(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"garbage, not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt could not be read .*fully written"):
        load_checkpoint(tmp_path / "garbage.pt")
