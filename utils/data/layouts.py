"""Dataset folders: where a dataset is, which of the three layouts it has, and its splits.

- ``folder`` (the LRRNet release): ``ROOT/trainval/{images,masks}/`` and ``ROOT/test/{images,masks}/``
  (``train/`` + ``val/`` folders are also accepted); a mask has its image's name.
- ``sirst`` (the SIRST v1 devkit): ``ROOT/images/Misc_N.png``, ``ROOT/masks/Misc_N_pixels0.png``,
  ``ROOT/idx_427/{train,val,test,trainval}.txt`` (``index="idx_320"`` picks the older split).
- ``basicirstd`` (BasicIRSTD): ``ROOT/images/``, ``ROOT/masks/``, ``ROOT/img_idx/{train,test}_NAME.txt``.
- ``video`` (IR-Drone-Video): ``ROOT/videos/*.mp4``, ``ROOT/labels.csv`` (boxes), ``ROOT/{train,val}.txt``;
  detected here, indexed and read by ``utils.data.video`` (``index_videos``, ``VideoFrameDataset``).
- ``boxes`` (still frames with box labels, IRSTD-1K-boxes): ``ROOT/images/*.png`` and ``ROOT/labels.csv``
  (``frame,x,y,w,h``, ``utils.data.labels.read_still_labels``), no masks; its samples have ``mask=None``,
  its training items come from ``utils.data.stills.StillBoxDataset``. It has no test split, and its val is
  its own: ``STILL_VAL_FRACTION`` of the labelled frames by ``STILL_VAL_SEED``, whatever ``val_fraction``
  says, so every run and every checkpoint is scored on the same frames.

Splits are "train", "val", "test" and "trainval" (= train + val). Where a layout has no val
split, val is a fixed subset of the training frames chosen by ``val_fraction`` and ``val_seed``
(never from test): a frame is in val when its salted SHA-256 rank is among the lowest
``round(val_fraction * n)``, so the subset depends only on the names, the seed and the
fraction, not on numpy's RNG or the file order.

Indexing reads folder listings and split lists only; ``list_split`` then checks every file,
``index_split`` does not (for callers that skip a bad frame instead of refusing the run).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import utils
from utils.data.frames import (
    IMAGE_EXTENSIONS,
    DataError,
    Sample,
    _is_image_file,
    _quick_check,
    _require_dir,
    verify_samples,
)
from utils.data.labels import read_still_labels
from utils.files import atomic_write_text

# The dataset names the LRRNet release uses; each maps to datasets/NAME in the repository.
RELEASE_NAMES = {
    "NUDT-SIRST": "NUDT-SIRST",
    "IRSTD-1k": "IRSTD-1k",
    "sirst_aug": "sirst_aug",
    "SIRSTv1": "SIRSTv1",
    "IR-Drone-Video": "IR-Drone-Video",
    "IRSTD-1K-boxes": "IRSTD-1K-boxes",
}
LAYOUTS = ("folder", "sirst", "basicirstd", "video", "boxes")
SPLITS = ("train", "val", "test", "trainval")
SIRST_MASK_SUFFIX = "_pixels0"
VIDEO_EXTENSION = ".mp4"  # the video layout's files: videos/<STEM>.mp4
STILL_LABELS = "labels.csv"  # the boxes layout's labels: frame,x,y,w,h
STILL_VAL_FRACTION = 0.2  # the boxes layout's val: a fifth of its frames (160 of IRSTD-1K-boxes' 800)
STILL_VAL_SEED = 0


# ----------------------------------------------------------------------------- roots


def _datasets_dir() -> Path:
    """Return the folder release names resolve in: ``utils.DATASETS_DIR``, read at call time (a test may patch it)."""
    return Path(utils.DATASETS_DIR)


def is_video_root(root: str | os.PathLike) -> bool:
    """Return True when the folder holds ``videos/*.mp4`` (the video layout)."""
    videos = Path(root) / "videos"
    return videos.is_dir() and any(videos.glob(f"*{VIDEO_EXTENSION}"))


def is_still_box_root(root: str | os.PathLike) -> bool:
    """Return True when the folder holds images/ and labels.csv but no masks/ (the boxes layout)."""
    root = Path(root)
    return (root / "images").is_dir() and (root / STILL_LABELS).is_file() and not (root / "masks").exists()


def resolve_data_root(name_or_path: str | os.PathLike, instead: str = "pass --data-root /path/to/{name}") -> Path:
    """Return the dataset folder: a release name maps to datasets/NAME, anything else is a path.

    A bare name that is no folder here but is one under datasets/ (``SIRST-v1``, ``samples``) means
    that folder too. ``instead`` ends the error for a release name that is not there: how the caller's
    command takes a path ({name}: the release's folder name).
    """
    text = str(name_or_path)
    release = {key.lower(): value for key, value in RELEASE_NAMES.items()}.get(text.lower())
    datasets_dir = _datasets_dir()
    if release is not None:
        root = datasets_dir / release
        if root.is_dir():
            return root
        if Path(text).is_dir():
            return Path(text)
        raise DataError(
            f"dataset {text!r} is not at {root}: download it (datasets/README.md says where), "
            f"link it with `ln -s /path/to/{release} {root}`, or {instead.format(name=release)}"
        )
    root = Path(text).expanduser()
    bare = text and Path(text).name == text and text not in (".", "..")
    if not root.exists() and bare and (datasets_dir / text).is_dir():
        return datasets_dir / text
    if not root.exists():
        raise DataError(
            f"data root {root} does not exist: pass the folder that holds the dataset "
            f"(or one of the release names {sorted(RELEASE_NAMES)}, or the name of a folder in {datasets_dir})"
        )
    if not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder: pass the folder that holds the dataset")
    return root


# ----------------------------------------------------------------------------- folders


def images_by_stem(folder: Path, warnings: list[str], dropped: list[Path] | None = None) -> dict[str, Path]:
    """Return {stem: path} for the image files in ``folder`` (sorted by name); on a clash keeps the preferred extension.

    Each clash adds a warning; the files not kept are appended to ``dropped`` when given.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not _is_image_file(path):
            continue
        stem = path.stem
        if stem in found:
            rank = IMAGE_EXTENSIONS.index
            keep, drop = sorted([found[stem], path], key=lambda p: rank(p.suffix.lower()))
            warnings.append(f"{folder} holds both {keep.name} and {drop.name}: using {keep.name}, remove the other")
            found[stem] = keep
            if dropped is not None:
                dropped.append(drop)
        else:
            found[stem] = path
    return found


# ----------------------------------------------------------------------------- layouts and splits


def detect_layout(root: str | os.PathLike) -> str:
    """Return the layout of a dataset folder ("folder", "sirst", "basicirstd", "video" or "boxes"); DataError when none
    fits."""
    root = Path(root)
    _require_dir(root, "data root", "pass the folder that holds the dataset")
    has_pool = (root / "images").is_dir() and (root / "masks").is_dir()
    found = []
    if any((root / name / "images").is_dir() for name in ("trainval", "train", "val", "test")):
        found.append("folder")
    if has_pool and any(p.is_dir() and p.name.startswith("idx_") for p in root.iterdir()):
        found.append("sirst")
    if has_pool and (root / "img_idx").is_dir():
        found.append("basicirstd")
    if is_video_root(root):
        found.append("video")
    if is_still_box_root(root):
        found.append("boxes")
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(f"data root {root} fits several layouts {found}: name one with --layout")
    children = sorted(p.name for p in root.iterdir() if p.is_dir())
    hint = ""
    nested = [name for name in children if _looks_like_dataset(root / name)]
    if nested:
        hint = f"; did you mean {root / nested[0]}?"
    raise DataError(
        f"data root {root} matches no layout (it holds {children or 'no folders'}): expected trainval/ and test/ "
        "each with images/ and masks/ (folder), or images/ + masks/ + idx_427/ (sirst), or images/ + masks/ + "
        f"img_idx/ (basicirstd), or videos/*.mp4 + labels.csv + train.txt/val.txt (video), or images/ + labels.csv "
        f"(boxes); see datasets/README.md{hint}"
    )


def _looks_like_dataset(path: Path) -> bool:
    """Return True when the folder looks like a dataset root (for the "did you mean" hint)."""
    return path.is_dir() and ((path / "images").is_dir() or (path / "trainval").is_dir() or (path / "test").is_dir())


def _read_list(path: Path) -> list[str]:
    """Return the names in a split list: one per line, blank lines and a missing last newline tolerated."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DataError(
            f"split list {path} cannot be read ({error.strerror}): check it exists and is readable"
        ) from None
    names = []
    for line in text.splitlines():
        name = line.strip()
        if not name:
            continue
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            name = Path(name).stem  # some lists carry the extension
        names.append(Path(name).name)
    return names


def _pair(
    names: Sequence[str],
    images: dict[str, Path],
    masks: dict[str, Path],
    image_dir: Path,
    mask_dir: Path,
    listed_in: Path | None,
    suffixes: tuple[str, ...],
) -> list[Sample]:
    """Return Samples for ``names``; DataError listing every absent image, then every image without a mask."""
    absent = [name for name in names if name not in images]
    if absent:
        where = f"split list {listed_in} names" if listed_in else "these frames are"
        raise DataError(
            f"{where} {len(absent)} frame(s) absent from {image_dir}: {', '.join(absent)}; "
            "restore the frames or remove their lines from the list"
        )
    samples, no_mask = [], []
    for name in names:
        mask = next((masks[name + s] for s in suffixes if name + s in masks), None)
        if mask is None:
            no_mask.append(images[name].name)
        samples.append(Sample(name, images[name], mask))
    if no_mask:
        expected = " or ".join(f"NAME{s}.png" for s in suffixes)
        raise DataError(
            f"{len(no_mask)} image(s) in {image_dir} have no mask in {mask_dir} (expected {expected}): "
            f"{', '.join(no_mask)}; add the masks or remove these frames"
        )
    return samples


def _unique(names: list[str], where: Path, warnings: list[str]) -> list[str]:
    """Return the names without repeats (first kept), with a warning per repeat."""
    seen, out = set(), []
    for name in names:
        if name in seen:
            warnings.append(f"{where} lists {name} more than once: the repeat is ignored")
            continue
        seen.add(name)
        out.append(name)
    return out


def _folder_splits(root: Path, warnings: list[str]) -> dict[str, list[Sample]]:
    """Return the splits of the folder layout (trainval/ or train/ + val/, and test/)."""
    splits = {}
    for split in ("trainval", "train", "val", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        image_dir = _require_dir(folder / "images", "image folder", f"put the {split} frames in {folder / 'images'}")
        mask_dir = _require_dir(
            folder / "masks", "mask folder", f"put the {split} masks in {folder / 'masks'} (same names as the frames)"
        )
        images = images_by_stem(image_dir, warnings)
        if not images:
            raise DataError(
                f"image folder {image_dir} holds no frames with extensions {IMAGE_EXTENSIONS}: add the frames"
            )
        masks = images_by_stem(mask_dir, warnings)
        splits[split] = _pair(sorted(images), images, masks, image_dir, mask_dir, None, ("", SIRST_MASK_SUFFIX))
    if "trainval" in splits and ("train" in splits or "val" in splits):
        raise DataError(
            f"data root {root} holds trainval/ beside train/ or val/: keep trainval/ alone, or train/ with val/"
        )
    if "trainval" not in splits:
        if "train" not in splits:
            raise DataError(f"data root {root} has no trainval/ (or train/) folder: add the training frames there")
        splits["trainval"] = splits["train"] + splits.get("val", [])
        clash = sorted({s.name for s in splits["train"]} & {s.name for s in splits.get("val", [])})
        if clash:
            raise DataError(
                f"{root / 'train'} and {root / 'val'} both hold frames named {', '.join(clash)}: "
                "frame names must be unique across train and val; rename or remove the copies"
            )
        if "val" not in splits:
            del splits["train"]  # val will be carved from trainval, train is the rest
    if "test" not in splits:
        raise DataError(f"data root {root} has no test/ folder: add test/images and test/masks")
    return splits


def _pool_splits(
    root: Path,
    list_dir: Path,
    list_files: dict[str, Path],
    suffixes: tuple[str, ...],
    warnings: list[str],
    split: str | None,
) -> dict[str, list[Sample]]:
    """Return the splits of an images/ + masks/ pool with split lists (sirst and basicirstd layouts)."""
    image_dir, mask_dir = root / "images", root / "masks"
    images = images_by_stem(image_dir, warnings)
    masks = images_by_stem(mask_dir, warnings)
    names = {split_name: _unique(_read_list(path), path, warnings) for split_name, path in list_files.items()}
    if split in (None, "test") and "test" not in names:
        raise DataError(
            f"{list_dir} has no test list ({'test.txt' if list_dir.name != 'img_idx' else 'test_NAME.txt'}): add it"
        )
    if "train" not in names and "trainval" not in names:
        raise DataError(
            f"{list_dir} has no train or trainval list: add one (the frames used for training, one name a line)"
        )
    splits = {}
    for name, listed in names.items():
        splits[name] = _pair(listed, images, masks, image_dir, mask_dir, list_files[name], suffixes)
    if "trainval" not in splits:
        splits["trainval"] = splits["train"] + [
            s for s in splits.get("val", []) if s.name not in {t.name for t in splits["train"]}
        ]
    if "val" not in splits:
        splits.pop("train", None)  # val will be carved from trainval, train is the rest
    for a, b in (("train", "test"), ("val", "test"), ("train", "val"), ("trainval", "test")):
        if a in splits and b in splits:
            shared = sorted({s.name for s in splits[a]} & {s.name for s in splits[b]})
            if shared:
                warnings.append(f"{list_dir}: {len(shared)} frame(s) are in both {a} and {b}: {', '.join(shared[:10])}")
    return splits


def _sirst_lists(root: Path, index: str | None) -> tuple[Path, dict[str, Path]]:
    """Return (the idx_* folder, {split: list file}); idx_427 unless ``index`` names another."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("idx_"))
    if index is None:
        index = "idx_427" if "idx_427" in folders else (folders[0] if len(folders) == 1 else None)
        if index is None:
            raise DataError(
                f"data root {root} holds split folders {folders} and no idx_427: pick one with index=NAME (--index)"
            )
    list_dir = root / index
    if not list_dir.is_dir():
        raise DataError(f"split folder {list_dir} is missing: choose one of {folders} (--index)")
    files = {split: list_dir / f"{split}.txt" for split in SPLITS if (list_dir / f"{split}.txt").is_file()}
    return list_dir, files


def _basic_lists(root: Path, index: str | None) -> tuple[Path, dict[str, Path], str]:
    """Return (img_idx/, {split: list file}, the dataset NAME of the train_NAME.txt lists)."""
    list_dir = root / "img_idx"
    names = sorted(p.name[len("train_") : -len(".txt")] for p in list_dir.glob("train_*.txt"))
    if index is None:
        if len(names) == 1:
            index = names[0]
        elif root.name in names:
            index = root.name
        else:
            raise DataError(
                f"{list_dir} holds {'no train_NAME.txt list' if not names else f'lists for several datasets {names}'}: "
                + ("add train_NAME.txt and test_NAME.txt" if not names else "pick one with index=NAME (--index)")
            )
    if index not in names:
        raise DataError(f"{list_dir / f'train_{index}.txt'} is missing: lists present are for {names}")
    files = {
        split: list_dir / f"{split}_{index}.txt" for split in SPLITS if (list_dir / f"{split}_{index}.txt").is_file()
    }
    return list_dir, files, index


def _salted_rank(name: str, seed: int) -> bytes:
    """Return the SHA-256 digest of "seed:name", the key that orders frames for the carved val."""
    return hashlib.sha256(f"{seed}:{name}".encode()).digest()


def _carve(trainval: list[Sample], val_fraction: float, val_seed: int) -> tuple[list[Sample], list[Sample]]:
    """Return (train, val): val is the ``round(val_fraction * n)`` frames of lowest salted hash, kept in order."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"val_fraction={val_fraction} must be in (0, 1): it is the share of training frames held out for validation"
        )
    if len(trainval) < 2:
        raise DataError(f"only {len(trainval)} training frame(s): at least 2 are needed to hold out a validation frame")
    n_val = min(max(1, round(val_fraction * len(trainval))), len(trainval) - 1)  # at least one frame each side
    chosen = set(sorted((s.name for s in trainval), key=lambda n: _salted_rank(n, val_seed))[:n_val])
    return [s for s in trainval if s.name not in chosen], [s for s in trainval if s.name in chosen]


def _box_splits(root: Path, warnings: list[str]) -> dict[str, list[Sample]]:
    """Return the trainval, train and val splits of the boxes layout (samples without masks), val carved by
    STILL_VAL_FRACTION and STILL_VAL_SEED; a frame without a label row is left out with a warning."""
    image_dir = root / "images"
    images = images_by_stem(image_dir, warnings)
    if not images:
        raise DataError(f"image folder {image_dir} holds no frames with extensions {IMAGE_EXTENSIONS}: add the frames")
    labels = read_still_labels(root / STILL_LABELS)
    absent = [name for name in labels if name not in images]
    if absent:
        raise DataError(f"labels {root / STILL_LABELS} name {len(absent)} frame(s) absent from {image_dir}: "
                        f"{', '.join(absent[:10])}; restore the frames or remove their rows")
    unlabelled = [name for name in images if name not in labels]
    if unlabelled:
        warnings.append(f"{len(unlabelled)} frame(s) of {image_dir} have no row in {root / STILL_LABELS} and are left "
                        f"out (first {', '.join(unlabelled[:10])}): add their boxes, or one empty row for a "
                        "target-free frame")
    trainval = [Sample(name, images[name], None) for name in sorted(images) if name in labels]
    train, val = _carve(trainval, STILL_VAL_FRACTION, STILL_VAL_SEED)
    return {"trainval": trainval, "train": train, "val": val}


@dataclass
class _Indexed:
    """A dataset folder indexed without decoding: its layout, split lists used and splits."""

    root: Path
    layout: str
    index: str | None  # the split lists used: "idx_427"/"idx_320" (sirst), NAME (basicirstd), None (folder)
    splits: dict[str, list[Sample]]
    val_official: bool
    warnings: list[str]


def index_samples(
    root, split: str | None, layout: str | None, val_fraction: float, val_seed: int, index: str | None
) -> _Indexed:
    """Return the indexed dataset (every split, val carved where the layout has none) without decoding any frame."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; choose one of {SPLITS}")
    root = resolve_data_root(root)
    if layout is None:
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is unknown; choose one of {LAYOUTS}")
    if layout == "video":
        raise DataError(
            f"data root {root} holds box-labelled videos (the video layout), not frames with masks: read it with "
            "utils.data.index_videos or utils.data.VideoFrameDataset (python -m utils.data summarises it)"
        )
    warnings: list[str] = []
    if layout == "boxes":
        if split == "test":
            raise DataError(f"data root {root} (box-labelled frames) has no test split: use --split val (its carved "
                            f"{STILL_VAL_FRACTION:g} of the frames) or train")
        splits = _box_splits(root, warnings)
        return _Indexed(root, layout, None, splits, True, warnings)
    if layout == "folder":
        splits = _folder_splits(root, warnings)
        index = None
    else:
        for sub in ("images", "masks"):
            _require_dir(
                root / sub, f"{sub} folder", f"the {layout} layout keeps all frames in images/ and all masks in masks/"
            )
        if layout == "sirst":
            list_dir, files = _sirst_lists(root, index)
            index, suffixes = list_dir.name, (SIRST_MASK_SUFFIX, "")
        else:
            _require_dir(
                root / "img_idx", "split folder", "the basicirstd layout keeps img_idx/train_NAME.txt and test_NAME.txt"
            )
            list_dir, files, index = _basic_lists(root, index)
            suffixes = ("", SIRST_MASK_SUFFIX)
        splits = _pool_splits(root, list_dir, files, suffixes, warnings, split)
    if split is not None and split not in splits and split != "val" and not (split == "train" and "trainval" in splits):
        raise DataError(f"data root {root} has no {split!r} split (it has {sorted(splits)}): add it")
    official_val = "val" in splits
    if not official_val:
        splits["train"], splits["val"] = _carve(splits["trainval"], val_fraction, val_seed)
    for name, samples in splits.items():
        if not samples:
            raise DataError(f"split {name!r} of {root} is empty: add frames (or lines to its list)")
    return _Indexed(root, layout, index, splits, official_val, warnings)


def index_split(
    root,
    split: str,
    layout: str | None = None,
    val_fraction: float = 0.1,
    val_seed: int = 0,
    index: str | None = None,
) -> tuple[list[Sample], list[str]]:
    """Return (the split's samples, warnings) from folder listings and split lists alone: no file is read or checked.

    For callers that name and skip a bad frame rather than refuse the run (inference); a frame
    listed here may still fail to decode. Layout, split-list and pairing problems (an image
    without a mask, a list naming an absent frame) still raise DataError.
    """
    indexed = index_samples(root, split, layout, val_fraction, val_seed, index)
    return list(indexed.splits[split]), list(indexed.warnings)


def list_split(
    root,
    split: str,
    layout: str | None = None,
    val_fraction: float = 0.1,
    val_seed: int = 0,
    *,
    index: str | None = None,
    decode: bool = True,
) -> tuple[list[Sample], list[str]]:
    """Return (the split's samples, warnings) after checking every file; DataError names each bad file and the fix.

    ``index`` picks the split lists (sirst: "idx_427" or "idx_320"; basicirstd: NAME of
    train_NAME.txt). ``decode=False`` checks only names, sizes in bytes and file headers (fast
    indexing); the default decodes every frame and mask, which also finds corrupt files and
    mask/frame size mismatches.
    """
    samples, warnings = index_split(root, split, layout, val_fraction, val_seed, index)
    if decode:
        _, notes = verify_samples(samples, keep=False)
        warnings += notes
    else:
        for sample in samples:
            for path in (sample.image, sample.mask):
                if path is not None:   # the boxes layout's frames have no mask
                    _quick_check(path)
    return samples, warnings


def write_names(names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write frame names one per line (a split list), atomically; return the path."""
    return atomic_write_text(path, "".join(f"{name}\n" for name in names))
