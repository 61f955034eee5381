"""Compress to a budget: the most accurate student whose latency, measured on the target backend, fits.

The search, in the order it runs (each step's results go to ``state.json``, so a killed search resumes
where it stopped):

1. **Teacher reference.** The teacher is exported to ONNX (fp32, and int8 by ONNX Runtime's static
   quantizer) and timed in a separate, warmed-up process (:mod:`distil.compress.latency_probe`).
2. **Candidates**: narrower / shallower versions of the teacher's own architecture
   (:mod:`distil.shrink.candidates`), and teacher copies structurally pruned *until their measured
   latency meets the budget* (bisection on the channel ratio, each step exported and timed).
3. **Measured latency, before any training.** Every candidate is exported as fp32 and int8 and both are
   timed in a fresh process (median and quartiles, the requested threads and batch); the faster format
   that meets the budget is kept per candidate. Candidates over the latency (or size) budget are dropped.
   If none is left, the budget is refused, naming the fastest latency that was reached.
4. **Ranking by a short distillation proxy**: successive halving. The largest feasible candidates (at most
   ``max_candidates``) are distilled for ``proxy_epochs`` on a ``proxy_limit``-sample subset, ranked by
   accuracy on a held-out split, the best ``1/eta`` continue for ``eta`` times more epochs, and so on
   until one is left.
5. **The winner** is distilled fully from its transferred initialisation, exported, quantized (the
   four int8 variants, the fastest kept), and the faster of fp32 and int8 that meets the budget is saved
   as ``model.onnx``. That file is measured again in a fresh process, and its accuracy is measured on
   the test split with ONNX Runtime.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.config import KDConfig, ShrinkConfig, TrainConfig
from distil.data import DataBundle
from distil.data.bundle import SampleSplit
from distil.errors import ConfigError
from distil.fileio import atomic_write_json
from distil.shrink.candidates import Candidate, architecture_candidates, build_candidate

__all__ = ["ShrinkResult", "parse_latency", "parse_size", "shrink_model"]

STATE = "state.json"
_UNITS_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}
_UNITS_B = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3}


def parse_latency(text: str | float) -> float:
    """``"0.3ms"``, ``"300us"``, ``"0.0003s"`` or a bare number of milliseconds -> milliseconds."""
    s = str(text).strip().lower().replace(" ", "")
    for unit in sorted(_UNITS_MS, key=len, reverse=True):
        if s.endswith(unit):
            s, factor = s[: -len(unit)], _UNITS_MS[unit]
            break
    else:
        factor = 1.0
    try:
        value = float(s) * factor
    except ValueError:
        raise ConfigError(f"cannot read latency {text!r}: write e.g. 0.3ms, 300us or 0.3 (ms).") from None
    if not math.isfinite(value) or not value > 0:
        raise ConfigError(f"a latency budget must be positive, got {text!r}.")
    return value


def parse_size(text: str | int) -> int:
    """``"200kB"``, ``"1.5MB"``, ``"64KiB"`` or a bare number of bytes -> bytes (kB = 1000 B)."""
    s = str(text).strip().lower().replace(" ", "")
    for unit in sorted(_UNITS_B, key=len, reverse=True):
        if s.endswith(unit):
            s, factor = s[: -len(unit)], _UNITS_B[unit]
            break
    else:
        factor = 1
    try:
        value = int(float(s) * factor)
    except (ValueError, OverflowError):  # OverflowError: inf, 1e400
        raise ConfigError(
            f"cannot read size {text!r}: write e.g. 200kB, 1.5MB or a number of bytes."
        ) from None
    if value <= 0:
        raise ConfigError(f"a size budget must be positive, got {text!r}.")
    return value


def _measurement_key(cfg: ShrinkConfig, teacher_spec: dict[str, Any], data: DataBundle) -> str:
    """What a latency measurement depends on: the backend setting, the architectures, the input shape."""
    key = [cfg.threads, cfg.batch, list(cfg.formats), cfg.min_run_time, teacher_spec, list(data.input_shape)]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _search_key(teacher: nn.Module, data: DataBundle) -> str:
    """What the ranking and the winner depend on besides the config: the teacher's weights and the data."""
    h = hashlib.sha256()
    for t in teacher.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(data.describe(), sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclasses.dataclass
class ShrinkResult:
    """What the search delivered.

    Attributes:
        model: The winner (PyTorch, fp32, trained).
        spec: Its architecture spec.
        onnx_path: The deployed file (``model.onnx``: the faster format that meets the budget).
        state: Everything the search measured (``state.json``): teacher, candidates, rungs, final.
    """

    model: nn.Module
    spec: dict[str, Any]
    onnx_path: Path
    state: dict[str, Any]

    @property
    def final(self) -> dict[str, Any]:
        return dict(self.state["final"])


def _file(name: str) -> str:
    """A candidate's label as a file name ("d14-w0.5/1" -> "d14-w0.5_1")."""
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in name)


class _Search:
    def __init__(
        self,
        teacher: nn.Module,
        teacher_spec: dict[str, Any],
        data: DataBundle,
        cfg: ShrinkConfig,
        out: Path,
        train_cfg: TrainConfig,
        kd: KDConfig,
        log: Callable[[str], None],
        fit_kwargs: dict[str, Any],
    ) -> None:
        self.teacher, self.teacher_spec, self.data, self.cfg, self.out = teacher, teacher_spec, data, cfg, out
        self.train_cfg, self.kd, self.log, self.fit_kwargs = train_cfg, kd, log, fit_kwargs
        self.shape = tuple(data.input_shape)
        self.example = data.train.head(1).cpu()
        self.onnx_dir = out / "onnx"
        self.ckpt_dir = out / "candidates"
        self.onnx_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = out / STATE
        self.state: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        target = _measurement_key(cfg, teacher_spec, data)
        searched = _search_key(teacher, data)
        if self.state and self.state.get("config") != cfg.model_dump():
            # Another budget: the latency measurements still hold (they do not depend on the budget) if
            # they were taken for the same teacher, data and backend setting (threads, batch, formats);
            # the ranking, the winner and its training do not.
            same = self.state.get("measured_for") == target
            measured = (
                {k: v for k, v in self.state.get("measured", {}).items() if k != "final"} if same else {}
            )
            self.state = {"measured": measured, "resumed_from_other_config": self.state.get("config")}
            for stale in self.ckpt_dir.glob("*.safetensors"):
                stale.unlink()
        elif self.state and self.state.get("searched_for", searched) != searched:
            raise ConfigError(
                f"{str(out)!r} holds a search of another teacher or dataset; give a new --out for this one."
            )
        self.state.setdefault("measured", {})  # name -> latency record; budget independent, reused on resume
        self.state.setdefault("times_s", {})
        self.state["config"] = cfg.model_dump()
        self.state["measured_for"] = target
        self.state["searched_for"] = searched
        self.started = time.perf_counter()

    # ---------------------------------------------------------------- bookkeeping
    def save(self) -> None:
        atomic_write_json(self.out / STATE, self.state)

    def _timed(self, key: str, seconds: float) -> None:
        self.state["times_s"][key] = self.state["times_s"].get(key, 0.0) + seconds

    @property
    def limit_ms(self) -> float | None:
        t = self.cfg.target_latency_ms
        return None if t is None else t * (1 - self.cfg.latency_margin)

    # ---------------------------------------------------------------- measurement
    def measure(self, name: str, model: nn.Module, *, calibration: int = 64) -> dict[str, Any]:
        """Export fp32 (+ int8), time both in a fresh process; cached by name in the state."""
        if name in self.state["measured"]:
            return dict(self.state["measured"][name])
        from distil.compress import export_onnx
        from distil.compress.latency_probe import probe_latency
        from distil.compress.quantize import quantize_onnx
        from distil.measure import count_macs, count_parameters

        t0 = time.perf_counter()
        safe = _file(name)
        files: dict[str, Path] = {}
        fp32 = export_onnx(model, self.onnx_dir / f"{safe}.fp32.onnx", self.shape)
        if "fp32" in self.cfg.formats:
            files["fp32"] = fp32
        record: dict[str, Any] = {
            "params": count_parameters(model),
            "macs": count_macs(model.cpu().eval(), self.shape),
            "formats": {},
        }
        if "int8" in self.cfg.formats:
            # Screening builds one int8 variant; the winner's chain tries all four and keeps the fastest.
            q = quantize_onnx(
                fp32,
                self.onnx_dir / f"{safe}.int8.onnx",
                self.data.train.head(calibration),
                self.shape,
                fmt="qoperator",
                per_channel=True,
                threads=self.cfg.threads,
                min_run_time=0.1,
            )
            files["int8"] = q.path
            record["int8_variant"] = {"format": q.fmt, "per_channel": q.per_channel}
        probes = probe_latency(
            list(files.values()),
            threads=self.cfg.threads,
            batch=self.cfg.batch,
            min_run_time=self.cfg.min_run_time,
        )
        for fmt, p in zip(files, probes, strict=True):
            record["formats"][fmt] = {
                k: p[k] for k in ("median_ms", "q1_ms", "q3_ms", "iqr_ms", "runs", "bytes")
            }
            record["formats"][fmt]["path"] = str(files[fmt])
        self._timed("measure", time.perf_counter() - t0)
        self.state["measured"][name] = record
        self.save()
        return dict(record)

    def final_variants(self, model: nn.Module) -> dict[str, Any]:
        """The winner's deployable files: fp32 and the four int8 variants, all timed together in one
        fresh process (interleaved rounds), so the kept one is the fastest as the target runs it."""
        from distil.compress import export_onnx
        from distil.compress.latency_probe import probe_latency
        from distil.compress.quantize import quantize_onnx
        from distil.measure import count_macs, count_parameters

        files: dict[str, Path] = {}
        fp32 = export_onnx(model, self.onnx_dir / "final.fp32.onnx", self.shape)
        if "fp32" in self.cfg.formats:
            files["fp32"] = fp32
        if "int8" in self.cfg.formats:
            for fmt in ("qoperator", "qdq"):
                for pc in (False, True):
                    label = f"int8 {fmt}{' per-channel' if pc else ''}"
                    q = quantize_onnx(
                        fp32,
                        self.onnx_dir / f"final.int8-{fmt}-{int(pc)}.onnx",
                        self.data.train.head(512),
                        self.shape,
                        fmt=fmt,
                        per_channel=pc,
                        threads=self.cfg.threads,
                        min_run_time=0.02,
                    )
                    files[label] = q.path
        probes = probe_latency(
            list(files.values()),
            threads=self.cfg.threads,
            batch=self.cfg.batch,
            min_run_time=max(1.0, 2 * self.cfg.min_run_time),
            rounds=10,
        )
        record: dict[str, Any] = {
            "params": count_parameters(model),
            "macs": count_macs(model.cpu().eval(), self.shape),
            "formats": {},
        }
        for label, pr in zip(files, probes, strict=True):
            record["formats"][label] = {
                k: pr[k] for k in ("median_ms", "q1_ms", "q3_ms", "iqr_ms", "runs", "bytes")
            }
            record["formats"][label]["path"] = str(files[label])
        return record

    def judge(self, record: dict[str, Any], limit_ms: float | None) -> dict[str, Any]:
        """Which format to keep and whether the candidate fits the budget (latency with the search margin)."""
        size = self.cfg.target_size_bytes
        fmts = record["formats"]

        def fits(f: str) -> bool:
            lat_ok = limit_ms is None or fmts[f]["median_ms"] <= limit_ms
            return lat_ok and (size is None or fmts[f]["bytes"] <= size)

        ok = [f for f in fmts if fits(f)]
        kept = min(ok or list(fmts), key=lambda f: fmts[f]["median_ms"])
        lat, nbytes = fmts[kept]["median_ms"], fmts[kept]["bytes"]
        why = ""
        if not ok:
            reasons = []
            if limit_ms is not None and lat > limit_ms:
                reasons.append(
                    f"over the latency budget ({lat:.3f} ms {kept} > {limit_ms:.3f} ms with margin)"
                )
            if size is not None and min(fmts[f]["bytes"] for f in fmts) > size:
                reasons.append(
                    f"over the size budget ({min(fmts[f]['bytes'] for f in fmts):,} B > {size:,} B)"
                )
            why = "; ".join(reasons) or "no format meets both budgets at once"
        return {"kept": kept, "latency_ms": lat, "bytes": nbytes, "feasible": bool(ok), "why": why}

    # ---------------------------------------------------------------- candidates
    def prune_to_latency(self) -> list[Candidate]:
        """Teacher copies pruned by bisection on the channel ratio until the measured latency meets the budget."""
        from distil.compress.prune import prune_structured

        if not self.cfg.prune or self.limit_ms is None:
            return []

        def pruned(ratio: float) -> tuple[Candidate, dict[str, Any]]:
            res = prune_structured(source, self.example, self.teacher_spec, ratio=ratio)
            name = f"pruned-{ratio:.3f}"
            cand = Candidate(
                name, "pruned", res.spec, f"teacher pruned, {ratio:.1%} of channels per layer", res.model
            )
            return cand, self.judge(self.measure(name, res.model), self.limit_ms)

        t0 = time.perf_counter()
        measure_before = self.state["times_s"].get("measure", 0.0)
        # Torch-Pruning traces the autograd graph: a frozen teacher (requires_grad False, as after any
        # distillation) would silently prune nothing. Prune a copy that records gradients.
        source = copy.deepcopy(self.teacher).requires_grad_(True)
        trace: list[dict[str, Any]] = []
        cand, verdict = pruned(0.95)
        trace.append({"ratio": 0.95, **verdict})
        best = cand if verdict["feasible"] else None
        lo, hi = 0.0, 0.95
        if best is not None:
            for _ in range(
                self.cfg.prune_steps
            ):  # latency falls (noisily) with the ratio: bisect towards the least pruning
                mid = round((lo + hi) / 2, 3)
                c, v = pruned(mid)
                trace.append({"ratio": mid, **v})
                if v["feasible"]:
                    best, hi = c, mid
                else:
                    lo = mid
        self.state["prune_trace"] = trace
        # Pruning's own time: its steps' exports and probes are already counted under "measure".
        measured = self.state["times_s"].get("measure", 0.0) - measure_before
        self._timed("prune_search", time.perf_counter() - t0 - measured)
        return [best] if best is not None else [cand]

    def candidates(self) -> list[Candidate]:
        arch, family = architecture_candidates(self.teacher_spec, self.teacher, self.cfg.widths)
        self.state["family"] = family or "none (structured pruning of the teacher only)"
        if not arch and not self.cfg.prune:
            raise ConfigError(
                f"model {self.teacher_spec.get('name')!r} has no width/depth knobs distil knows, and pruning is "
                "off (shrink.prune=false): nothing to search. Turn pruning on."
            )
        return arch + self.prune_to_latency()

    # ---------------------------------------------------------------- training
    def proxy_data(self) -> DataBundle:
        g = torch.Generator().manual_seed(self.train_cfg.seed)
        train = self.data.train
        val = self.data.val
        order = torch.randperm(len(train), generator=g)
        if len(val) == 0:  # rank on held-out training images, never on the test split
            n_val = max(1, min(2000, len(train) // 10))
            val = train.take(order[:n_val])
            order = order[n_val:]
        if self.cfg.proxy_limit is not None:
            order = order[: self.cfg.proxy_limit]
        return dataclasses.replace(self.data, train=train.take(order), val=val)

    def distill(self, model: nn.Module, data: DataBundle, epochs: int, description: str) -> nn.Module:
        from distil.api import distill

        cfg = self.train_cfg.model_copy(update={"epochs": epochs})
        distill(self.teacher, model, data, cfg, self.kd, description=description, **self.fit_kwargs)
        return model.cpu().eval()

    def evaluate(self, model: nn.Module, split: SampleSplit) -> float:
        from distil.measure import accuracy, predict_split

        return accuracy(predict_split(model.cpu().eval(), split), split.labels)

    def _ckpt(self, name: str) -> Path:
        return self.ckpt_dir / f"{_file(name)}.safetensors"

    def confirm(self, winner: str, pool: list[Candidate], rows: dict[str, dict[str, Any]]) -> str:
        """Time the ranked winner's kept file once more, in a fresh process, before its full distillation.

        Its screening time may have come from a quiet minute of a shared machine; if it no longer fits,
        the next candidate by proxy accuracy (the latest rung it reached first) is tried instead.
        """
        from distil.compress.latency_probe import probe_latency

        if self.limit_ms is None or "confirmed" in self.state:
            return str(self.state.get("confirmed", winner))
        reached = {
            n: (k, acc) for k, r in enumerate(self.state.get("rungs", [])) for n, acc in r["accuracy"].items()
        }
        order = [
            winner,
            *sorted(
                (c.name for c in pool if c.name != winner),
                key=lambda n: reached.get(n, (-1, 0.0)),
                reverse=True,
            ),
        ]
        checks = self.state.setdefault("confirm_checks", [])
        for name in order:
            rec = self.state["measured"][name]["formats"][rows[name]["kept"]]
            again = probe_latency(
                [rec["path"]],
                threads=self.cfg.threads,
                batch=self.cfg.batch,
                min_run_time=self.cfg.min_run_time,
            )[0]
            ok = again["median_ms"] <= self.limit_ms
            checks.append(
                {"name": name, "median_ms": again["median_ms"], "iqr_ms": again["iqr_ms"], "fits": ok}
            )
            if ok:
                self.state["confirmed"] = name
                self.save()
                return name
            rows[name]["status"] = (
                f"ranked first but re-timed over budget before full training ({again['median_ms']:.3f} ms > "
                f"{self.limit_ms:.3f} ms)"
            )
            self.log(
                f"{name}: re-timed at {again['median_ms']:.3f} ms, over {self.limit_ms:.3f} ms: next candidate"
            )
        self.state["confirmed"] = (
            winner  # none confirmed: keep the ranked winner, the final check will say so
        )
        self.save()
        return winner

    def successive_halving(self, pool: list[Candidate]) -> str:
        from safetensors.torch import load_file, save_file

        data = self.proxy_data()
        rungs: list[dict[str, Any]] = self.state.setdefault("rungs", [])
        alive = [c.name for c in pool]
        by_name = {c.name: c for c in pool}
        deadline = None if self.cfg.budget_hours is None else self.started + self.cfg.budget_hours * 3600
        k = 0
        while len(alive) > 1:
            epochs = self.cfg.proxy_epochs * self.cfg.eta**k
            rung = rungs[k] if k < len(rungs) else {"epochs": epochs, "accuracy": {}, "kept": None}
            if k >= len(rungs):
                rungs.append(rung)
            for name in alive:
                if name in rung["accuracy"]:
                    continue  # done before a resume
                if deadline is not None and time.perf_counter() > deadline:
                    self.log(f"budget of {self.cfg.budget_hours} h reached: ranking on what was trained")
                    break
                t0 = time.perf_counter()
                model, _ = build_candidate(by_name[name], self.teacher, self.example, self.cfg.selection)
                if k > 0 and self._ckpt(name).is_file():
                    model.load_state_dict(load_file(str(self._ckpt(name))))
                self.distill(model, data, epochs, f"proxy {name} r{k}")
                save_file(
                    {n: t.detach().contiguous().clone() for n, t in model.state_dict().items()},
                    str(self._ckpt(name)),
                )
                rung["accuracy"][name] = self.evaluate(model, data.val)
                self._timed("proxy", time.perf_counter() - t0)
                self.log(f"rung {k} ({epochs} ep): {name} proxy val acc {100 * rung['accuracy'][name]:.2f}%")
                self.save()
            ranked = sorted((n for n in alive if n in rung["accuracy"]), key=lambda n: -rung["accuracy"][n])
            if not ranked:
                break
            keep = max(1, math.ceil(len(ranked) / self.cfg.eta))
            rung["kept"] = ranked[:keep]
            alive = ranked[:keep]
            self.save()
            if deadline is not None and time.perf_counter() > deadline:
                break
            k += 1
        return alive[0]

    # ---------------------------------------------------------------- the whole search
    def run(self) -> ShrinkResult:
        from distil.compress.export import onnx_predict
        from distil.compress.latency_probe import probe_latency
        from distil.measure import accuracy, agreement, predict
        from distil.train.checkpoint import save_checkpoint

        cfg = self.cfg
        teacher_rec = self.measure("teacher", self.teacher)
        teacher_best = min(teacher_rec["formats"].values(), key=lambda f: f["median_ms"])
        self.state["teacher"] = {**teacher_rec, "latency_ms": teacher_best["median_ms"]}
        if "teacher_test_accuracy" not in self.state:
            self.state["teacher_test_accuracy"] = self.evaluate(self.teacher, self.data.test)
        self.log(
            "teacher: "
            + ", ".join(f"{f} {r['median_ms']:.3f} ms" for f, r in teacher_rec["formats"].items())
            + f" "
            f"(batch {cfg.batch}, {cfg.threads} thread(s))"
        )
        cands = self.candidates()
        rows: dict[str, dict[str, Any]] = {}
        for c in cands:
            model, counts = build_candidate(c, self.teacher, self.example, cfg.selection)
            verdict = self.judge(self.measure(c.name, model), self.limit_ms)
            rows[c.name] = {
                "name": c.name,
                "kind": c.kind,
                "note": c.note,
                "spec": c.spec,
                "init": counts,
                **{k: self.state["measured"][c.name][k] for k in ("params", "macs", "formats")},
                **verdict,
            }
            self.log(
                f"{c.name:>16}: {verdict['latency_ms']:.3f} ms {verdict['kept']}, {verdict['bytes']:,} B "
                f"{'fits' if verdict['feasible'] else 'dropped: ' + verdict['why']}"
            )
        self.state["candidates"] = rows
        self.save()
        feasible = [c for c in cands if rows[c.name]["feasible"]]
        if not feasible:
            fastest = min(rows.values(), key=lambda r: r["latency_ms"])
            smallest = min(rows.values(), key=lambda r: min(f["bytes"] for f in r["formats"].values()))
            parts = [f"no candidate meets the budget ({self._budget_text()}). "]
            parts.append(
                f"The fastest reachable: {fastest['latency_ms']:.3f} ms ({fastest['name']}, {fastest['kept']}, "
                f"IQR {fastest['formats'][fastest['kept']]['iqr_ms']:.3f} ms)"
            )
            if cfg.target_size_bytes is not None:
                parts.append(
                    f"; the smallest file: {min(f['bytes'] for f in smallest['formats'].values()):,} B ({smallest['name']})"
                )
            parts.append(
                f". The teacher's faster format runs in {teacher_best['median_ms']:.3f} ms. Ask for at least "
                f"{fastest['latency_ms'] / (1 - cfg.latency_margin):.3f} ms (the search keeps a "
                f"{cfg.latency_margin:.0%} margin), or add narrower widths (shrink.widths)."
            )
            raise ConfigError("".join(parts))
        # The largest feasible candidates are the ones worth ranking: capacity that still fits.
        pool = sorted(feasible, key=lambda c: -rows[c.name]["params"])[: cfg.max_candidates]
        for c in feasible:
            if c not in pool:
                rows[c.name]["status"] = (
                    f"fits, not ranked: only the {cfg.max_candidates} largest fitting candidates are"
                )
        for r in rows.values():
            if not r["feasible"]:
                r["status"] = "dropped before training: " + r["why"]
        winner_name = pool[0].name if len(pool) == 1 else self.successive_halving(pool)
        winner_name = self.confirm(winner_name, pool, rows)
        for k, rung in enumerate(self.state.get("rungs", [])):
            for name, acc in rung["accuracy"].items():
                rows[name]["proxy_accuracy"] = acc
                rows[name]["proxy_rung"] = k
                if rung.get("kept") is not None and name not in rung["kept"]:
                    best = max(rung["accuracy"].values())
                    rows[name]["status"] = (
                        f"lost at rung {k} ({rung['epochs']} proxy epoch(s)): {100 * acc:.2f}% < {100 * best:.2f}% "
                        f"of the best; half were kept"
                    )
        rows[winner_name]["status"] = "winner"
        self.state["winner"] = winner_name
        self.save()
        winner = next(c for c in cands if c.name == winner_name)

        # ---- full distillation of the winner, then its compression chain
        final_ckpt = self.out / "model"
        from distil.models.registry import spec_factories
        from distil.train.checkpoint import load_checkpoint

        trusted = spec_factories(self.teacher_spec)  # the winner names only the teacher's factories
        if "final" not in self.state and self.state.get("trained") != winner_name:
            t0 = time.perf_counter()
            model, _ = build_candidate(winner, self.teacher, self.example, cfg.selection)
            epochs = cfg.epochs or self.train_cfg.epochs
            self.log(
                f"winner {winner_name}: full distillation, {epochs} epochs on {len(self.data.train):,} samples"
            )
            self.distill(model, self.data, epochs, f"distill {winner_name}")
            self._timed("final_distill", time.perf_counter() - t0)
            save_checkpoint(
                final_ckpt,
                model,
                winner.spec,
                {"shrink": {"winner": winner_name}, "data": self.data.describe()},
            )
            self.state["trained"] = winner_name  # a resume goes straight to the chain
            self.save()
        if "final" not in self.state:
            model, _ = load_checkpoint(final_ckpt, trusted_models=trusted)
            model.eval()
            t0 = time.perf_counter()
            rec = self.final_variants(model)
            verdict = self.judge(rec, cfg.target_latency_ms)  # the user's budget, no search margin
            src = Path(rec["formats"][verdict["kept"]]["path"])
            onnx_path = self.out / "model.onnx"
            shutil.copyfile(src, onnx_path)
            # Measured again from the saved file, in a fresh process.
            again = probe_latency(
                [onnx_path], threads=cfg.threads, batch=cfg.batch, min_run_time=max(1.0, cfg.min_run_time)
            )[0]
            x_test = self.data.test.head(len(self.data.test))
            logits = onnx_predict(onnx_path, x_test, threads=cfg.threads)
            t_logits = predict(self.teacher, x_test)
            self._timed("final_chain", time.perf_counter() - t0)
            acc = accuracy(logits, self.data.test.labels)
            self.state["final"] = {
                "name": winner_name,
                "format": verdict["kept"],
                "path": str(onnx_path),
                "bytes": onnx_path.stat().st_size,
                "params": rec["params"],
                "macs": rec["macs"],
                "pytorch_test_accuracy": self.evaluate(model, self.data.test),
                "test_accuracy": acc,
                "agreement": agreement(logits, t_logits),
                "search_latency_ms": verdict["latency_ms"],
                "remeasured": {k: again[k] for k in ("median_ms", "q1_ms", "q3_ms", "iqr_ms", "runs")},
                "formats": {
                    f: {k: v for k, v in r.items() if k != "path"} for f, r in rec["formats"].items()
                },
            }
            self.save()

        model, _ = load_checkpoint(final_ckpt, trusted_models=trusted)
        fin = self.state["final"]
        fin["meets_latency"] = (
            cfg.target_latency_ms is None or fin["remeasured"]["median_ms"] <= cfg.target_latency_ms
        )
        fin["meets_size"] = cfg.target_size_bytes is None or fin["bytes"] <= cfg.target_size_bytes
        drop = 100 * (self.state["teacher_test_accuracy"] - fin["test_accuracy"])
        fin["drop_pt"] = drop
        fin["meets_max_drop"] = cfg.max_drop is None or drop <= cfg.max_drop
        times = self.state["times_s"]
        fin["cost_ratio"] = sum(times.values()) / max(times.get("final_distill", 0.0), 1e-9)
        self.save()
        from distil.shrink.report import write_report

        write_report(self.state, self.out)
        return ShrinkResult(model=model, spec=winner.spec, onnx_path=Path(fin["path"]), state=self.state)

    def _budget_text(self) -> str:
        parts = []
        if self.cfg.target_latency_ms is not None:
            parts.append(
                f"{self.cfg.target_latency_ms:g} ms at batch {self.cfg.batch}, {self.cfg.threads} thread(s)"
            )
        if self.cfg.target_size_bytes is not None:
            parts.append(f"{self.cfg.target_size_bytes:,} B")
        return " and ".join(parts)


def shrink_model(
    teacher: nn.Module,
    teacher_spec: dict[str, Any],
    data: DataBundle,
    cfg: ShrinkConfig,
    out_dir: str | Path,
    *,
    train_cfg: TrainConfig | None = None,
    kd: KDConfig | None = None,
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> ShrinkResult:
    """Search the teacher's smaller versions for the most accurate one that meets a measured budget.

    Args:
        teacher: The trained teacher (frozen; it teaches every candidate and is the reference).
        teacher_spec: Its architecture spec (from its checkpoint sidecar).
        data: The recipe's data; candidates train on ``data.train``, the proxy ranks on ``data.val``
            (or on held-out training images when there is no validation split); the final row is on test.
        cfg: The budget and the search's settings (:class:`distil.config.ShrinkConfig`); at least one of
            ``target_latency_ms`` and ``target_size_bytes``.
        out_dir: Where ``state.json``, the candidates' files, ``model.onnx``, ``model.safetensors/json``,
            ``report.md`` and the plots go. An existing ``state.json`` there is resumed.
        train_cfg: The students' training recipe (the proxy changes only its epochs).
        kd: The distillation loss.
        log: Called with one line per step.
        **fit_kwargs: Passed to :func:`distil.api.distill` (e.g. progress).

    Returns:
        ShrinkResult.

    Raises:
        ConfigError: Data of another task than classification, no budget given, or no candidate meets it (the message names the fastest latency
            reached), before any training.
    """
    if cfg.target_latency_ms is None and cfg.target_size_bytes is None:
        raise ConfigError(
            "give a budget: target_latency_ms (--target-latency 0.3ms) and/or target_size_bytes (--target-size 200kB)."
        )
    if data.task != "classification":
        # The search ranks candidates by top-1 accuracy, which float label rows do not have.
        raise ConfigError(
            f"distil shrink ranks candidates by classification accuracy, but {data.name!r} is {data.task} data. "
            "Fix: compress with distil compress (prune, quantize), whose rows use the task's own metrics."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = teacher.cpu().eval()
    search = _Search(
        teacher,
        dict(teacher_spec),
        data,
        cfg,
        out,
        train_cfg or TrainConfig(),
        kd or KDConfig(),
        log or (lambda _l: None),
        fit_kwargs,
    )
    return search.run()
