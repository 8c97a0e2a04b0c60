"""Sharding data across DDP processes without Lightning's sampler injection.

Lightning's ``use_distributed_sampler`` wraps every loader in a ``DistributedSampler`` that pads the last
shard by repeating samples (so a few validation / test images are counted twice) and cannot shard a custom
batch sampler at all (the translation task's length-bucketed batches raised a ``TypeError`` under
``trainer=ddp``).  Our trainers set ``use_distributed_sampler: false`` and every data module shards its own
loaders with these helpers; outside DDP they change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

T = TypeVar("T")


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_sampler(dataset: Dataset, seed: int) -> DistributedSampler:
    """The training order: a ``DistributedSampler`` whose permutation depends on ``seed`` and the epoch
    alone (Lightning calls its ``set_epoch``), so a resumed run draws the same order as one never stopped.
    Under DDP each process gets an equal, disjoint shard (the incomplete tail is dropped, so every process
    runs the same number of steps); in one process the shard is the whole dataset."""
    rank, world = process_rank()
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)


class EvalShardSampler(DistributedSampler):
    """Process ``r`` of ``W`` gets indices ``r, r + W, r + 2W, ...``: every sample exactly once across the
    processes, none repeated (shards may differ by one: fine for evaluation, where no gradients are synced;
    torchmetrics sums the metric states over processes)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def eval_sampler(dataset: Dataset) -> EvalShardSampler | None:
    """Under DDP: an ``EvalShardSampler`` for this process; ``None`` otherwise."""
    rank, world = process_rank()
    return None if world == 1 else EvalShardSampler(dataset, world, rank)


def shard_batches(
    batches: Sequence[T], *, even: bool, rank: int | None = None, world: int | None = None
) -> list[T]:
    """This process's share of a list (of batches, or of sample indices): items ``r, r + W, ...``.

    ``even=True`` (training) cuts every share to ``len(batches) // W`` batches, so that all processes step
    equally often (DDP hangs otherwise); ``even=False`` (evaluation) keeps every batch exactly once.
    """
    if rank is None or world is None:
        rank, world = process_rank()
    share = list(batches[rank::world])
    return share[: len(batches) // world] if even else share


def keep_batch(batch: T) -> T:
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a stacked batch."""
    return batch


def tensor_loader(
    dataset: Dataset,
    *,
    train: bool,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over an in-memory dataset that stacks its own batches (``__getitems__``): training batches
    in the order of :func:`train_sampler` (full batches only), evaluation batches in order; under DDP each
    process gets its shard."""
    sampler = train_sampler(dataset, seed) if train else eval_sampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train and len(sampler if sampler is not None else dataset) >= batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        collate_fn=keep_batch,
        persistent_workers=num_workers > 0,
    )


class ShardedLoaders:
    """The train / val / test loaders of a data module over in-memory datasets (:func:`tensor_loader`).

    Mix in before ``LightningDataModule``; the module defines ``dataset(split)`` (``"train"``, ``"val"``,
    ``"test"``) and the attributes ``batch_size``, ``eval_batch_size``, ``seed``, ``num_workers`` and
    ``pin_memory``. Under DDP each process gets its shard.
    """

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def _loader(self, split: str, train: bool) -> DataLoader:
        return tensor_loader(
            self.dataset(split),
            train=train,
            batch_size=self.batch_size if train else self.eval_batch_size,
            seed=self.seed,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
