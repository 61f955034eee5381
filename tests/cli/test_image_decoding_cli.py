"""`distil train` on an image folder as phones and scanners leave it: what it reads, skips and says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from distil.cli.app import app


def _folder(root: Path) -> Path:
    """Three classes of 12x12 PNGs, a sideways phone photo (EXIF orientation 6), a GIF and a text file."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(
        root / "a" / "IMG_0001.jpg", quality=95, exif=exif
    )
    frames = [Image.fromarray(np.full((12, 12), v, np.uint8)) for v in (30, 220)]
    frames[0].save(root / "b" / "wave.gif", save_all=True, append_images=frames[1:])
    (root / "c" / "notes.txt").write_text("shot on a Tuesday")
    (root / "c" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def test_train_reads_rotated_and_animated_images_and_reports_what_it_left_out(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    out = tmp_path / "runs"
    base = ["train", "--quiet", "--no-latency", "--out", str(out)]
    for kv in ("data.name=imagefolder", f"data.root={data}", "data.image_size=10", "teacher_train.epochs=1"):
        base += ["--set", kv]
    base += ["--set", "teacher.model=tiny-cnn"]
    # By default a file that is not an image stops the run before anything is written, naming it.
    result = CliRunner().invoke(app, [*base, "--name", "strict"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "notes.txt is not a readable image: not an image Pillow can read (format TXT?)" in said
    assert "data.on_bad_sample=skip" in said and not (out / "strict").exists()

    # What the user reads: the CLI prints each warning as one "distil: warning: ..." line.
    result = CliRunner().invoke(app, [*base, "--set", "data.on_bad_sample=skip", "--name", "skip"])
    assert result.exit_code == 0, result.output
    told = " ".join(result.output.split())
    assert "distil: warning:" in told
    assert "1 unreadable file(s) left out: 1 not an image Pillow can read (format TXT?), e.g. [" in told
    assert "notes.txt" in told and ".DS_Store" not in told
    assert "1 image(s) turned upright by their EXIF orientation" in told
    assert "1 animated image(s): first frame used" in told
    extra = json.loads((out / "skip" / "summary.json").read_text())["data"]["extra"]
    assert extra["exif_rotated"] == "1 image(s) turned upright by their EXIF orientation"
    assert extra["animated"] == "1 animated image(s): first frame used"
    assert extra["skipped"].startswith("1 unreadable file(s) left out: 1 not an image Pillow can read")
    sidecar = json.loads((out / "skip" / "teacher.json").read_text())
    assert (
        sidecar["data"]["sizes"]["train"] + sidecar["data"]["sizes"]["test"] + sidecar["data"]["sizes"]["val"]
        == 20
    )  # 18 PNGs, the photo and the GIF


def test_train_drops_an_empty_class_folder_when_skipping_and_records_the_classes(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    (data / "c" / "notes.txt").unlink()
    (data / "b2").mkdir()
    (data / "b2" / "Thumbs.db").write_bytes(b"\x00")
    out = tmp_path / "runs"
    base = ["train", "--quiet", "--no-latency", "--out", str(out), "--set", "teacher.model=tiny-cnn"]
    for kv in ("data.name=imagefolder", f"data.root={data}", "data.image_size=10", "teacher_train.epochs=1"):
        base += ["--set", kv]
    result = CliRunner().invoke(app, [*base, "--name", "strict"])
    assert result.exit_code == 2, result.output
    assert "b2 holds no image files" in " ".join(result.output.split())
    result = CliRunner().invoke(app, [*base, "--set", "data.on_bad_sample=skip", "--name", "skip"])
    assert result.exit_code == 0, result.output
    assert "b2 holds no image files: left out" in " ".join(result.output.split())
    sidecar = json.loads((out / "skip" / "teacher.json").read_text())
    assert sidecar["data"]["class_names"] == ["a", "b", "c"] and sidecar["data"]["num_classes"] == 3


def test_train_drops_a_class_whose_every_file_was_skipped_and_records_the_classes(tmp_path: Path) -> None:
    # Files are images by content now, so a folder of only unreadable files is not "empty" when listed;
    # under skip it must still be dropped, not kept as a class the model never sees.
    data = _folder(tmp_path / "data")
    (data / "d").mkdir()
    (data / "d" / "notes.txt").write_text("not an image")
    (data / "d" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    out = tmp_path / "runs"
    args = ["train", "--quiet", "--no-latency", "--out", str(out), "--name", "skip"]
    for kv in (
        "teacher.model=tiny-cnn",
        "data.name=imagefolder",
        f"data.root={data}",
        "data.image_size=10",
        "teacher_train.epochs=1",
        "data.on_bad_sample=skip",
    ):
        args += ["--set", kv]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "class(es) ['d'] have no readable training image left" in " ".join(result.output.split())
    sidecar = json.loads((out / "skip" / "teacher.json").read_text())
    assert sidecar["data"]["class_names"] == ["a", "b", "c"] and sidecar["data"]["num_classes"] == 3
    assert "['d']" in sidecar["data"]["extra"]["unreadable_classes"]
