"""Infrared small-target data: dataset layouts, splits, frame and mask reading, one dataset class.

One module per job; every name below is importable from ``utils.data``:

- ``frames``: ``DataError`` (the one error type: its message names the file or folder and the
  fix), ``Sample``, ``list_images``, ``read_frame``, ``read_mask``, ``fit_mask``, ``load_pair``,
  ``frame_to_unit`` (an in-memory array); PNG/TIFF/BMP/JPEG, 8/16-bit, grey or colour (an 8-bit
  colour file is decoded as ``cv2.IMREAD_GRAYSCALE`` decodes it).
- ``layouts``: ``resolve_data_root`` (a release name -> ``DATASETS_DIR/NAME``), ``detect_layout``,
  the ``folder``/``sirst``/``basicirstd`` layouts, ``list_split`` (every file checked),
  ``index_split`` (no file read: for callers that skip a bad frame), ``write_names``.
- ``labels``: ``read_box_labels``, the one reader of box labels (``video,frame,x,y,w,h``), and ``by_video``;
  ``read_still_labels`` for still frames (``frame,x,y,w,h``, several boxes a frame).
- ``video`` (the ``video`` layout, box-labelled IR videos): ``VideoItem``, ``index_videos``, ``iter_video_frames`` and ``count_frames`` (streamed with ``cv2.VideoCapture``),
  ``pseudo_mask`` (box -> mask + ignore region, docs/video.md), ``VideoFrameDataset``.
- ``stills`` (the ``boxes`` layout, still frames with box labels): ``StillBoxDataset``, ``boxes_pseudo_mask``.
- ``dataset``: ``IRSTDDataset`` (one split, decoded once, cached) and ``size_batches``.
- ``summary`` (and ``video_summary`` for a video root): ``summarize`` and ``main``, the command line
  ``python -m utils.data --data-root DIR [--layout L] [--index NAME] [--json] [--log-level L]``
  (``--pictures PNG`` on a video root draws pseudo-masks).
- ``mixture`` (several sources in one training set), ``transforms`` (joint crops, flips, turns) and
  ``synthetic`` scenes live beside these and are imported from their modules.

Val: where a layout has no val split it is carved from trainval by ``val_fraction`` and
``val_seed`` (never from test) from the frame names alone; a training run saves the val names it
used as ``val_split.txt`` in its run folder (``utils.train.loop``, through ``write_names``).

Files that are not images (``.xml`` boxes, ``.txt``, ``Thumbs.db``, ``._*`` resource forks)
are skipped by extension. ``utils.DATASETS_DIR`` is read at call time, so a test may point it elsewhere.
"""

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
from utils.data.labels import Box, by_video, read_box_labels, read_still_labels
from utils.data.layouts import (
    LAYOUTS,
    RELEASE_NAMES,
    SIRST_MASK_SUFFIX,
    SPLITS,
    detect_layout,
    images_by_stem,
    index_split,
    is_still_box_root,
    is_video_root,
    list_split,
    resolve_data_root,
    write_names,
)
from utils.data.stills import StillBoxDataset, boxes_pseudo_mask
from utils.data.summary import main, summarize
from utils.data.video import (
    VIDEO_EXTENSIONS,
    VideoFrameDataset,
    VideoItem,
    count_frames,
    index_videos,
    iter_video_frames,
    pseudo_mask,
    video_files,
)

__all__ = [
    "ASPECT_TOLERANCE",
    "VIDEO_EXTENSIONS",
    "Box",
    "by_video",
    "is_video_root",
    "is_still_box_root",
    "StillBoxDataset",
    "boxes_pseudo_mask",
    "read_still_labels",
    "video_files",
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
    "read_box_labels",
    "read_mask",
    "resolve_data_root",
    "size_batches",
    "summarize",
    "write_names",
]
