"""WebDataset shards (`distil data shards`, dataset `shards`) on real PNG folders written here."""

from __future__ import annotations

import json
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
from distil.data import DatasetLoader, EpochSampler, load_dataset
from distil.data.shards import ShardSplit, write_shards
from distil.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore:.*test split:UserWarning")


def _folder(root: Path, counts: dict[str, int], size: int = 6, mode: str = "L", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")
    return root


def _same(a: object, b: object) -> None:
    from distil.data import DataBundle

    assert isinstance(a, DataBundle) and isinstance(b, DataBundle)
    assert a.class_names == b.class_names and a.mean == b.mean and a.std == b.std
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sa.labels, sb.labels)
        assert torch.equal(sa.head(len(sa)), sb.head(len(sb)))


def test_folder_to_shards_reads_back_the_same_samples_labels_and_splits(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src" / "train", {"cat": 9, "dog": 7, "eel": 5})
    _folder(tmp_path / "src" / "test", {"cat": 2, "dog": 3, "eel": 2}, seed=1)
    index = write_shards(tmp_path / "src", tmp_path / "sh", shard_size=4)
    names = sorted(p.name for p in (tmp_path / "sh").iterdir())
    assert names == [
        "shards.json",
        *[f"test-00000{i}.tar" for i in range(2)],
        *[f"train-00000{i}.tar" for i in range(6)],
    ]
    assert json.loads(index.read_text())["class_names"] == ["cat", "dog", "eel"]
    for val_fraction in (0.0, 0.25):  # the recorded train stats, and a pass at load after a carve-out
        folder = load_dataset("imagefolder", src.parent, val_fraction=val_fraction, seed=3)
        shards = load_dataset("shards", tmp_path / "sh", val_fraction=val_fraction, seed=3)
        assert isinstance(shards.train, ShardSplit)
        _same(folder, shards)
    # Options apply at decode time, as for the folder; a carved test split is carved alike.
    opts = {"image_size": 4, "channels": "RGB"}
    _same(load_dataset("imagefolder", src.parent, options=opts), load_dataset("shards", index, options=opts))
    assert load_dataset("shards", index, options=opts).describe()["options"]["channels"] == "RGB"
    flat = _folder(tmp_path / "flat", {"a": 6, "b": 6}, mode="RGB")
    write_shards(flat, tmp_path / "flat-sh", shard_size=5)
    _same(load_dataset("imagefolder", flat), load_dataset("shards", tmp_path / "flat-sh"))


def test_the_tars_are_webdataset_shards(tmp_path: Path) -> None:
    import webdataset as wds

    src = _folder(tmp_path / "src", {"a": 3, "b": 4})
    write_shards(src, tmp_path / "sh", shard_size=3)
    urls = sorted(str(p) for p in (tmp_path / "sh").glob("train-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(7)]
    assert [int(s["cls"]) for s in samples] == [0, 0, 0, 1, 1, 1, 1]
    assert samples[3]["png"] == (src / "b" / "0.png").read_bytes()


def test_each_rank_reads_its_own_shards_and_together_all_of_them(tmp_path: Path) -> None:
    write_shards(_folder(tmp_path / "src", {"a": 11, "b": 12}), tmp_path / "sh", shard_size=4)
    train = load_dataset("shards", tmp_path / "sh", val_fraction=0.0).train
    assert (
        isinstance(train, ShardSplit) and len(train.shard_groups) == 6
    )  # 23 images in shards of 4, less the carved test
    files: list[set[str]] = []
    ids: list[set[int]] = []
    batches = []
    for rank in range(2):
        loader = DatasetLoader(train, 3, shuffle=True, seed=1, num_shards=2, shard_index=rank, num_workers=1)
        loader.set_epoch(2)
        seen = [int(i) for b in loader for i in b["index"]]
        batches.append(len(loader))
        files.append({train.paths[i][0] for i in seen})
        ids.append(set(seen))
    assert not files[0] & files[1]
    assert ids[0] | ids[1] == set(range(len(train)))
    assert batches[0] == batches[1]  # the rank with fewer samples wraps around its own shards
    # One process: the plain permutation of the whole split, as for any split.
    one = EpochSampler(len(train), 3, shuffle=True, seed=1, groups=train.shard_groups)
    plain = EpochSampler(len(train), 3, shuffle=True, seed=1)
    assert torch.equal(one.indices(), plain.indices())
    with pytest.raises(ConfigError, match="shard-size"):
        EpochSampler(len(train), 3, num_shards=7, groups=train.shard_groups)


def test_damaged_or_missing_shards_and_indexes_are_clear_errors(tmp_path: Path) -> None:
    write_shards(_folder(tmp_path / "src", {"a": 4, "b": 4}), tmp_path / "sh", shard_size=3)
    sh = tmp_path / "sh"
    with pytest.raises(DataError, match="already holds shards"):
        write_shards(tmp_path / "src", sh)
    bundle = load_dataset("shards", sh, val_fraction=0.0)
    # A member overwritten in place (same size): reading it names the sample and the shard.
    ref = bundle.train.paths[0]  # type: ignore[attr-defined]
    with open(ref[0], "r+b") as f:
        f.seek(ref[1])
        f.write(b"\0" * 16)
    with pytest.raises(DataError, match=rf"{ref[3]} in shard .*rewrite the shards"):
        bundle.train[0]
    # A truncated shard is found at load.
    tar = sh / "train-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-700])
    with pytest.raises(DataError, match=r"train-000001.tar is .* bytes"):
        load_dataset("shards", sh)
    tar.unlink()
    with pytest.raises(DataError, match="is missing"):
        load_dataset("shards", sh)
    (sh / "shards.json").write_text("{not json")
    with pytest.raises(DataError, match="as JSON"):
        load_dataset("shards", sh)
    (sh / "shards.json").write_text(json.dumps({"format": "distil-shards/1", "splits": 3}))
    with pytest.raises(DataError, match="not a distil shards index"):
        load_dataset("shards", sh)
    (sh / "shards.json").unlink()
    with pytest.raises(DataError, match=r"interrupted.*distil data shards"):
        load_dataset("shards", sh)
    with pytest.raises(DataError, match="needs the folder"):
        load_dataset("shards")


def test_a_bad_image_writes_nothing_or_is_skipped_and_counted(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", {"a": 4, "b": 4})
    (src / "a" / "bad.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"bad\.png"):
        write_shards(src, tmp_path / "sh")
    assert not (tmp_path / "sh").exists()
    write_shards(src, tmp_path / "sh", on_bad_sample="skip")
    bundle = load_dataset("shards", tmp_path / "sh", val_fraction=0.0)
    assert len(bundle.train) + len(bundle.test) == 8
    assert "1 unreadable" in bundle.describe()["extra"]["skipped"]  # type: ignore[index]


def test_cli_writes_shards_and_trains_on_them_bad_input_exits_2(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", {"a": 8, "b": 8, "c": 8}, size=8)
    result = CliRunner().invoke(app, ["data", "shards", str(src), str(tmp_path / "sh"), "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    assert "data.name=shards" in result.output
    args = ["train", "--quiet", "--no-latency", "--out", str(tmp_path / "runs"), "--name", "s"]
    for kv in ("data.name=shards", f"data.root={tmp_path / 'sh'}", "teacher_train.epochs=1"):
        args += ["--set", kv]
    args += ["--set", "teacher.model=tiny-cnn", "--set", "teacher_train.num_workers=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "runs" / "s" / "teacher.json").read_text())
    assert sidecar["data"]["name"] == "shards" and sidecar["data"]["options"]["channels"] == "L"
    result = CliRunner().invoke(app, ["data", "shards", str(tmp_path / "nope"), str(tmp_path / "x")])
    assert result.exit_code == 2 and "nope" in result.output
    assert not (tmp_path / "x").exists()


def _awkward_folder(root: Path) -> Path:
    """Six 32x16 (HxW) images per class plus a sideways phone photo named .HEIC, a 16-bit scan without a
    suffix, an animated GIF, a text file and macOS litter."""
    _folder(root, {"a": 3, "b": 3}, size=16)
    for name in ("a", "b"):  # the folder's images are 32x16 (HxW), the photo's upright size
        for i in range(3):
            Image.open(root / name / f"{i}.png").resize((16, 32)).save(root / name / f"{i}.png")
    stored = np.zeros((16, 32), np.uint8)
    stored[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "a" / "IMG_1.HEIC", format="JPEG", quality=100, exif=exif)
    ramp = np.linspace(0, 65535, 32 * 16).astype(np.uint16).reshape(32, 16)
    Image.fromarray(ramp).save(root / "b" / "scan", format="PNG")
    frames = [Image.fromarray(np.full((32, 16), v, np.uint8)) for v in (40, 200)]
    frames[0].save(root / "b" / "anim.gif", save_all=True, append_images=frames[1:])
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x00")
    return root


def test_shards_decode_awkward_images_as_the_folder_does_and_keep_its_summary(tmp_path: Path) -> None:
    src = _awkward_folder(tmp_path / "src")
    with pytest.warns(UserWarning, match=r"1 not an image Pillow can read \(format TXT\?\)"):
        index = write_shards(src, tmp_path / "sh", shard_size=4, on_bad_sample="skip")
    members = [m for s in json.loads(index.read_text())["splits"]["train"] for m in s["members"]]
    # Named by content: the .HEIC photo is a .jpg member, the suffix-less scan a .png.
    assert sorted(m.rsplit(".", 1)[1] for m in members) == [
        "gif",
        "jpg",
        "png",
        "png",
        "png",
        "png",
        "png",
        "png",
        "png",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = load_dataset("imagefolder", src, val_fraction=0.0, options={"on_bad_sample": "skip"})
        shards = load_dataset("shards", tmp_path / "sh", val_fraction=0.0)
    _same(folder, shards)
    assert shards.input_shape == (3, 32, 16)  # the GIF is a palette image: RGB
    extra = shards.describe()["extra"]
    assert isinstance(extra, dict)
    del extra["test_split"]  # names the folder it was carved from
    assert extra.items() <= folder.describe()["extra"].items()  # type: ignore[union-attr]
    assert extra["exif_rotated"].startswith("1 image(s) turned upright")  # type: ignore[index]
    assert extra["high_bit_depth"].startswith("1 16-bit")  # type: ignore[index]
    assert extra["animated"] == "1 animated image(s): first frame used"  # type: ignore[index]
    assert extra["skipped"].startswith("1 unreadable file(s) left out: 1 not an image")  # type: ignore[index]


def test_cli_shards_prints_what_the_decode_check_found(tmp_path: Path) -> None:
    src = _awkward_folder(tmp_path / "src")
    cmd = ["data", "shards", str(src), str(tmp_path / "sh")]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 2, result.output
    assert "notes.txt is not a readable image: not an image Pillow can read (format TXT?)" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "sh").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(app, [*cmd, "--on-bad-sample", "skip"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "skipped: 1 unreadable file(s) left out: 1 not an image Pillow can read (format TXT?)" in out
    assert "exif_rotated: 1 image(s) turned upright by their EXIF orientation" in out
    assert "high_bit_depth: 1 16-bit/32-bit/float image(s) scaled to 8 bits" in out
    assert "animated: 1 animated image(s): first frame used" in out


FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    counts=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    shard_size=st.integers(1, 7),
    mode=st.sampled_from(["L", "RGB"]),
    val_fraction=st.sampled_from([0.0, 0.2]),
    world=st.integers(1, 3),
)
def test_random_folders_round_trip_and_ranks_partition_the_shards(
    counts: list[int], shard_size: int, mode: str, val_fraction: float, world: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = _folder(Path(tmp) / "src", {f"c{i}": n for i, n in enumerate(counts)}, size=5, mode=mode)
        if sum(counts) < 5:
            return  # too few images to carve a test split: the folder refuses it too (tested elsewhere)
        write_shards(src, Path(tmp) / "sh", shard_size=shard_size)
        folder = load_dataset("imagefolder", src, val_fraction=val_fraction)
        shards = load_dataset("shards", Path(tmp) / "sh", val_fraction=val_fraction)
        _same(folder, shards)
        train = shards.train
        assert isinstance(train, ShardSplit)
        groups = train.shard_groups
        if len(groups) < world:
            return
        seen = [
            set(
                EpochSampler(len(train), 2, num_shards=world, shard_index=r, groups=groups).indices().tolist()
            )
            for r in range(world)
        ]
        assert set().union(*seen) == set(range(len(train)))
        owners = [{train.paths[i][0] for i in s} for s in seen]
        assert all(not owners[a] & owners[b] for a in range(world) for b in range(a + 1, world))


@FAST
@given(data=st.data())
def test_random_index_damage_raises_only_data_error(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = _folder(Path(tmp) / "src", {"a": 3, "b": 3}, size=4)
        write_shards(src, Path(tmp) / "sh", shard_size=2)
        path = Path(tmp) / "sh" / "shards.json"
        index = json.loads(path.read_text())
        shard = index["splits"]["train"][data.draw(st.integers(0, len(index["splits"]["train"]) - 1))]
        key = data.draw(st.sampled_from(sorted(shard)))
        shard[key] = data.draw(
            st.one_of(
                st.none(),
                st.integers(-5, 10**6),
                st.text(max_size=5),
                st.lists(st.integers(-3, 3), max_size=4),
            )
        )
        path.write_text(json.dumps(index))
        try:
            bundle = load_dataset("shards", Path(tmp) / "sh", val_fraction=0.0)
            for split in (bundle.train, bundle.test):
                split.head(len(split))
        except DataError:
            pass


RANK_SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
from distil.config import TrainConfig
from distil.data import load_dataset
from distil.train.distributed import close_process_group
from distil.train.engine import make_accelerator, train_loader

acc = make_accelerator("cpu")
data = load_dataset("shards", sys.argv[1], val_fraction=0.0)
loader = train_loader(data, TrainConfig(batch_size=4, loader={"num_workers": 1}, augment="none"), acc)
loader.set_epoch(1)
ids = [int(i) for b in loader for i in b["index"]]
files = sorted({data.train.paths[i][0] for i in ids})
with open(f"{sys.argv[2]}/rank{acc.process_index}.json", "w") as f:
    json.dump({"ids": ids, "files": files, "batches": len(loader), "world": acc.num_processes}, f)
close_process_group()
"""


@pytest.mark.slow
def test_torchrun_ranks_read_disjoint_shards_covering_the_train_split(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    write_shards(_folder(tmp_path / "src", {"a": 20, "b": 20}), tmp_path / "sh", shard_size=5)
    (tmp_path / "ranks.py").write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launcher, str(tmp_path / "ranks.py"), str(tmp_path / "sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert not set(ranks[0]["files"]) & set(ranks[1]["files"])
    train = load_dataset("shards", tmp_path / "sh", val_fraction=0.0).train
    assert isinstance(train, ShardSplit)
    assert set(ranks[0]["files"]) | set(ranks[1]["files"]) == {ref[0] for ref in train.paths}
    for r in ranks:  # each rank's samples come from its own shards (drop_last cuts the longer share)
        assert all(train.paths[i][0] in r["files"] for i in r["ids"])
    assert ranks[0]["batches"] == ranks[1]["batches"] > 0
