"""Atomic writes: the file appears whole, in a created folder, with no temporary left."""
import json

from utils.files import atomic_write_text, write_json


def test_write_json_creates_the_folder_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "a" / "b.json", {"iou": 0.5})
    assert json.loads(path.read_text()) == {"iou": 0.5}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_rewrite_replaces_the_whole_file(tmp_path):
    atomic_write_text(tmp_path / "names.txt", "a\nb\nc\n")
    atomic_write_text(tmp_path / "names.txt", "d\n")
    assert (tmp_path / "names.txt").read_text() == "d\n"
