"""report.html rendered by a real headless browser (Debian's chromium): tables and embedded images.

Skipped, with the reason, when chromium is not installed (`apt-get install -y chromium`); CI installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from distil.report.writer import write_report
from tests.report.fake_run import make_run

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); CI installs it"
)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # running as root in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class _Dom(HTMLParser):
    """Collects the tables (as rows of cell texts) and the image sources of the rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id") or f"table{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_report_html_renders_in_chromium(tmp_path: Path) -> None:
    html = write_report(make_run(tmp_path / "runs")).html
    # The DOM as chromium built it: the tables and the embedded images are there after parsing.
    dom = _Dom()
    dom.feed(_chromium(tmp_path / "profile", "--dump-dom", html.as_uri()).stdout)
    metrics = dom.tables["metrics"]
    assert metrics[0][:3] == ["model", "accuracy", "agreement"]
    assert [row[0] for row in metrics[1:]] == ["teacher", "student_scratch", "student_kd"]
    assert metrics[3][1] == "80.00%"
    assert [row[0] for row in dom.tables["per-class"][1:]] == ["cat", "dog", "bird"]
    assert len(dom.images) == 4 and all(src.startswith("data:image/png;base64,") for src in dom.images)

    # A screenshot shows the figures were decoded and drawn: matplotlib's first line colour (#1f77b4)
    # appears only inside the plots, never in the page's own styles.
    shot = tmp_path / "shot.png"
    _chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,3000", html.as_uri())
    pixels = (mpimg.imread(shot)[..., :3] * 255).round().astype(int)
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4])) <= 3, axis=-1)
    assert blue.sum() > 500


# Eight models with the longest cells a report has: names of the compress chain, noisy latencies with their
# spread, bytes ratios with the parameter ratio in brackets.
MANY = [
    {"name": name, "accuracy": 0.9 - 0.01 * i, "agreement": None if i == 0 else 0.95, "params": 1_234_567 // (i + 1),
     "bytes": 4_938_268 // (i + 1) if "int8" not in name else 1_234_567, "macs": 123_456_789 // (i + 1),
     "latency_b1_ms": 71.95 / (i + 1), "latency_b1_spread": 0.9 if i % 2 else 0.02,
     "latency_reliable": i % 2 == 0, "throughput_b256": 123_456.0 * (i + 1)}
    for i, name in enumerate(("teacher", "student_scratch", "student_kd", "student_kd_transferred_from_teacher",
                              "pruned.onnx", "pruned+kd.onnx", "qat+kd.onnx", "int8.onnx"))
]  # fmt: skip

# Measures the models table against the box it lives in, after layout, into the DOM that --dump-dom prints.
_MEASURE = """<script>
const table = document.getElementById("metrics");
const box = table.parentElement;
document.body.insertAdjacentHTML("beforeend", `<pre id="measured">${table.scrollWidth} ${box.clientWidth} ${
  box.scrollWidth} ${document.documentElement.scrollWidth} ${window.innerWidth}</pre>`);
</script></body>"""


def test_every_column_of_a_many_model_table_fits_a_1280px_window(tmp_path: Path) -> None:
    html = write_report(make_run(tmp_path / "runs", metrics=MANY)).html
    probe = tmp_path / "probe.html"
    probe.write_text(html.read_text().replace("</body>", _MEASURE))
    out = _chromium(tmp_path / "profile", "--window-size=1280,2000", "--dump-dom", probe.as_uri()).stdout
    dom = _Dom()
    dom.feed(out)
    assert len(dom.tables["metrics"]) == 1 + len(MANY) and len(dom.tables["metrics"][0]) == 11
    table_w, box_w, box_scroll_w, page_w, window_w = map(
        int,
        out.rsplit('<pre id="measured">', 1)[1].split("</pre>")[0].split(),  # the element, not the script
    )
    assert window_w == 1280
    # No horizontal scrollbar: the table is no wider than its box, and the page no wider than the window.
    assert table_w <= box_w and box_scroll_w <= box_w, (table_w, box_w, box_scroll_w)
    assert page_w <= window_w
