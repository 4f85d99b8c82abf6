"""The named recipes of ``run_configs.py --config NAME``: each is a description and the values that differ from
``TrainConfig``'s defaults, with a one-line reason where a value is not obvious. How each recipe came about (the
runs behind its numbers): docs/experiments/recipes.md; the protocols: docs/protocols.md."""
from __future__ import annotations

from typing import Any

# The release recipe (docs/protocols.md): Adam 1e-4, poly 0.9 per iteration, 400 epochs,
# batch 8, seed 1, the release's effective loss. Unlike the release, checkpoints are
# selected on a validation split, never on test.
_RELEASE = dict(epochs=400, batch_size=8, lr=1e-4, schedule="poly", loss="release", seed=1,
                crop_size=0, flip=False, rot90=False, workers=4)

_SIRSTV1_CPU = dict(dataset="SIRSTv1",
                    crop_size=256,           # most SIRST v1 frames are 250-450 px: crops see whole-frame clutter
                    target_prob=0.5,         # half the crops hold a target, half teach the background
                    batch_size=8, steps_per_epoch=14, epochs=70,
                    lr=5e-4, schedule="cosine", warmup_iters=50, min_lr_ratio=0.02,
                    grad_clip=1.0,           # a 5x higher lr than the release: clip the rare large steps
                    ema_decay=0.995,         # averaging smooths the epoch-to-epoch swings of val IoU
                    loss="weighted", w_softiou=1.0, w_l1=0.2, w_mse=0.1,  # a real (differentiable) L1
                    target_prior=0.01,
                    val_every=4,
                    dtype="fp32")            # bf16 autocast: only 8% faster a step here (bench_train)

# One model for real scenes (docs/protocols.md#general-model): three sources, real negatives,
# pasted targets, noise, mined false alarms, selected on every source's val split.
_GENERAL = dict(_SIRSTV1_CPU, dataset="SIRSTv1",
                sources="SIRSTv1:1,NUDT-SIRST:1,IR-Drone-Video:2",   # half the crops from real video
                video_every=30, video_val_every=30,    # ~2,100 training and 515-533 val frames of 196 + 49 videos
                target_prob=0.6,                       # more target crops: video crops are mostly background
                copy_paste=0.3,                        # exact-mask targets on real clutter
                noise_prob=0.3, noise_sigma=15.0,      # sigma up to 15 grey levels (the robustness test: 10)
                hard_negatives=5, hard_negative_frac=0.25, hard_negative_frames=600)

# The shipped general model's recipe (general_ft) and the tries at a v3 built on it.
_GENERAL_FT = dict(_GENERAL,
                   init="checkpoints/lrrnet_sirst_v1.pt",   # keep SIRST v1's accuracy, add real negatives
                   lr=1e-4, warmup_iters=20,                 # a fifth of a from-scratch lr: refine
                   steps_per_epoch=40, epochs=8, val_every=4,   # 320 steps of 8 crops, ~8 s each here
                   video_val_every=60,                       # 288 val frames: 2 min a validation here
                   hard_negatives=3, hard_negative_frames=300)
_V3_SOURCES = "SIRSTv1:1,NUDT-SIRST:1,IR-Drone-Video:2,IRSTD-1K-boxes:1"   # IRSTD-1K's real scenes as a fourth

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "irstd1k": ("release recipe on IRSTD-1K: frames resized to 512 x 512",
                dict(_RELEASE, dataset="IRSTD-1k", base_size=512)),
    "nudt": ("release recipe on NUDT-SIRST: frames resized to 512 x 512",
             dict(_RELEASE, dataset="NUDT-SIRST", base_size=512)),
    "sirstaug": ("release recipe on SIRST-Aug: 256 x 256, flips and transposition",
                 dict(_RELEASE, dataset="sirst_aug", base_size=256, flip=True, rot90=True)),
    "sirstv1": ("release recipe on SIRST v1 (idx_427): resized to 512 x 512, flips and transposition",
                dict(_RELEASE, dataset="SIRSTv1", base_size=512, flip=True, rot90=True)),
    "sirstv1_cpu": ("SIRST v1 stage 1, 82 min on a 2-core CPU: 256 crops, EMA, warm-up + cosine", _SIRSTV1_CPU),
    "sirstv1_ft": ("SIRST v1 stage 2, 36 min on a 2-core CPU: whole frames, from stage 1's best.pt (give it with --init)",
                   dict(_SIRSTV1_CPU,
                        crop_size=0, batch_size=1,   # whole frames, one at a time (their sizes differ)
                        steps_per_epoch=0,           # one pass over the 256 training frames per epoch
                        epochs=10, lr=1e-4, warmup_iters=20,   # a fifth of stage 1's lr: refine, don't restart
                        ema_decay=0.998,             # ~500-step average: 256 single-frame steps an epoch
                        val_every=2)),
    "nudt_cpu": ("NUDT-SIRST in 50 minutes on a 2-core CPU, from SIRST v1 weights (give them with --init)",
                 # --init: from scratch the head stays below its prior for hundreds of steps (docs/experiments/recipes.md)
                 dict(_SIRSTV1_CPU, dataset="NUDT-SIRST",   # crop 256 = the whole 256 x 256 frame
                      steps_per_epoch=30, epochs=20, val_every=3)),
    "general_cpu": ("one model for real scenes from scratch: SIRST v1 + NUDT-SIRST + IR-Drone-Video, real "
                    "negatives, pasted targets, noise, mined false alarms; selected on all three val splits",
                    dict(_GENERAL, steps_per_epoch=30, epochs=60, val_every=4)),
    "general_ft": ("the shipped general model, about 55 min on a 2-core CPU: general_cpu's mix fine-tuned from "
                   "checkpoints/lrrnet_sirst_v1.pt", _GENERAL_FT),
    "general_v3_cpu": ("general_ft with IRSTD-1K's 640 real training frames (box labels) as a fourth source and "
                       "faint point targets pasted, 86 min on a 2-core CPU; val kept v2 over it "
                       "(docs/results.md#v3-irstd-1k-and-faint-pasted-points-not-chosen)",
                       dict(_GENERAL_FT, sources=_V3_SOURCES,
                            copy_paste=0.5, paste_faint=0.5)),   # v2's map: no point target under 40 grey levels
    "general_v3_ft": ("v2 (checkpoints/lrrnet_general.pt) fine-tuned on general_v3_cpu's four sources with more faint "
                      "pasted points, 42 min on a 2-core CPU; val kept v2 over it "
                      "(docs/results.md#v3-fine-tuned-from-v2-not-chosen-and-what-faint-points-cost)",
                      dict(_GENERAL_FT, sources=_V3_SOURCES,
                           init="checkpoints/lrrnet_general.pt",   # keep what v2 has; v3 from SIRST v1 weights lost it
                           copy_paste=0.6, paste_faint=0.7,        # ~0.8 faint points a frame (general_v3_cpu: ~0.5)
                           lr=5e-5,                                # half general_ft's: v2 has already converged once
                           epochs=6, val_every=3)),
    "general_gpu": ("general_cpu's mix from scratch on one GPU: 12 epochs of 100 batches of 32, 3.5 min on an "
                    "H200 (--device cuda)",
                    dict(_GENERAL,
                         batch_size=32,                       # 4x general_cpu's batch
                         lr=5e-4, warmup_iters=300,           # lr 1e-3 stopped detecting (docs/experiments/recipes.md)
                         steps_per_epoch=100, epochs=12, val_every=5,
                         ema_decay=0.999,
                         workers=12)),                        # crops, pastes and noise on 12 CPU processes; fp32
    "nudt_window": ("NUDT-SIRST from scratch in one GPU window (docs/gpu.md): read from packs/nudt_window.npz, crops "
                    "made on the device, bf16, stopped at 8 min at the latest (--device cuda)",
                    dict(_SIRSTV1_CPU, dataset="NUDT-SIRST",
                         loader="device", pack="packs/nudt_window.npz",   # no dataset folders on a GPU machine
                         batch_size=32, steps_per_epoch=100,
                         epochs=150,                  # 480,000 crops: 4 min at the 2,000 crops/s aimed for
                         lr=5e-4, warmup_iters=300, ema_decay=0.999,     # general_gpu's values for batch 32
                         val_every=10,                # 66 val frames: seconds on a GPU
                         dtype="auto",                # bf16 autocast on CUDA (fp32 on the CPU)
                         time_budget=8.0, workers=0)),
    "general_window": ("general_cpu's mix from scratch in one GPU window (docs/gpu.md): read from "
                       "packs/general_window.npz, crops, pastes and turns on the device, bf16, 8 min at most",
                       dict(_GENERAL,
                            loader="device", pack="packs/general_window.npz",
                            # every 600th / 300th labelled video frame (196 train, 92 val): 25.5 MB, still over
                            # the ~23 MB the tracked files leave of a call (docs/gpu.md#the-general-mix)
                            video_every=600, video_val_every=300,
                            batch_size=32, steps_per_epoch=100,
                            epochs=100,               # 320,000 crops: under 3 min at 2,000 crops/s
                            lr=5e-4, warmup_iters=300, ema_decay=0.999,   # general_gpu's values
                            val_every=10, hard_negatives=10,
                            dtype="auto", time_budget=8.0, workers=0)),
    "synthetic": ("generated scenes, no data needed; about a minute on a CPU (smoke test and demo)",
                  dict(synthetic=True, synthetic_frames=96, synthetic_size=128,
                       crop_size=64, target_prob=0.8,      # small crops, mostly on targets: many steps a minute
                       batch_size=8, steps_per_epoch=30, epochs=8, lr=2e-3, schedule="cosine", warmup_iters=20,
                       target_prior=0.01,                  # without it the first ~150 steps predict nothing
                       loss="weighted", w_mse=0.1, val_every=1, image_every=3, seed=0)),
}
