"""Bad image data for ``task=vision``: each case fails with one line naming the file (or
``task.data.root``) and what was expected, writes no dataset cache, and changes nothing on disk."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_png

from tasks.vision.data import VisionDataModule
from tests.app.test_bad_inputs import expect_error

PNG = encode_png(torch.zeros(1, 8, 8, dtype=torch.uint8)).numpy().tobytes()


def _layout(files: dict[str, bytes]) -> dict[str, bytes]:
    """Two classes in train/ and test/ (three 8x8 PNGs each), plus ``files``."""
    out = {
        f"{split}/{c}/{i}.png": PNG for split in ("train", "test") for c in ("cat", "dog") for i in range(3)
    }
    return out | files


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def text_root(d: Path) -> Path:
    (d / "cifar10.txt").write_text("airplane\nautomobile\n")
    return d / "cifar10.txt"


def truncated_archive(d: Path) -> Path:
    path = _archive(d / "cifar10.tar.gz", _layout({}))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def corrupt_gzip(d: Path) -> Path:
    (d / "cifar10.tar.gz").write_bytes(b"\x1f\x8b\x08" + bytes(range(200)))
    return d / "cifar10.tar.gz"


def text_as_image(d: Path) -> Path:
    return _folder(d / "images", _layout({"train/cat/notes.jpg": b"taken on a sunny day"}))


def text_as_image_in_archive(d: Path) -> Path:
    return _archive(d / "images.tar.gz", _layout({"test/dog/readme.png": b"not a picture"}))


def no_test_folder(d: Path) -> Path:
    return _folder(d / "images", {f"train/cat/{i}.png": PNG for i in range(3)})


def unknown_test_class(d: Path) -> Path:
    return _folder(d / "images", _layout({"test/bird/0.png": PNG}))


def mixed_sizes(d: Path) -> Path:
    big = encode_png(torch.zeros(1, 12, 12, dtype=torch.uint8)).numpy().tobytes()
    return _folder(d / "images", _layout({"train/cat/big.png": big}))


CASES = [
    pytest.param(
        text_root, ValueError, ["task.data.root=", "cifar10.txt is not a readable .tar"], id="text-file-root"
    ),
    pytest.param(
        truncated_archive,
        ValueError,
        ["cifar10.tar.gz is not a readable", "fetch it again"],
        id="truncated-archive",
    ),
    pytest.param(
        corrupt_gzip,
        ValueError,
        ["cifar10.tar.gz is not a readable .tar / .tar.gz archive"],
        id="corrupt-gzip",
    ),
    pytest.param(
        text_as_image,
        ValueError,
        ["train/cat/notes.jpg: not a readable image", "JPEG, PNG"],
        id="text-as-jpg",
    ),
    pytest.param(
        text_as_image_in_archive,
        ValueError,
        ["images.tar.gz:test/dog/readme.png: not a readable image"],
        id="text-as-png-in-archive",
    ),
    pytest.param(no_test_folder, FileNotFoundError, ["images has no test/ folder"], id="no-test-folder"),
    pytest.param(
        unknown_test_class,
        ValueError,
        ["class folder test/bird does not exist under train/"],
        id="class-only-in-test",
    ),
    pytest.param(
        mixed_sizes,
        ValueError,
        ["images in train/ have different shapes", "task.data.image_size"],
        id="mixed-sizes",
    ),
]


@pytest.mark.parametrize(("make", "error", "fragments"), CASES)
def test_bad_image_data_is_named(tmp_path: Path, make, error, fragments):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    root = make(data)
    dm = VisionDataModule(root=str(root), batch_size=2, cache_dir=str(cache))
    expect_error(dm.setup, error, *fragments, watch=[data, cache])
    assert not cache.exists(), "a failed decode wrote a cache"


def test_an_unreachable_hub_dataset_is_one_line(tmp_path: Path, monkeypatch):
    """Offline (``HF_HUB_OFFLINE=1``) a hub dataset missing from the cache fails in one line that names the
    hub id, says what loading it needs, and gives the local alternative; train.py prints it without a
    traceback (one of the project's own errors); no dataset cache is written."""
    from tasks.common import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    name = "mha-suite-tests/no-such-dataset"  # never in any cache
    cache = tmp_path / "cache"
    dm = VisionDataModule(hub=name, batch_size=2, cache_dir=str(cache))
    expect_error(
        dm.setup,
        ValueError,
        f"task.data.hub={name} could not be loaded (HF_HUB_OFFLINE and HF_DATASETS_OFFLINE set;",
        "needs network access",
        f"a datasets cache that already holds {name}",
        "paths.data_dir=/path/to/data",
        "task.data.root=",
        watch=[tmp_path],
    )
    with pytest.raises(ValueError) as info:
        dm.setup()
    assert cli.is_user_error(info.value), "train.py would show a traceback"
    assert not cache.exists()
