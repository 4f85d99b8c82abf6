"""Run a network over frames on disk or over videos and write every frame's outputs (what ``inference.py`` does).

Frames (``run_on_samples``) are decoded on a thread pool ahead of the network, batched by size,
and written on the same pool behind it (``utils.infer.writers``), so neither the disk nor the encoder
waits for the network. Videos (``run_on_video``) stream: a decoding thread keeps a few batches
ahead, and nothing holds a whole video. An unreadable frame or video is named and skipped; the
others are still written.
"""
from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from utils.data import DataError, Sample, fit_mask, frame_to_unit, read_frame, read_mask
from utils.data.video import VIDEO_EXTENSIONS, iter_video_frames, open_video, video_files
from utils.files import write_png
from utils.infer.device import Predictor
from utils.infer.predict import PredictOptions, TemporalConfirmer, detect_targets, plan_batches, predict_maps
from utils.infer.record import MAP_FOLDERS, map_path, video_map_path
from utils.infer.writers import VideoOverlay, overlay_image, to_uint8, write_frame_maps

READ_AHEAD = 2  # batches decoded ahead of the network
WRITE_QUEUE = 16  # frames waiting to be written before the network waits for the writers


@dataclass
class Report:
    """What a run did: frames written, errors per frame (skipped frames and others), detections per frame, warnings."""

    written: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # frame -> error (unreadable frame, failed write, bad mask)
    detections: dict[str, dict] = field(default_factory=dict)  # frame name -> {"size_hw", "targets"}
    warnings: list[str] = field(default_factory=list)


def _read(sample: Sample, sixteen_bit: str) -> tuple[np.ndarray | None, str | None]:
    """Return (frame float32 H x W in [0, 1], None) or (None, the error naming the file)."""
    try:
        return read_frame(sample.image, sixteen_bit), None
    except DataError as error:
        return None, str(error)


def _read_mask(sample: Sample, shape: tuple[int, int]) -> tuple[np.ndarray | None, list[str], str | None]:
    """Return (mask {0,1} at the frame's size or None, warnings, error) for the overlay."""
    if sample.mask is None:
        return None, [], None
    try:
        mask, notes = fit_mask(read_mask(sample.mask), shape, sample)
    except DataError as error:
        return None, [], f"{error} (overlay drawn without ground truth)"
    return mask, notes, None


def _write_frame(out: Path, sample: Sample, frame: np.ndarray, prob: np.ndarray, recon: np.ndarray,
                 opts: PredictOptions, overlay: bool) -> tuple[dict, list[str], str | None]:
    """Write one frame's outputs; return (its detections entry, warnings, error or None)."""
    notes: list[str] = []
    error = None
    write_frame_maps(out, sample.name, prob, recon)
    if overlay:
        mask, notes, error = _read_mask(sample, frame.shape)
        write_png(map_path(out, sample.name, "overlay"), overlay_image(frame, mask, prob, recon, opts.threshold))
    entry = {"size_hw": list(frame.shape), "targets": detect_targets(prob, opts.threshold)}
    return entry, notes, error


def _decoded_batches(pool: ThreadPoolExecutor, samples: Sequence[Sample], batches: list[list[int]],
                     sixteen_bit: str) -> Iterator[tuple[list[int], list[tuple[np.ndarray | None, str | None]]]]:
    """Yield (batch indices, [(frame or None, error or None)]) in order, decoding READ_AHEAD batches ahead."""
    def load(batch):
        return [_read(samples[i], sixteen_bit) for i in batch]

    pending = [(batch, pool.submit(load, batch)) for batch in batches[:READ_AHEAD]]
    for k in range(len(batches)):
        batch, future = pending.pop(0)
        if k + READ_AHEAD < len(batches):
            nxt = batches[k + READ_AHEAD]
            pending.append((nxt, pool.submit(load, nxt)))
        yield batch, future.result()


def run_on_samples(predictor: Predictor, samples: Sequence[Sample], out: Path, opts: PredictOptions = PredictOptions(),
                   overlay: bool = False, sixteen_bit: str = "range", progress: bool = True) -> Report:
    """Run the network on every sample and write its outputs under out; return the Report (frames in sample order)."""
    report = Report()
    for sub in [k for k in MAP_FOLDERS if overlay or k != "overlay"]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(samples), desc="inference", unit="frame", disable=None if progress else True, file=sys.stderr)
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        # Pass 1: decode every frame once for its size (threaded); unreadable frames are named here.
        sizes: dict[int, tuple[int, int]] = {}
        for i, (frame, error) in enumerate(pool.map(lambda s: _read(s, sixteen_bit), samples)):
            if error is not None:
                report.errors[samples[i].name] = error
                bar.update()
            else:
                sizes[i] = frame.shape
        writes: list[tuple[int, Future]] = []
        done: dict[int, tuple[dict, list[str], str | None] | Exception] = {}

        def drain(limit: int) -> None:
            while len(writes) > limit:
                i, future = writes.pop(0)
                try:
                    done[i] = future.result()
                except OSError as error:
                    done[i] = error
                bar.update()

        # Pass 2: decode again in batches, ahead of the network; write on the pool behind it.
        for batch, loaded in _decoded_batches(pool, samples, plan_batches(sizes, opts), sixteen_bit):
            items = []
            for i, (frame, error) in zip(batch, loaded):
                if frame is None:  # read once, failed now: the file changed under us
                    report.errors[samples[i].name] = error
                    bar.update()
                elif frame.shape != sizes[i]:
                    report.errors[samples[i].name] = f"frame {samples[i].image} changed size while running: run again"
                    bar.update()
                else:
                    items.append((i, frame))
            probs, recons = predict_maps(predictor, [frame for _, frame in items], opts)
            for (i, frame), prob, recon in zip(items, probs, recons):
                writes.append((i, pool.submit(_write_frame, out, samples[i], frame, prob, recon, opts, overlay)))
            drain(WRITE_QUEUE)
        drain(0)
    bar.close()
    for i, sample in enumerate(samples):
        result = done.get(i)
        if result is None:
            continue
        if isinstance(result, Exception):
            report.errors[sample.name] = f"outputs of {sample.name} could not be written: {result}"
            continue
        entry, notes, error = result
        report.written.append(sample.name)
        report.detections[sample.name] = entry
        report.warnings += notes
        if error is not None:
            report.errors[sample.name] = error
    return report


# ----------------------------------------------------------------------------- videos

DECODE_AHEAD = 4  # batches decoded ahead of the network (a few frames: memory stays flat)


def list_videos(path: Path, out: Path | None = None) -> list[Path]:
    """Return [path] for a file, or the video files (by extension, sorted) in a folder; DataError when none.

    Two videos with one stem (a.mp4, a.avi) would write the same outputs, and an overlay OUT/STEM.mp4
    that is an input video would overwrite it: both are refused, naming the files.
    """
    path = Path(path)
    if path.is_file():
        found = [path]
    elif path.is_dir():
        found = video_files(path)
        if not found:
            raise DataError(f"folder {path} holds no video ({', '.join(VIDEO_EXTENSIONS)}): pass a video or a folder "
                            "of them")
    else:
        raise DataError(f"video {path} does not exist: pass a video file or a folder of videos")
    by_stem: dict[str, list[str]] = {}
    for video in found:
        by_stem.setdefault(video.stem, []).append(video.name)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:
        raise DataError(f"videos {', '.join(clashes[0])} in {path} share a name, so their outputs would too: rename "
                        "all but one")
    if out is not None:
        for video in found:
            if (Path(out) / f"{video.stem}.mp4").resolve() == video.resolve():
                raise DataError(f"the overlay {Path(out) / video.name} would overwrite the input video: pass another "
                                "--out")
    return found


def video_info(path: Path) -> tuple[int, float]:
    """Return (frame count as the container states it, frames per second); DataError when OpenCV cannot open it."""
    capture = open_video(path)
    try:
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))), float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()


@dataclass
class VideoReport:
    """What one video gave: processed frames as (keys, entry) for utils.infer.writers.write_detections, the error if any."""

    frames: list[tuple[dict, dict]] = field(default_factory=list)
    error: str | None = None  # the video could not be read (at all, or from some frame on)
    warning: str | None = None  # e.g. fewer frames decoded than the container states
    seconds: float = 0.0


def _batched_frames(path: Path, every: int, batch_size: int, stop: threading.Event,
                    out: queue.Queue) -> None:
    """Decode the video (every n-th frame) into batches of (indices, frames) on `out`; then None, or the exception.

    Any exception goes on the queue (the consumer re-raises what is not a DataError), so the
    consumer never waits for a batch that will not come.
    """
    batch: list[tuple[int, np.ndarray]] = []
    try:
        for index, frame in iter_video_frames(path, every=every, full_depth=True):
            if stop.is_set():
                return
            batch.append((index, frame))
            if len(batch) == batch_size:
                out.put(batch)
                batch = []
        if batch:
            out.put(batch)
        out.put(None)
    except BaseException as error:  # noqa: B902 -- handed to the consumer thread, which decides
        out.put(error)


def run_on_video(predictor: Predictor, path: Path, out: Path, opts: PredictOptions = PredictOptions(), every: int = 1,
                 overlay: bool = False, confirm: TemporalConfirmer | None = None, save_maps: bool = False,
                 progress: bool = True, sixteen_bit: str = "range") -> VideoReport:
    """Run the network on every `every`-th frame of one video, streaming; return its VideoReport.

    Frames are decoded on a thread ahead of the network (a few batches, never the whole video),
    detected, optionally confirmed over time, and written: OUT/STEM.mp4 with --overlay (boxes and
    peak probabilities), OUT/img/STEM_FRAME.png (round(255 T), 6-digit frame) with save_maps. A 16-bit grey
    video is read at full depth and scaled by ``sixteen_bit`` as 16-bit frames are.
    """
    report = VideoReport()
    stem = path.stem
    start = time.perf_counter()
    try:
        total, fps = video_info(path)
    except DataError as error:
        report.error = str(error)
        return report
    if confirm is not None:
        confirm.reset()
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=DECODE_AHEAD)
    decoder = threading.Thread(target=_batched_frames, args=(path, every, opts.batch_size, stop, batches), daemon=True)
    decoder.start()
    bar = tqdm(total=-(-total // every) if total else None, desc=stem, unit="frame",
               disable=None if progress else True, file=sys.stderr, leave=False)
    sink = VideoOverlay(out / f"{stem}.mp4", fps / every) if overlay else contextlib.nullcontext()
    try:
        with sink:
            while (item := batches.get()) is not None:
                if isinstance(item, DataError):
                    report.error = str(item)
                    raise _Stopped  # leaves the overlay unwritten (a partial video is not renamed into place)
                if isinstance(item, BaseException):
                    raise item
                frames = [frame_to_unit(frame, path.name, sixteen_bit) for _, frame in item]  # as every frame
                probs, _ = predict_maps(predictor, frames, opts)
                for (index, frame), unit, prob in zip(item, frames, probs):
                    targets = detect_targets(prob, opts.threshold)
                    if confirm is not None:
                        targets = confirm(targets)
                    report.frames.append(({"video": stem, "frame": index},
                                          {"size_hw": list(prob.shape), "targets": targets}))
                    if overlay:
                        sink.write(frame if frame.dtype == np.uint8 else unit, targets)
                    if save_maps:
                        write_png(video_map_path(out, stem, index), to_uint8(prob))
                bar.update(len(item))
    except _Stopped:
        pass
    finally:
        stop.set()
        while decoder.is_alive():  # unblock a decoder waiting on a full queue
            try:
                batches.get_nowait()
            except queue.Empty:
                decoder.join(0.05)
        bar.close()
    report.seconds = time.perf_counter() - start
    expected = -(-total // every) if total else 0
    if report.error is None and expected and len(report.frames) < expected - 1:
        report.warning = (f"decoded {len(report.frames)} of the {expected} frames its header promises (every {every}): "
                          "the file may be truncated")
    if report.error is not None and report.frames:
        report.error += f" (after {len(report.frames)} frames, whose detections are kept; no overlay written)"
    return report


class _Stopped(Exception):
    """The decoder reported a DataError: stop this video, keep what was done."""
