"""The ViT (built from mha), timm weight interop, augmentation and the task's loss / baseline."""

from __future__ import annotations

import pytest
import torch

from tasks.vision.augment import BatchAugment
from tasks.vision.model import ViT, load_timm_vit
from tasks.vision.task import VisionTask


@pytest.mark.parametrize("pool", ["token", "avg"])
@pytest.mark.parametrize("stem", [(), (8, 16)])
def test_vit_shapes(pool, stem):
    model = ViT(
        image_size=16,
        patch_size=4,
        in_chans=3,
        num_classes=5,
        embed_dim=32,
        depth=2,
        num_heads=4,
        pool=pool,
        stem_channels=stem,
    )
    x = torch.randn(3, 3, 16, 16)
    assert model(x).shape == (3, 5)
    assert model.forward_features(x).shape == (3, 16 + (pool == "token"), 32)
    assert model.attention_maps(x).shape == (3, 4, 4)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_conv_stem_rounds_odd_sides_up():
    model = ViT(
        image_size=28,
        patch_size=8,
        in_chans=1,
        num_classes=10,
        embed_dim=16,
        depth=1,
        num_heads=2,
        stem_channels=(4, 8, 16),
    )  # 28 -> 14 -> 7 -> 4 px: 4x4 tokens
    assert model.patch_embed.grid_size == 4
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 17, 16)


def test_vit_rejects_bad_sizes():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        ViT(image_size=28, patch_size=5)
    with pytest.raises(ValueError, match="conv stem"):
        ViT(image_size=28, patch_size=7, stem_channels=[8])
    with pytest.raises(ValueError, match="pool"):
        ViT(image_size=16, patch_size=4, pool="max")


def _randomize(module: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for p in module.parameters():
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def test_timm_vit_tiny_state_dict_gives_equal_logits():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    _randomize(ref)  # timm zero-inits the head: random weights make the comparison meaningful
    ours = load_timm_vit(ref.state_dict(), num_heads=3)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_timm_vit_with_qk_norm_and_layer_scale():
    timm = pytest.importorskip("timm")
    ref = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        num_classes=7,
        qk_norm=True,
        init_values=0.1,
    ).eval()
    _randomize(ref)
    ours = load_timm_vit(ref)  # from the module: num_heads read from it
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


def test_augment_shapes_range_and_identity():
    x = torch.rand(6, 3, 16, 16)
    aug = BatchAugment(crop="resized", flip=True, trivial_augment=True)
    out = aug(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)
    same = BatchAugment(crop="none", flip=False, rotate=0)
    assert torch.equal(same(x), x)
    flip = BatchAugment(crop="none", flip=True)(x)
    for i in range(6):  # every image is itself or its mirror image
        assert torch.allclose(flip[i], x[i], atol=1e-5) or torch.allclose(flip[i], x[i].flip(-1), atol=1e-5)
    shift = BatchAugment(crop="translate", pad=2, flip=False)(x)
    assert not torch.allclose(shift, x)


@pytest.mark.parametrize("mix", [{"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}])
def test_mixup_cutmix_targets(mix):
    torch.manual_seed(0)  # a CutMix box can fall outside the image: a single draw may leave a batch unmixed
    aug = BatchAugment(**mix)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 4
    mixed = False
    for _ in range(5):
        xm, t = aug.mix(x, y, num_classes=4)
        assert xm.shape == x.shape and t.shape == (8, 4)
        torch.testing.assert_close(t.sum(-1), torch.ones(8))
        mixed |= bool((t.max(-1).values < 1).any())
    assert mixed, "five draws never mixed the targets"


def test_task_loss_metrics_and_baseline(tmp_path):
    task = VisionTask(
        data={"batch_size": 16},
        model={"patch_size": 7, "embed_dim": 32, "depth": 1, "num_heads": 2},
        augment={"mixup_alpha": 0.5},
        label_smoothing=0.1,
        num_attention_images=2,
    )
    dm = task.build_datamodule()
    model = task.build_model(dm)
    assert model.head.out_features == 10
    batch = next(iter(dm.train_dataloader()))
    x, target = task.on_device_batch(batch, training=True)
    assert x.dtype == torch.float32 and target.shape == (16, 10)  # MixUp gives soft targets
    loss = task.training_loss(model, (x, target))
    assert loss.ndim == 0 and torch.isfinite(loss)
    metrics = task.build_metrics()
    x, y = task.on_device_batch(next(iter(dm.val_dataloader())), training=False)
    assert y.dtype == torch.int64
    assert torch.isfinite(task.eval_step(model, (x, y), metrics))
    assert 0 <= metrics.compute()["acc"] <= 1
    assert task.baselines(dm) == {"majority class": {"acc": pytest.approx(0.1)}}
    task.save_artifacts(model, dm, tmp_path)
    assert (tmp_path / "plots" / "attention_maps.png").stat().st_size > 1000


def test_compile_covers_model_and_augmentation_with_the_chosen_mode(monkeypatch):
    """compile=true compiles the model with compile_mode and the GPU augmentation; compile=false neither."""
    from tasks.lit import TaskModule

    def build(**kwargs):
        task = VisionTask(
            data={"batch_size": 16}, model={"patch_size": 7, "embed_dim": 32, "depth": 1, "num_heads": 2}
        )
        model = task.build_model(task.build_datamodule())
        TaskModule(task, model, {"lr": 1e-3, "weight_decay": 0.0, "warmup": 0}, **kwargs)
        return task, model

    with pytest.raises(RuntimeError, match="Unrecognized mode=bogus"):  # torch names the valid modes
        build(compile=True, compile_mode="bogus")
    modes = []
    real_compile = torch.compile

    def recording_compile(fn, **kw):
        modes.append(kw.get("mode"))
        return real_compile(fn, **kw)

    monkeypatch.setattr(torch, "compile", recording_compile)
    task, model = build(compile=True, compile_mode="reduce-overhead")
    assert model._compiled_call_impl is not None and task.augment._compiled_call_impl is not None
    assert modes == ["reduce-overhead", None]  # the model in the chosen mode, the augmentation in the default
    task, model = build(compile=False, compile_mode="reduce-overhead")
    assert model._compiled_call_impl is None and task.augment._compiled_call_impl is None
    assert len(modes) == 2


def test_attention_map_artifact_does_not_recompile_a_compiled_model(tmp_path):
    """train.py writes artifacts through ``tasks.common.save_artifacts``, with torch.compile off: through a
    compiled model their few images would be a new batch size, i.e. a recompile (over a minute, with CUDA
    graphs, at the end of an H100 run)."""
    from tasks.common import save_artifacts

    task = VisionTask(
        data={"batch_size": 16, "eval_batch_size": 50, "train_limit": 64},
        model={"patch_size": 7, "stem_channels": [], "embed_dim": 32, "depth": 1, "num_heads": 2},
        num_attention_images=3,
    )
    dm = task.build_datamodule()
    model = task.build_model(dm).eval()
    compiles = []

    def counting_backend(graph_module, example_inputs):
        compiles.append(len(example_inputs))
        return graph_module.forward

    model.compile(backend=counting_backend)
    x, _ = task.on_device_batch(next(iter(dm.val_dataloader())), training=False)
    with torch.no_grad():
        model(x)  # the compiled call a test/val loop makes
    assert len(compiles) == 1
    save_artifacts(task, model, dm, tmp_path)
    assert (tmp_path / "plots" / "attention_maps.png").stat().st_size > 1000
    assert len(compiles) == 1  # no second compilation for the artifact's batch of 3


@pytest.mark.parametrize("mix", [{"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}])
def test_image_mix_and_label_mix_agree(mix):
    """Each image is one constant value, so a mixed image shows how much of it came from its partner; the
    soft label must give the two classes exactly those shares (a CutMix box clipped at the border too)."""
    torch.manual_seed(0)
    aug = BatchAugment(**mix)
    b = 6
    for _ in range(10):
        x = torch.arange(b, dtype=torch.float).view(b, 1, 1, 1).expand(b, 1, 16, 16).contiguous()
        xm, t = aug.mix(x, torch.arange(b), num_classes=b)
        for i in range(b):
            j = b - 1 - i  # the partner image (and class)
            if "cutmix_alpha" in mix:
                own = (xm[i] == i).float().mean()
            else:
                own = (xm[i].mean() - j) / (i - j)
            assert t[i, i] == pytest.approx(float(own), abs=1e-5)
            assert t[i, j] == pytest.approx(1 - float(own), abs=1e-5)


def test_attention_maps_are_the_class_tokens_softmax_row():
    """The plotted map is the last layer's class-token row of the attention weights, averaged over heads:
    each head's rows sum to 1, and the map's patches plus the class token's weight on itself sum to 1."""
    torch.manual_seed(0)
    model = ViT(
        image_size=16,
        patch_size=4,
        in_chans=1,
        num_classes=3,
        embed_dim=32,
        depth=2,
        num_heads=4,
        pool="token",
        stem_channels=[],
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        _, weights = model.forward_features(x, need_weights=True)
        maps = model.attention_maps(x)
    last = weights[-1]  # (B, heads, 1 + 16, 1 + 16)
    assert last.shape == (2, 4, 17, 17)
    torch.testing.assert_close(last.sum(-1), torch.ones(2, 4, 17))
    torch.testing.assert_close(maps, last.mean(1)[:, 0, 1:].reshape(2, 4, 4))
    torch.testing.assert_close(maps.sum((1, 2)) + last.mean(1)[:, 0, 0], torch.ones(2))
