"""The vision data: embedded MNIST-5k split, ImageFolder folders and archives, the cache, error paths."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from tasks.vision.data import VisionDataModule, load_mnist5k, stratified_split


def test_mnist5k_is_the_real_digits():
    images, labels = load_mnist5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [500] * 10
    assert images.float().mean().item() == pytest.approx(33.3, abs=3)  # MNIST's mean pixel (~0.13 * 255)
    assert images.amax().item() == 255


def test_embedded_split_sizes_are_stratified_and_disjoint():
    dm = VisionDataModule(seed=0)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    for split, per_class in (("train", 400), ("val", 50), ("test", 50)):
        assert torch.bincount(dm.splits[split].labels).tolist() == [per_class] * 10
    assert dm.num_classes == 10 and dm.image_shape == (1, 28, 28)
    flat = {k: {bytes(img.numpy()) for img in v.images} for k, v in dm.splits.items()}
    assert not (flat["train"] & flat["test"]) and not (flat["val"] & flat["test"])
    assert dm.splits["train"].labels[:20].unique().numel() > 3, (
        "training rows must be shuffled across classes"
    )
    other = VisionDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.splits["test"].images, dm.splits["test"].images)


def test_loader_batches_are_uint8_images_and_labels():
    dm = VisionDataModule(batch_size=64, eval_batch_size=100)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 500
    assert len(dm.train_dataloader()) == 4000 // 64  # drop_last on training batches


def test_stratified_split_covers_everything():
    labels = torch.arange(10).repeat_interleave(7)
    parts = stratified_split(labels, (0.6, 0.2, 0.2), seed=3)
    assert sorted(torch.cat(parts).tolist()) == list(range(70))


def test_stratified_split_proportions_and_seeds():
    """Each class is cut by the fractions (stratified); another seed picks other images for each part
    (as sets, not only in another order), and the same seed the same ones."""
    labels = torch.arange(5).repeat_interleave(40)  # 5 classes x 40 images
    train, val, test = stratified_split(labels, (0.7, 0.2, 0.1), seed=0)
    for part, per_class in ((train, 28), (val, 8), (test, 4)):
        assert torch.bincount(labels[part], minlength=5).tolist() == [per_class] * 5
    again = stratified_split(labels, (0.7, 0.2, 0.1), seed=0)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = stratified_split(labels, (0.7, 0.2, 0.1), seed=1)
    assert set(test.tolist()) != set(other[2].tolist()) and set(val.tolist()) != set(other[1].tolist())
    for c in range(5):  # within every class the held-out images change with the seed
        in_class = set(torch.nonzero(labels == c).flatten().tolist())
        assert set(test.tolist()) & in_class != set(other[2].tolist()) & in_class


def _write_folder(root: Path, splits=("train", "test"), per_class: int = 3) -> None:
    gen = torch.Generator().manual_seed(0)
    for split in splits:
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                write_png(
                    torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=gen),
                    str(root / split / cls / f"{i}.png"),
                )


def test_image_folder_and_archive_load_the_same(tmp_path: Path, cache_dir: Path):
    root = tmp_path / "imgs"
    _write_folder(root, per_class=5)
    dm = VisionDataModule(root=str(root), val_fraction=0.2, cache_dir=str(cache_dir))
    dm.setup()
    assert dm.classes == ["cat", "dog"] and dm.image_shape == (3, 8, 8)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 8, "val": 2, "test": 10}
    assert len(list(cache_dir.glob("*.pt"))) == 1, "decoded data is cached once"

    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="imgs")
    dm2 = VisionDataModule(root=str(archive), val_fraction=0.2, cache_dir=None)
    dm2.setup()
    assert dm2.classes == dm.classes
    for split in ("train", "val", "test"):
        assert torch.equal(dm2.splits[split].images, dm.splits[split].images)
        assert torch.equal(dm2.splits[split].labels, dm.splits[split].labels)


def test_image_folder_resizes_to_image_size(tmp_path: Path):
    root = tmp_path / "imgs"
    _write_folder(root, splits=("train", "val", "test"))
    dm = VisionDataModule(root=str(root), image_size=4, channels=1, cache_dir=None)
    dm.setup()
    assert dm.image_shape == (1, 4, 4) and len(dm.splits["val"]) == 6  # val/ used as given


def test_missing_root_and_missing_test_folder_raise(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"task.data.root=.*does not exist.*ImageFolder"):
        VisionDataModule(root=str(tmp_path / "missing"))
    _write_folder(tmp_path / "only_train", splits=("train",))
    dm = VisionDataModule(root=str(tmp_path / "only_train"), cache_dir=None)
    with pytest.raises(FileNotFoundError, match="no test/ folder"):
        dm.setup()


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    dm = VisionDataModule(hub="no-such-user/no-such-dataset", cache_dir=None)
    with pytest.raises(
        ValueError, match="task.data.hub=no-such-user/no-such-dataset could not be loaded .*HF_HUB_OFFLINE"
    ):
        dm.setup()


def test_dataset_cache_runs_no_code_and_a_bad_one_is_rebuilt(tmp_path: Path, cache_dir: Path):
    """The cache holds tensors and plain values (read with weights_only=True); a cache that would run code,
    or a truncated one, is not executed but replaced by a fresh decode, with a warning naming it."""
    root = tmp_path / "imgs"
    _write_folder(root, per_class=3)
    first = VisionDataModule(root=str(root), val_fraction=0.34, cache_dir=str(cache_dir))
    first.setup()
    (cache,) = cache_dir.glob("*.pt")
    assert set(torch.load(cache, weights_only=True)) == {"splits", "classes"}
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for bad in (
        lambda: torch.save({"x": Payload()}, cache),
        lambda: cache.write_bytes(b"PK\x03\x04 truncated"),
    ):
        bad()
        again = VisionDataModule(root=str(root), val_fraction=0.34, cache_dir=str(cache_dir))
        with pytest.warns(UserWarning, match=f"dataset cache {cache} is unreadable"):
            again.setup()
        assert not marker.exists(), "the cache's payload ran"
        assert torch.equal(again.splits["test"].images, first.splits["test"].images)
        assert set(torch.load(cache, weights_only=True)) == {"splits", "classes"}, "the cache was rewritten"
