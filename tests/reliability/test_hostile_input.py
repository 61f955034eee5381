"""Property-based tests: every reader and the recipe parser, fed truncated, corrupt, absurd or hostile
input, either succeeds with valid data or raises DataError/ConfigError: never another exception, and
never an allocation sized by a header rather than by the bytes present."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from distil.config import apply_overrides, load_recipe, load_recipe_dict, parse_recipe
from distil.data import load_dataset
from distil.data.cifar import load_batch
from distil.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_idx_dir
from distil.errors import ConfigError, DataError
from tests.reliability import user_data

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEMORY_LIMIT = 64 * 2**20  # far below what any absurd header here declares (>= 4 GiB)
UNICODE_DIR = "données 数据 ü"


@contextmanager
def _workdir() -> Iterator[Path]:
    # A fresh directory per example (hypothesis re-runs the body), named with non-ASCII characters.
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / UNICODE_DIR
        p.mkdir()
        yield p


def _only_user_errors(fn: Callable[[], Any], *allowed: type[Exception]) -> Any:
    """Run `fn`; return its result, or None when it raised one of `allowed`; with bounded memory."""
    tracemalloc.start()
    try:
        return fn()
    except allowed:
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"allocated {peak / 2**20:.0f} MiB"


def _idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


# ----------------------------------------------------------------------------------------- IDX


@FAST
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_idx_arbitrary_bytes(data: bytes, gz: bool) -> None:
    with _workdir() as d:
        path = d / ("f.gz" if gz else "f")
        path.write_bytes(gzip.compress(data) if gz else data)
        out = _only_user_errors(lambda: read_idx(path, IMAGES_MAGIC), DataError)
        if out is not None:
            assert out.dtype == np.uint8 and out.ndim == 3


@FAST
@given(
    dims=st.tuples(*[st.integers(0, 2**32 - 1)] * 3),
    payload=st.binary(max_size=200),
    gz=st.booleans(),
    cut=st.integers(0, 40),
)
def test_idx_absurd_dimensions_and_truncation(
    dims: tuple[int, int, int], payload: bytes, gz: bool, cut: int
) -> None:
    raw = _idx_bytes(IMAGES_MAGIC, dims, payload)
    blob = gzip.compress(raw) if gz else raw
    blob = blob[: max(0, len(blob) - cut)]
    with _workdir() as d:
        path = d / ("f.gz" if gz else "f")
        path.write_bytes(blob)
        out = _only_user_errors(lambda: read_idx(path, IMAGES_MAGIC), DataError)
        if out is not None:
            assert out.shape == dims and out.size == len(payload)


@FAST
@given(
    n=st.integers(0, 6),
    side=st.integers(1, 6),
    labels=st.lists(st.integers(0, 255), max_size=8),
    magic=st.sampled_from([LABELS_MAGIC, IMAGES_MAGIC, 0x0000080D, 0xDEADBEEF]),
)
def test_idx_directory_with_mismatched_or_out_of_range_labels(
    n: int, side: int, labels: list[int], magic: int
) -> None:
    with _workdir() as d:
        for prefix in ("train", "t10k"):
            images = _idx_bytes(IMAGES_MAGIC, (n, side, side), bytes(n * side * side))
            (d / f"{prefix}-images-idx3-ubyte").write_bytes(images)
            dims = (len(labels),) if magic == LABELS_MAGIC else (len(labels), 1, 1)
            (d / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(magic, dims[:1], bytes(labels)))
        out = _only_user_errors(lambda: read_idx_dir(d, "mnist"), DataError)
        if out is not None:
            assert out[0].shape == (n, 1, side, side) and len(out[1]) == n == len(labels)
        # Through the registry too: labels >= 10 or an empty train split are DataErrors.
        bundle = _only_user_errors(lambda: load_dataset("mnist", d, val_fraction=0.0), DataError)
        if bundle is not None:
            assert int(bundle.train.y.max()) < 10 and len(bundle.train) > 0


# ----------------------------------------------------------------------------------------- CIFAR

_PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@FAST
@given(obj=_PLAIN, protocol=st.integers(2, 5), cut=st.integers(0, 10))
def test_cifar_batches_of_arbitrary_plain_pickles(obj: Any, protocol: int, cut: int) -> None:
    blob = pickle.dumps(obj, protocol=protocol)
    with _workdir() as d:
        path = d / "data_batch_1"
        path.write_bytes(blob[: max(0, len(blob) - cut)])
        out = _only_user_errors(lambda: load_batch(path), DataError)
        if out is not None:
            assert isinstance(out, dict)


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, ("echo pwned > /tmp/distil-pwned",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(_Exploit()),
        pickle.dumps({"data": _Exploit()}, protocol=2),
        b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"abc",  # BINBYTES8 declaring an exabyte
        b"cos\nsystem\n(S'echo pwned'\ntR.",  # protocol 0 GLOBAL + REDUCE
    ],
    ids=["reduce", "nested-reduce", "huge-length", "protocol-0"],
)
def test_cifar_hostile_pickles_are_refused_without_running_code(payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    assert _only_user_errors(lambda: load_batch(path), DataError) is None
    assert not Path("/tmp/distil-pwned").exists()


@FAST
@given(
    n=st.integers(0, 4),
    width=st.sampled_from([3072, 3071, 10]),
    dtype=st.sampled_from([np.uint8, np.float32, np.int64]),
    labels=st.lists(st.integers(-3, 12), max_size=5),
    names=st.lists(st.text(max_size=3), max_size=11),
)
def test_cifar_directories_with_wrong_shapes_dtypes_and_labels(
    n: int, width: int, dtype: type, labels: list[int], names: list[str]
) -> None:
    with _workdir() as d:
        batch = {"data": np.zeros((n, width), dtype=dtype), "labels": labels}
        for i in range(1, 6):
            (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
        (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
        (d / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
        bundle = _only_user_errors(lambda: load_dataset("cifar10", d, val_fraction=0.0), DataError)
        if bundle is not None:
            assert bundle.train.x.shape[1:] == (3, 32, 32)
            assert int(bundle.train.y.min()) >= 0 and int(bundle.train.y.max()) < len(names)


# ----------------------------------------------------------------------------------------- NPZ

_ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4),
    elements=None,
)


@FAST
@given(x=_ARRAYS, y=_ARRAYS, with_test=st.booleans())
def test_npz_arbitrary_arrays(x: np.ndarray, y: np.ndarray, with_test: bool) -> None:
    with _workdir() as d:
        path = d / "d.npz"
        arrays = {"x": x, "y": y, **({"x_test": x, "y_test": y} if with_test else {})}
        np.savez(path, **arrays)  # type: ignore[arg-type]
        bundle = _only_user_errors(lambda: load_dataset("npz", path, val_fraction=0.0), DataError)
        if bundle is not None:
            # Images (N, C, H, W) or feature vectors (N, F): never a sample without values.
            assert bundle.train.x.dim() in (2, 4) and bundle.train.x[0].numel() > 0
            assert torch.isfinite(bundle.train.x).all()
            assert len(bundle.train) > 0
            if bundle.task == "classification":
                assert int(bundle.train.y.max()) < bundle.num_classes
            else:  # float targets read as another task (regression, multilabel: distil.data.targets)
                assert torch.isfinite(bundle.train.y.float()).all()


@FAST
@given(cut=st.integers(1, 400), flip=st.integers(0, 10_000), shape=st.integers(0, 2**40))
def test_npz_truncated_corrupt_or_absurd_headers(cut: int, flip: int, shape: int) -> None:
    buf = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(np.zeros(3, dtype=np.float32))
    header["shape"] = (shape, 2, 2)
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(bytes(48))
    with _workdir() as d:
        good, bad = d / "good.npz", d / "bad.npz"
        np.savez(good, x=np.ones((4, 2, 2), np.float32), y=np.arange(4))
        blob = bytearray(good.read_bytes())
        blob[flip % len(blob)] ^= 0x5A
        bad.write_bytes(bytes(blob[: max(0, len(blob) - cut)]))
        _only_user_errors(lambda: load_dataset("npz", bad, val_fraction=0.0), DataError)
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("x.npy", buf.getvalue())
            z.writestr("y.npy", buf.getvalue())
        bundle = _only_user_errors(lambda: load_dataset("npz", bad, val_fraction=0.0), DataError)
        assert bundle is None or shape == 3  # only the honest header (3 * 4 floats present) loads


def test_npz_nan_pixels_and_empty_data_are_data_errors(tmp_path: Path) -> None:
    x = np.zeros((4, 3, 3), np.float32)
    x[2, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(4))
    with pytest.raises(DataError, match="1 image\\(s\\) contain NaN or Inf"):
        load_dataset("npz", tmp_path / "nan.npz")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3, 3)), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="empty"):
        load_dataset("npz", tmp_path / "empty.npz")


# ----------------------------------------------------------------------------------- user reader


@FAST
@given(
    x=_ARRAYS,
    y=_ARRAYS,
    names=st.none() | st.lists(st.text(max_size=3), max_size=4),
    drop=st.sampled_from([None, "x_train", "y_test"]),
    as_tensor=st.booleans(),
)
def test_user_reader_dicts(
    x: np.ndarray, y: np.ndarray, names: Any, drop: str | None, as_tensor: bool
) -> None:
    def conv(a: np.ndarray) -> Any:
        return torch.from_numpy(a.copy()) if as_tensor and a.dtype != np.complex64 else a

    payload = {"x_train": conv(x), "y_train": conv(y), "x_test": conv(x), "y_test": conv(y)}
    if names is not None:
        payload["class_names"] = names
    if drop:
        del payload[drop]
    user_data.PAYLOAD = payload
    bundle = _only_user_errors(
        lambda: load_dataset("tests.reliability.user_data:load", val_fraction=0.0), DataError, ConfigError
    )
    if bundle is not None:
        assert len(bundle.train) > 0 and int(bundle.train.y.max()) < bundle.num_classes


@pytest.mark.parametrize("payload", [None, 3, "x", [1, 2], {"x_train": None}])
def test_user_reader_returning_the_wrong_type(payload: Any) -> None:
    user_data.PAYLOAD = payload
    with pytest.raises(DataError):
        load_dataset("tests.reliability.user_data:load")


# ----------------------------------------------------------------------------------------- recipes

_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=6)
)
_KEYS = st.sampled_from(
    ["name", "data", "teacher", "student", "teacher_train", "student_train", "kd", "device", "lr",
     "epochs", "batch_size", "model", "kwargs", "temperature", "checkpoint_every", "seed", "limit", "x"]
)  # fmt: skip
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(raw=st.dictionaries(_KEYS, _TREES, max_size=6))
def test_recipe_parser_accepts_valid_trees_and_rejects_the_rest_with_config_errors(raw: dict) -> None:
    recipe = _only_user_errors(lambda: parse_recipe(raw), ConfigError)
    if recipe is not None:
        assert recipe.student_train.epochs > 0 and recipe.student_train.lr > 0


@FAST
@given(text=st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin1")))
def test_recipe_files_with_arbitrary_text(text: str) -> None:
    with _workdir() as d:
        path = d / "récipe.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _only_user_errors(lambda: load_recipe(path), ConfigError)


@FAST
@given(overrides=st.lists(st.text(max_size=30), max_size=3))
def test_arbitrary_overrides(overrides: list[str]) -> None:
    raw = _only_user_errors(lambda: apply_overrides({"kd": {"temperature": 2}}, overrides), ConfigError)
    if raw is not None:
        _only_user_errors(lambda: parse_recipe(raw), ConfigError)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("student_train:\n  lr: fast\n", r"student_train\.lr: Input should be a valid number"),
        ("student_train:\n  epochs: -1\n", r"student_train\.epochs: Input should be greater than 0"),
        ("kd:\n  temprature: 2\n", r"Did you mean 'temperature'"),
        ("- a\n- b\n", "must be a mapping"),
        ("a: [1, 2\n", "not valid YAML"),
        ("student_train:\n  checkpoint_every: 0\n", r"checkpoint_every: Input should be greater than 0"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),  # safe_load: no code
    ],
)
def test_bad_recipes_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_recipe(path)


def test_recipe_reader_never_builds_python_objects(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.dump({"name": "x"}) + "extra: !!python/name:os.system\n")
    with pytest.raises(ConfigError):
        load_recipe_dict(path)


@pytest.mark.parametrize(
    ("x", "message"), [(np.zeros((1, 2), np.uint8), "1 sample"), (np.zeros((3, 0), np.uint8), "no values")]
)
def test_npz_with_a_label_count_other_than_its_samples_or_empty_samples_is_a_data_error(
    tmp_path: Path, x: np.ndarray, message: str
) -> None:
    # Found by test_npz_arbitrary_arrays: x (1, 0) with 3 labels was accepted and carved by label index.
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=message):
        load_dataset("npz", path, val_fraction=0.0)
