"""The search's report: every candidate as a point (accuracy vs measured latency, and vs size), the Pareto
front of the trained ones, the budget line, the winner, and why each other candidate lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distil.fileio import atomic_write_bytes

__all__ = ["markdown", "write_report"]


def _pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    from distil.report.plots import Point, pareto_front

    front = pareto_front([Point(n, "", c, a) for c, a, n in points])
    return [(p.cost, p.accuracy, p.label) for p in front]


def plot(state: dict[str, Any], path: Path, axis: str) -> Path:
    """One chart: trained candidates at their last proxy accuracy, dropped ones on the bottom edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(state["candidates"].values())
    cfg = state["config"]
    key, label, budget = (
        (
            "latency_ms",
            f"measured latency, ms (batch {cfg['batch']}, {cfg['threads']} thread(s))",
            cfg["target_latency_ms"],
        )
        if axis == "latency"
        else ("bytes", "deployed file, bytes", cfg["target_size_bytes"])
    )
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    trained = [r for r in rows if "proxy_accuracy" in r]
    dropped = [r for r in rows if "proxy_accuracy" not in r]
    accs = [100 * r["proxy_accuracy"] for r in trained]
    floor = (min(accs) - 3) if accs else 0.0
    ax.scatter(
        [r[key] for r in trained], accs, color="tab:blue", zorder=3, label="ranked (proxy val accuracy)"
    )
    for r in trained:
        ax.annotate(
            r["name"],
            (r[key], 100 * r["proxy_accuracy"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.scatter(
        [r[key] for r in dropped],
        [floor] * len(dropped),
        marker="x",
        color="grey",
        zorder=3,
        label="not trained (over budget, or not ranked)",
    )
    front = _pareto([(r[key], r["proxy_accuracy"], r["name"]) for r in trained])
    if len(front) > 1:
        ax.step(
            [c for c, _, _ in front],
            [100 * a for _, a, _ in front],
            where="post",
            color="grey",
            linestyle="--",
            linewidth=1,
            label="Pareto front (ranked)",
        )
    fin = state.get("final")
    if fin:
        x = fin["remeasured"]["median_ms"] if axis == "latency" else fin["bytes"]
        ax.scatter(
            [x],
            [100 * fin["test_accuracy"]],
            marker="*",
            s=160,
            color="tab:red",
            zorder=4,
            label=f"winner {fin['name']} after full KD (test)",
        )
    t = state.get("teacher")
    if t:
        tx = t["latency_ms"] if axis == "latency" else min(f["bytes"] for f in t["formats"].values())
        ax.scatter(
            [tx],
            [100 * state["teacher_test_accuracy"]],
            marker="D",
            color="black",
            zorder=4,
            label="teacher (test)",
        )
    if budget:
        ax.axvline(
            budget,
            color="tab:red",
            linestyle=":",
            label=f"budget {budget:.3g}" + (" ms" if axis == "latency" else " B"),
        )
    ax.set_xscale("log")
    ax.set(
        xlabel=label + " (log scale)", ylabel="top-1 accuracy (%)", title=f"distil shrink: accuracy vs {axis}"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def markdown(state: dict[str, Any]) -> str:
    """The report as markdown: the budget, the winner (re-measured), and one row per candidate."""
    cfg, fin, t = state["config"], state.get("final", {}), state["teacher"]
    lines = ["# distil shrink", ""]
    budget = []
    if cfg["target_latency_ms"] is not None:
        budget.append(f"latency <= {cfg['target_latency_ms']:g} ms (median)")
    if cfg["target_size_bytes"] is not None:
        budget.append(f"file <= {cfg['target_size_bytes']:,} B")
    lines.append(
        f"Budget: {' and '.join(budget)}; ONNX Runtime CPU, batch {cfg['batch']}, {cfg['threads']} thread(s), "
        f"formats {', '.join(cfg['formats'])}; the search keeps a {cfg['latency_margin']:.0%} margin. "
        f"Candidate family: {state.get('family')}."
    )
    tf = ", ".join(f"{f} {r['median_ms']:.3f} ms (IQR {r['iqr_ms']:.3f})" for f, r in t["formats"].items())
    lines += ["", f"Teacher: test accuracy {100 * state['teacher_test_accuracy']:.2f}%, {tf}."]
    if fin:
        rm = fin["remeasured"]
        lines += [
            "",
            f"**Winner: {fin['name']}** ({fin['format']}), `{Path(fin['path']).name}`: test accuracy "
            f"{100 * fin['test_accuracy']:.2f}% (ONNX Runtime; {-fin['drop_pt']:+.2f} pt vs the teacher), "
            f"agreement {100 * fin['agreement']:.2f}%, {fin['bytes']:,} B, {fin['params']:,} params. "
            f"Re-measured from the saved file in a fresh process: {rm['median_ms']:.3f} ms "
            f"(IQR {rm['q1_ms']:.3f}-{rm['q3_ms']:.3f}, {rm['runs']} runs): "
            f"{'meets' if fin['meets_latency'] else 'MISSES'} the latency budget"
            + (
                ""
                if cfg["target_size_bytes"] is None
                else f", {'meets' if fin['meets_size'] else 'MISSES'} the size budget"
            )
            + (
                ""
                if cfg["max_drop"] is None
                else f", {'within' if fin['meets_max_drop'] else 'OVER'} max drop {cfg['max_drop']:g} pt"
            )
            + f". {t['latency_ms'] / rm['median_ms']:.1f}x faster than the teacher's fastest format.",
        ]
        times = state["times_s"]
        lines += [
            "",
            "Cost (wall s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
            + f"; whole search / winner's full distillation = **{fin['cost_ratio']:.2f}x**.",
        ]
    lines += [
        "",
        "| candidate | kind | params | MACs | fp32 ms (IQR) | int8 ms (IQR) | kept | bytes | proxy acc | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(state["candidates"].values(), key=lambda r: -r["latency_ms"])
    for r in rows:
        f = r["formats"]

        def cell(fmt: str, f: dict[str, Any] = f) -> str:
            return f"{f[fmt]['median_ms']:.3f} ({f[fmt]['iqr_ms']:.3f})" if fmt in f else "—"

        acc = f"{100 * r['proxy_accuracy']:.2f}% (r{r['proxy_rung']})" if "proxy_accuracy" in r else "—"
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['params']:,} | {r['macs']:,} | {cell('fp32')} | {cell('int8')} | "
            f"{r['kept']} | {r['bytes']:,} | {acc} | {r.get('status', '')} |"
        )
    if state.get("prune_trace"):
        lines += [
            "",
            "Pruning steered by measured latency (bisection on the channel ratio): "
            + ", ".join(
                f"{p['ratio']:.3f} -> {p['latency_ms']:.3f} ms {p['kept']}" for p in state["prune_trace"]
            ),
        ]
    lines += [
        "",
        "![accuracy vs latency](plots/accuracy_vs_latency.png)",
        "![accuracy vs size](plots/accuracy_vs_size.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(state: dict[str, Any], out: Path) -> Path:
    """``report.md`` and ``plots/accuracy_vs_{latency,size}.png`` in `out`."""
    (out / "plots").mkdir(exist_ok=True)
    plot(state, out / "plots" / "accuracy_vs_latency.png", "latency")
    plot(state, out / "plots" / "accuracy_vs_size.png", "size")
    path = out / "report.md"
    atomic_write_bytes(path, markdown(state).encode())
    return path
