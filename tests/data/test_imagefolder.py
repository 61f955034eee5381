"""The image readers (`imagefolder`, `manifest`) on real PNG/JPEG files written here with Pillow."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from distil.cli.app import app
from distil.data import DatasetLoader, ImageFolderSplit, load_dataset
from distil.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore:.*test split:UserWarning")


def _img(path: Path, h: int, w: int, mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = {"L": (h, w), "RGB": (h, w, 3), "RGBA": (h, w, 4)}[mode]
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, format=fmt)
    return arr


def _folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 5, mode: str = "RGB", size: int = 8
) -> Path:
    for c, name in enumerate(classes):
        for i in range(n):
            _img(root / name / f"{i}.png", size, size, mode, seed=c * 100 + i)
    return root


def test_a_flat_folder_reads_its_classes_and_carves_a_test_split(tmp_path: Path) -> None:
    _folder(tmp_path, ("zebra", "ant"))
    with pytest.warns(UserWarning, match="test split"):
        b = load_dataset("imagefolder", tmp_path, val_fraction=0.25)
    assert b.class_names == ["ant", "zebra"]
    assert (len(b.train), len(b.val), len(b.test)) == (6, 2, 2)
    assert isinstance(b.train, ImageFolderSplit) and b.input_shape == (3, 8, 8)
    assert "carved" in b.describe()["extra"]["test_split"]
    # No image is in two splits.
    splits = [set(s.paths) for s in (b.train, b.val, b.test)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])


def test_values_are_the_pixels_scaled_and_normalized(tmp_path: Path) -> None:
    arr = _img(tmp_path / "train" / "a" / "0.png", 4, 4)
    _img(tmp_path / "train" / "b" / "0.png", 4, 4, seed=1)
    _img(tmp_path / "test" / "a" / "0.png", 4, 4, seed=2)
    b = load_dataset("imagefolder", tmp_path, val_fraction=0.0)
    assert (len(b.train), len(b.val), len(b.test)) == (2, 0, 1)
    i = b.train.paths.index(str(tmp_path / "train" / "a" / "0.png"))
    raw = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    m, s = torch.tensor(b.mean).view(3, 1, 1), torch.tensor(b.std).view(3, 1, 1)
    torch.testing.assert_close(b.train[i]["inputs"], (raw - m) / s)
    # The train split's per-channel stats: mean 0, std 1 after normalization.
    x = b.train.head(2)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)
    batch = next(b.train.batches(2))
    torch.testing.assert_close(batch["inputs"], x)
    assert batch["index"].tolist() == [0, 1]


def test_given_val_and_test_folders_are_used_and_a_class_train_lacks_is_refused(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        _folder(tmp_path / split, n=n)
    b = load_dataset("imagefolder", tmp_path, val_fraction=0.5)
    assert (len(b.train), len(b.val), len(b.test)) == (8, 4, 6)
    assert all("/val/" in p for p in b.val.paths)
    _img(tmp_path / "test" / "bird" / "0.png", 8, 8)
    with pytest.raises(DataError, match="'bird' is not a class of the train split"):
        load_dataset("imagefolder", tmp_path)


def test_grayscale_stays_one_channel_and_rgba_or_mixed_become_rgb(tmp_path: Path) -> None:
    gray = _folder(tmp_path / "gray", mode="L")
    assert load_dataset("imagefolder", gray).input_shape == (1, 8, 8)
    assert load_dataset("imagefolder", gray, options={"channels": "RGB"}).input_shape == (3, 8, 8)
    rgba = _folder(tmp_path / "rgba", mode="RGBA")
    b = load_dataset("imagefolder", rgba)
    assert b.input_shape == (3, 8, 8) and b.train[0]["inputs"].shape == (3, 8, 8)
    _img(gray / "cat" / "rgb.jpg", 8, 8, "RGB", fmt="JPEG")
    assert load_dataset("imagefolder", gray).input_shape == (3, 8, 8)
    assert load_dataset("imagefolder", gray, options={"channels": "L"}).input_shape == (1, 8, 8)


def test_mixed_sizes_need_image_size_and_are_resized_and_center_cropped(tmp_path: Path) -> None:
    for i, (h, w) in enumerate([(8, 8), (12, 20), (30, 9), (5, 5), (16, 16)]):
        _img(tmp_path / "a" / f"{i}.png", h, w, seed=i)
        _img(tmp_path / "b" / f"{i}.webp", h, w, seed=10 + i, fmt="WEBP")
    with pytest.raises(DataError, match=r"data\.image_size"):
        load_dataset("imagefolder", tmp_path)
    b = load_dataset("imagefolder", tmp_path, options={"image_size": 6})
    assert b.input_shape == (3, 6, 6)
    assert all(b.train[i]["inputs"].shape == (3, 6, 6) for i in range(len(b.train)))
    # Center crop: a wide image keeps its middle columns.
    wide = np.zeros((4, 12), np.uint8)
    wide[:, 4:8] = 255
    Image.fromarray(wide).save(tmp_path / "a" / "wide.png")
    b = load_dataset("imagefolder", tmp_path, options={"image_size": 4, "channels": "L"}, val_fraction=0.0)
    split = next(s for s in (b.train, b.test) if str(tmp_path / "a" / "wide.png") in s.paths)
    raw = split.raw(split.paths.index(str(tmp_path / "a" / "wide.png")), None)[0]  # type: ignore[arg-type]
    assert raw.min() == 1.0


def test_a_manifest_reads_names_or_indices_relative_to_its_folder(tmp_path: Path) -> None:
    for i in range(6):
        _img(tmp_path / "img" / f"{i}.jpg", 8, 8, seed=i, fmt="JPEG")
    rows = "path,label,split\n" + "".join(
        f"img/{i}.jpg,{'dog' if i % 2 else 'cat'},{'test' if i >= 4 else 'train'}\n" for i in range(6)
    )
    (tmp_path / "m.csv").write_text(rows)
    b = load_dataset("manifest", tmp_path / "m.csv", val_fraction=0.0)
    assert b.class_names == ["cat", "dog"] and (len(b.train), len(b.test)) == (4, 2)
    assert b.train.labels.tolist() == [0, 1, 0, 1]
    lines = [json.dumps({"path": f"img/{i}.jpg", "label": i % 3}) for i in range(6)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    b = load_dataset("manifest", tmp_path / "m.jsonl", val_fraction=0.0)
    assert b.class_names == ["0", "1", "2"]
    (tmp_path / "class_names.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(DataError, match="label 2 is outside the 2 classes"):
        load_dataset("manifest", tmp_path / "m.jsonl")
    (tmp_path / "class_names.json").write_text(json.dumps(["cat"]))
    with pytest.raises(DataError, match="label 'dog' is not a class"):
        load_dataset("manifest", tmp_path / "m.csv")


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "img/../../outside.png"])
def test_a_manifest_row_pointing_outside_its_folder_is_refused(tmp_path: Path, bad: str) -> None:
    _img(tmp_path / "outside.png", 8, 8)
    _img(tmp_path / "data" / "img" / "0.png", 8, 8)
    (tmp_path / "data" / "m.csv").write_text(f"path,label\nimg/0.png,a\n{bad},b\n")
    with pytest.raises(DataError, match="points outside the manifest's folder"):
        load_dataset("manifest", tmp_path / "data" / "m.csv")


def test_bad_folders_and_options_are_clear_errors(tmp_path: Path) -> None:
    _folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no image files"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(DataError, match="has no class folders"):
        load_dataset("imagefolder", tmp_path / "empty")
    with pytest.raises(DataError, match="needs the folder"):
        load_dataset("imagefolder")
    with pytest.raises(ConfigError, match=r"data\.image_size do"):
        load_dataset("digits", options={"image_size": 8})
    with pytest.raises(DataError, match="columns path,label"):
        (tmp_path / "m.csv").write_text("file,class\na.png,x\n")
        load_dataset("manifest", tmp_path / "m.csv")


def test_a_corrupt_image_names_the_file_or_is_skipped_and_counted(tmp_path: Path) -> None:
    _folder(tmp_path, n=5)
    bad = tmp_path / "cat" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    truncated = tmp_path / "dog" / "9.jpg"
    _img(truncated, 32, 32, fmt="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match=r"9\.(png|jpg) is not a readable image.*on_bad_sample=skip"):
        load_dataset("imagefolder", tmp_path)
    with pytest.warns(UserWarning, match="2 unreadable file"):
        b = load_dataset("imagefolder", tmp_path, options={"on_bad_sample": "skip"})
    assert len(b.train) + len(b.val) + len(b.test) == 10
    assert b.describe()["extra"]["skipped"].startswith("2 unreadable")


def test_decompression_bombs_and_unreadable_files_stop_even_when_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder(tmp_path, size=16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16x16 = 256 > 2 x 100: Pillow's error
    with pytest.raises(DataError, match="MAX_IMAGE_PIXELS"):
        load_dataset("imagefolder", tmp_path, options={"on_bad_sample": "skip"})
    monkeypatch.undo()
    locked = tmp_path / "cat" / "0.png"
    if os.geteuid() == 0:  # root reads any file: make Pillow's open fail as it would for a user
        real_open = Image.open

        def refuse(path, *a, **k):  # type: ignore[no-untyped-def]
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(Image, "open", refuse)
    locked.chmod(0)
    try:
        with pytest.raises(DataError, match=r"cannot read .*0\.png.*chmod"):
            load_dataset("imagefolder", tmp_path, options={"on_bad_sample": "skip"})
    finally:
        locked.chmod(0o644)


def test_splits_pickle_as_paths_and_train_through_the_dataloader(tmp_path: Path) -> None:
    b = load_dataset("imagefolder", _folder(tmp_path, n=6))
    blob = pickle.dumps(b.train)
    assert len(blob) < 4000
    again = pickle.loads(blob)
    torch.testing.assert_close(again[0]["inputs"], b.train[0]["inputs"])
    loader = DatasetLoader(b.train, batch_size=4, shuffle=False, num_workers=0)
    batch = next(iter(loader))
    torch.testing.assert_close(batch["inputs"], b.train.head(4))
    sub = b.train.take(torch.tensor([2, 0]))
    assert sub.paths == [b.train.paths[2], b.train.paths[0]]


def test_cli_trains_on_an_image_folder_and_bad_data_exits_2_writing_nothing(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", ("a", "b", "c"), n=8, mode="L", size=12)
    out = tmp_path / "runs"
    common = ["--quiet", "--no-latency", "--out", str(out), "--set", "data.name=imagefolder"]
    args = [*common, "--set", f"data.root={data}", "--set", "teacher_train.epochs=1"]
    args += ["--set", "teacher.model=tiny-cnn", "--set", "data.image_size=10", "--name", "img"]
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    assert (out / "img" / "teacher.safetensors").is_file()
    summary = json.loads((out / "img" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"][0]["accuracy"] <= 1.0
    (data / "a" / "bad.png").write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["train", *common, "--set", f"data.root={data}", "--name", "bad"])
    assert result.exit_code == 2, result.output
    assert "bad.png" in result.output and not (out / "bad").exists()


FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    blob=st.binary(max_size=400),
    suffix=st.sampled_from([".png", ".jpg", ".webp", ".bmp"]),
    keep=st.booleans(),
)
def test_random_bytes_as_images_raise_only_data_error(blob: bytes, suffix: str, keep: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "données"
        for c in ("a", "b"):
            _img(root / c / "ok0.png", 6, 6)
            _img(root / c / "ok1.png", 6, 6, seed=1)
        (root / "a" / f"x{suffix}").write_bytes(blob)
        if keep:  # a valid image's header with random bytes after it
            header = (root / "b" / "ok0.png").read_bytes()[:40]
            (root / "b" / f"y{suffix}").write_bytes(header + blob)
        for policy in ("error", "skip"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    b = load_dataset("imagefolder", root, options={"on_bad_sample": policy, "image_size": 6})
            except DataError:
                continue
            for split in (b.train, b.val, b.test):
                for i in range(len(split)):
                    assert torch.isfinite(split[i]["inputs"]).all()


@FAST
@given(
    text=st.text(max_size=300),
    suffix=st.sampled_from([".csv", ".jsonl"]),
    names=st.one_of(st.none(), st.text(max_size=40)),
)
def test_random_manifests_raise_only_data_error(text: str, suffix: str, names: str | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _img(root / "a.png", 6, 6)
        _img(root / "b.png", 6, 6, seed=1)
        header = "path,label\n" if suffix == ".csv" else ""
        good = "a.png,x\nb.png,y\n" if suffix == ".csv" else '{"path": "a.png", "label": 0}\n'
        (root / f"m{suffix}").write_text(header + good + text, encoding="utf-8")
        if names is not None:
            (root / "class_names.json").write_text(names, encoding="utf-8")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                b = load_dataset("manifest", root / f"m{suffix}", val_fraction=0.0)
        except DataError:
            return
        assert len(b.train) >= 1 and b.train.labels.max() < len(b.class_names)
