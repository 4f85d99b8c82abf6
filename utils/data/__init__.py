"""Infrared small-target data: dataset layouts, splits, frame and mask reading, one dataset class.

One module per job; every name below is importable from ``utils.data``:

- ``frames``: ``DataError`` (the one error type: its message names the file or folder and the
  fix), ``Sample``, ``list_images``, ``read_frame``, ``read_mask``, ``fit_mask``, ``load_pair``,
  ``frame_to_unit`` (an in-memory array); PNG/TIFF/BMP/JPEG, 8/16-bit, grey or colour (an 8-bit
  colour file is decoded as ``cv2.IMREAD_GRAYSCALE`` decodes it).
- ``layouts``: ``resolve_data_root`` (a release name -> ``DATASETS_DIR/NAME``), ``detect_layout``,
  the ``folder``/``sirst``/``basicirstd`` layouts, ``list_split`` (every file checked),
  ``index_split`` (no file read: for callers that skip a bad frame), ``write_names``.
- ``video`` (the ``video`` layout, box-labelled IR videos): ``VideoItem``, ``read_labels``,
  ``index_videos``, ``iter_video_frames`` and ``count_frames`` (streamed with ``cv2.VideoCapture``),
  ``pseudo_mask`` (box -> mask + ignore region, docs/video.md), ``VideoFrameDataset``.
- ``dataset``: ``IRSTDDataset`` (one split, decoded once, cached) and ``size_batches``.
- ``summary``: ``summarize`` and ``main``, the command line
  ``python -m utils.data --data-root DIR [--layout L] [--index NAME] [--json] [--log-level L]``
  (``--pictures PNG`` on a video root draws pseudo-masks).

Val: where a layout has no val split it is carved from trainval by ``val_fraction`` and
``val_seed`` (never from test) from the frame names alone; a training run saves the val names it
used as ``val_split.txt`` in its run folder (``utils.engine``, through ``write_names``).

Files that are not images (``.xml`` boxes, ``.txt``, ``Thumbs.db``, ``._*`` resource forks)
are skipped by extension. ``DATASETS_DIR`` (``utils.DATASETS_DIR``) is read at call time, so a
test may point ``utils.data.DATASETS_DIR`` elsewhere.
"""

from utils import DATASETS_DIR
from utils.data.dataset import IRSTDDataset, size_batches
from utils.data.frames import (
    ASPECT_TOLERANCE,
    IMAGE_EXTENSIONS,
    PERCENTILES,
    SIXTEEN_BIT_MODES,
    DataError,
    Sample,
    fit_mask,
    frame_to_unit,
    list_images,
    load_pair,
    read_frame,
    read_mask,
)
from utils.data.layouts import (
    LAYOUTS,
    RELEASE_NAMES,
    SIRST_MASK_SUFFIX,
    SPLITS,
    detect_layout,
    images_by_stem,
    index_split,
    list_split,
    resolve_data_root,
    write_names,
)
from utils.data.summary import main, summarize
from utils.data.video import (
    VideoFrameDataset,
    VideoItem,
    count_frames,
    index_videos,
    iter_video_frames,
    pseudo_mask,
    read_labels,
)

__all__ = [
    "ASPECT_TOLERANCE",
    "DATASETS_DIR",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "PERCENTILES",
    "RELEASE_NAMES",
    "SIRST_MASK_SUFFIX",
    "SIXTEEN_BIT_MODES",
    "SPLITS",
    "DataError",
    "IRSTDDataset",
    "Sample",
    "VideoFrameDataset",
    "VideoItem",
    "count_frames",
    "detect_layout",
    "fit_mask",
    "frame_to_unit",
    "images_by_stem",
    "index_split",
    "index_videos",
    "iter_video_frames",
    "list_images",
    "list_split",
    "load_pair",
    "main",
    "pseudo_mask",
    "read_frame",
    "read_labels",
    "read_mask",
    "resolve_data_root",
    "size_batches",
    "summarize",
    "write_names",
]
