"""utils.merge: into + scale * (add - base), weight by weight, written as a checkpoint the project reads."""
import pytest
import torch

from models import CheckpointError, load_model
from models.load import load_checkpoint
from tests.conftest import random_checkpoint
from utils.files import file_sha256
from utils.merge import main, task_arithmetic

SMALL = dict(width_mults=(1, 2), blocks_per_level=1)  # two levels: fast to build and save


def test_task_arithmetic_known_answer():
    into = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor([7])}
    add = {"w": torch.tensor([3.0, 0.0]), "steps": torch.tensor([9])}
    base = {"w": torch.tensor([2.0, 4.0]), "steps": torch.tensor([5])}
    out = task_arithmetic(into, add, base, 0.5)
    assert torch.equal(out["w"], torch.tensor([1.5, 0.0]))   # 1 + 0.5 (3 - 2), 2 + 0.5 (0 - 4)
    assert torch.equal(out["steps"], torch.tensor([7]))      # integers: into's


def test_task_arithmetic_refuses_other_networks():
    into = {"w": torch.zeros(2)}
    try:
        task_arithmetic(into, {"w": torch.zeros(3)}, into, 1.0)
    except CheckpointError as error:
        assert "--add's w is (3,)" in str(error)
    else:
        raise AssertionError("a shape mismatch was accepted")
    try:
        task_arithmetic(into, into, {"v": torch.zeros(2)}, 1.0)
    except CheckpointError as error:
        assert "--base does not hold" in str(error)
    else:
        raise AssertionError("a name mismatch was accepted")


def test_cli_writes_a_loadable_checkpoint_with_its_recipe(tmp_path, capsys):
    paths = [random_checkpoint(tmp_path / f"{name}.pt", seed=i, **SMALL) for i, name in enumerate(("into", "add", "base"))]
    out = tmp_path / "merged.pt"
    assert main(["--into", str(paths[0]), "--add", str(paths[1]), "--base", str(paths[2]), "--scale", "0.25",
                 "--out", str(out)]) == 0
    states = [load_model(p)[0].state_dict() for p in paths]
    merged, _ = load_model(out)
    for name, value in merged.state_dict().items():
        want = states[0][name] + 0.25 * (states[1][name] - states[2][name])
        torch.testing.assert_close(value, want, rtol=0, atol=0)
    recipe = load_checkpoint(out)["merge"]
    assert recipe["scale"] == 0.25 and recipe["add"]["sha256"] == file_sha256(paths[1])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert "wrote" in capsys.readouterr().out


def test_cli_names_the_file_that_does_not_fit(tmp_path, capsys):
    into = random_checkpoint(tmp_path / "into.pt", **SMALL)
    other = random_checkpoint(tmp_path / "other.pt", width_mults=(1, 2, 4), blocks_per_level=1)
    out = tmp_path / "merged.pt"
    assert main(["--into", str(into), "--add", str(other), "--base", str(into), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --add") and len(err.splitlines()) == 1
    assert main(["--into", str(into), "--add", str(tmp_path / "nope.pt"), "--base", str(into), "--out", str(out)]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_score_stores_what_the_written_weights_score(tmp_path, capsys):
    """--score: the merged weights are scored on the config's val and test splits before writing; the stored scores are
    what evaluating the written file on those splits gives, and the even average (--base = --into) is 0.5 A + 0.5 B."""
    from utils.data.synthetic import write_dataset
    from utils.eval.metrics import plain
    from utils.train.config import build
    from utils.train.setup import eval_sets
    from utils.train.validate import evaluate

    root = write_dataset(tmp_path / "data", n_trainval=6, n_test=3, size=(64, 64), seed=3)
    a, b = (random_checkpoint(tmp_path / f"{name}.pt", seed=i, **SMALL) for i, name in enumerate("ab"))
    out = tmp_path / "soup.pt"
    assert main(["--into", str(a), "--add", str(b), "--base", str(a), "--scale", "0.5", "--out", str(out),
                 "--score", "sirstv1_cpu", "--data-root", str(root), "--device", "cpu"]) == 0
    assert "sirstv1_cpu: val score" in capsys.readouterr().out
    soup, meta = load_model(out)
    state_a, state_b = (load_model(path)[0].state_dict() for path in (a, b))
    for name, value in soup.state_dict().items():
        torch.testing.assert_close(value, 0.5 * state_a[name] + 0.5 * state_b[name], rtol=1e-6, atol=1e-7)
    val_set, test_set, sources = eval_sets(build("sirstv1_cpu", {"data_root": str(root)}))
    assert sources == () and len(test_set) == 3 and meta["summary"]["n_test"] == 3
    best = meta["summary"]["best"]
    assert best["test"] == plain(evaluate(soup, test_set, torch.device("cpu")).compute())
    val = plain(evaluate(soup, val_set, torch.device("cpu")).compute())
    assert best["val"] == {**val, "score": val["iou"]} and meta["val"]["selected_score"] == val["iou"]
    assert meta["summary"]["config"] == "sirstv1_cpu" and best["weights"] == "merge"


def test_score_refuses_bad_configs_and_data_before_any_work(tmp_path, capsys):
    a = random_checkpoint(tmp_path / "a.pt", **SMALL)
    out = tmp_path / "soup.pt"
    args = ["--into", str(a), "--add", str(a), "--base", str(a), "--out", str(out), "--score"]
    for extra, words in ((["synthetic"], "generates its frames"),
                         (["sirstv1_cpu", "--data-root", str(tmp_path / "missing")], "missing"),
                         (["general_ft", "--data-root", str(tmp_path)], "drop --data-root"),
                         (["no_such_config"], "no_such_config")):
        assert main(args + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and words in err, (extra, err)
        assert not out.exists()


@pytest.mark.slow
def test_score_takes_the_sources_of_a_sources_config_as_paths(tmp_path):
    """--score general_ft --sources PATH:1 scores on that folder (per source, and the selection score) instead of the
    config's datasets/ names."""
    from utils.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "data", n_trainval=6, n_test=2, size=(64, 64), seed=4)
    a = random_checkpoint(tmp_path / "a.pt", **SMALL)
    out = tmp_path / "scored.pt"
    assert main(["--into", str(a), "--add", str(a), "--base", str(a), "--out", str(out), "--score", "general_ft",
                 "--sources", f"{root}:1", "--device", "cpu"]) == 0
    best = load_checkpoint(out)["summary"]["best"]
    assert list(best["val"]["sources"]) == [str(root)] and best["val"]["score"] == best["val"]["iou"]
    assert best["test"]["n_images"] == 2
