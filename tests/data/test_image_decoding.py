"""What real image folders hold: sideways phone photos, 16-bit scans, GIFs, mislabelled and system files.

Every reader decodes through one function (`distil.data.imagefolder._decode`), so these tests read
folders; tests/data/test_shards.py checks that shards decode alike.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distil.data import DataBundle, load_dataset
from distil.data.imagefolder import ImageFolderSplit
from distil.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:.*test split:UserWarning")


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _fill(root: Path, classes: tuple[str, ...], hw: tuple[int, int], n: int = 3) -> None:
    """`n` random 8-bit grayscale PNGs of size `hw` per class."""
    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(n):
            _png(root / name / f"{i}.png", rng.integers(0, 256, hw, dtype=np.uint8))


def _load(root: Path, **options: object) -> DataBundle:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset("imagefolder", root, val_fraction=0.0, options=dict(options))


def _raw(bundle: DataBundle, path: Path) -> torch.Tensor:
    """The [0, 1] pixels of the sample read from `path`, before normalization: (C, H, W)."""
    for split in (bundle.train, bundle.val, bundle.test):
        assert isinstance(split, ImageFolderSplit)
        if str(path) in split.paths:
            i = split.paths.index(str(path))
            return split.raw(i, i + 1)[0]
    raise AssertionError(f"{path} is in no split")


def _sideways_jpeg(path: Path) -> np.ndarray:
    """A 16x32 (HxW) JPEG whose left 8 columns are white, tagged EXIF orientation 6 (turn 90° clockwise).

    Returns the upright pixels (32x16: the top 8 rows white) a viewer shows.
    """
    stored = np.zeros((16, 32), np.uint8)
    stored[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, format="JPEG", quality=100, exif=exif)
    return np.rot90(stored, k=-1).copy()


def test_an_exif_orientation_6_jpeg_is_read_upright(tmp_path: Path) -> None:
    _fill(tmp_path, ("a", "b"), (32, 16))  # upright size of the photo: no resize needed
    upright = _sideways_jpeg(tmp_path / "a" / "photo.jpg")
    b = _load(tmp_path)
    assert b.input_shape == (1, 32, 16)  # the photo's size is counted upright, not as stored
    got = _raw(b, tmp_path / "a" / "photo.jpg")[0]
    torch.testing.assert_close(got, torch.from_numpy(upright).float() / 255, atol=0.05, rtol=0)
    assert b.describe()["extra"]["exif_rotated"].startswith("1 image(s) turned upright")  # type: ignore[index]


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    for i in range(3):
        _png(tmp_path / "a" / f"ramp{i}.png", ramp)
        _png(tmp_path / "b" / f"grey16_{i}.png", np.full((32, 32), 32896, np.uint16))  # 128 * 257
    _png(tmp_path / "b" / "grey8.png", np.full((32, 32), 128, np.uint8))
    assert Image.open(tmp_path / "a" / "ramp0.png").mode == "I;16"
    b = _load(tmp_path)
    x = _raw(b, tmp_path / "a" / "ramp0.png")
    assert (x >= 1.0).float().mean() < 0.01  # clipping made 99.6% of it white
    torch.testing.assert_close(
        x.flatten(), torch.from_numpy(ramp).flatten().float() / 65535, atol=1 / 255, rtol=0
    )
    grey16, grey8 = _raw(b, tmp_path / "b" / "grey16_0.png"), _raw(b, tmp_path / "b" / "grey8.png")
    assert (grey16 - grey8).abs().max() <= 1 / 255 + 1e-6
    assert b.describe()["extra"]["high_bit_depth"].startswith("6 16-bit")  # type: ignore[index]


def test_32_bit_integer_and_float_images_use_their_range(tmp_path: Path) -> None:
    _fill(tmp_path, ("a", "b"), (8, 8))
    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(tmp_path / "a" / "half.tiff")
    wide = np.linspace(-1e6, 1e6, 64).astype(np.int32).reshape(8, 8)
    Image.fromarray(wide, "I").save(tmp_path / "b" / "wide.tiff")
    b = _load(tmp_path)
    torch.testing.assert_close(_raw(b, tmp_path / "a" / "half.tiff"), torch.full((1, 8, 8), 128 / 255))
    x = _raw(b, tmp_path / "b" / "wide.tiff")
    assert x.min() == 0.0 and x.max() == 1.0 and len(x.unique()) > 32


def test_animated_gif_and_png_are_read_as_their_first_frame_and_counted(tmp_path: Path) -> None:
    _fill(tmp_path, ("a", "b"), (8, 8))
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "a" / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "b" / "anim.png", save_all=True, append_images=frames[1:])  # APNG
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "b" / "still.gif")
    still = Image.fromarray(np.full((8, 8), 60, np.uint8))
    still.save(tmp_path / "a" / "phone.jpg", format="MPO", save_all=True, append_images=frames[1:])
    b = _load(tmp_path, channels="L")
    assert len(b.train) + len(b.test) == 10
    assert (
        abs(float(_raw(b, tmp_path / "a" / "phone.jpg").mean()) - 60 / 255) < 0.02
    )  # MPO: photo + preview  # the .gif files are read, not dropped
    for name in ("a/anim.gif", "b/anim.png"):
        torch.testing.assert_close(_raw(b, tmp_path / name), torch.full((1, 8, 8), 40 / 255))
    assert b.describe()["extra"]["animated"] == "2 animated image(s): first frame used"  # type: ignore[index]


def _heic_header() -> bytes:
    """The start of an ISO-BMFF HEIC file (what an iPhone writes); Pillow needs a plugin to read it."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


def test_files_are_images_by_content_and_the_rest_is_reported_by_reason(tmp_path: Path) -> None:
    _fill(tmp_path, ("a", "b"), (8, 8))
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(tmp_path / "a" / "IMG_1.HEIC", format="JPEG")
    Image.fromarray(np.full((8, 8), 99, np.uint8)).save(tmp_path / "b" / "no_suffix", format="PNG")
    for hidden in (".DS_Store", "._IMG_1.HEIC", "Thumbs.db"):  # macOS / Windows litter: ignored
        (tmp_path / "a" / hidden).write_bytes(b"\x00\x05\x16\x07 not an image")
    b = _load(tmp_path)
    assert len(b.train) + len(b.test) == 8 and "skipped" not in b.describe().get("extra", {})  # type: ignore[operator]
    assert abs(float(_raw(b, tmp_path / "a" / "IMG_1.HEIC").mean()) - 77 / 255) < 0.01

    (tmp_path / "a" / "IMG_2.HEIC").write_bytes(_heic_header())
    with pytest.raises(
        DataError,
        match=r"IMG_2\.HEIC is not a readable image: unsupported format HEIC: pip install pillow-heif",
    ):
        _load(tmp_path)
    (tmp_path / "b" / "notes.txt").write_text("shot on a Tuesday")
    (tmp_path / "b" / "broken.png").write_bytes((tmp_path / "b" / "0.png").read_bytes()[:60])
    with pytest.warns(UserWarning) as caught:
        b = load_dataset("imagefolder", tmp_path, val_fraction=0.0, options={"on_bad_sample": "skip"})
    skipped = b.describe()["extra"]["skipped"]  # type: ignore[index]
    assert skipped.startswith("3 unreadable file(s) left out: ")
    assert "1 not an image Pillow can read (format TXT?), e.g. [" in skipped and "notes.txt" in skipped
    assert "1 unsupported format HEIC: pip install pillow-heif, e.g. [" in skipped and "IMG_2.HEIC" in skipped
    assert "1 corrupt or truncated image, e.g. [" in skipped and "broken.png" in skipped
    assert any(skipped in str(w.message) for w in caught)
    assert len(b.train) + len(b.test) == 8


def test_an_empty_class_folder_is_refused_or_dropped_with_a_warning(tmp_path: Path) -> None:
    _fill(tmp_path, ("a", "c"), (8, 8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\x00")  # hidden files do not count as images
    with pytest.raises(DataError, match=r"class folder .*/b holds no image files.*on_bad_sample=skip"):
        _load(tmp_path)
    with pytest.warns(
        UserWarning, match=r"class folder .*/b holds no image files: left out.*class is dropped"
    ):
        b = load_dataset("imagefolder", tmp_path, val_fraction=0.0, options={"on_bad_sample": "skip"})
    assert b.class_names == ["a", "c"]  # indices follow the recorded names: c is class 1
    c_paths = [p for s in (b.train, b.test) for p in s.paths]  # type: ignore[attr-defined]
    labels = torch.cat([b.train.labels, b.test.labels])
    assert all(int(y) == (1 if "/c/" in p else 0) for p, y in zip(c_paths, labels, strict=True))
    assert b.describe()["extra"]["empty_classes"] == "left out (empty folders): ['b']"  # type: ignore[index]


def test_given_splits_drop_the_test_images_of_a_class_dropped_from_train(tmp_path: Path) -> None:
    _fill(tmp_path / "train", ("a", "c"), (8, 8))
    (tmp_path / "train" / "b").mkdir()
    _fill(tmp_path / "test", ("a", "b", "c"), (8, 8), n=2)
    with pytest.warns(UserWarning, match=r"2 image\(s\) of dropped class\(es\) \['b'\] left out"):
        b = load_dataset("imagefolder", tmp_path, val_fraction=0.0, options={"on_bad_sample": "skip"})
    assert b.class_names == ["a", "c"] and b.test.labels.tolist() == [0, 0, 1, 1]
