"""Forecasters for ``task=timeseries``: PatchTST on the ``mha`` core, DLinear, and the naive baselines.

All map a look-back window ``x`` (batch, lookback, channels) to a forecast (batch, horizon, channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mha import Encoder

#: the smallest attention probability whose log is passed on by residual attention (fp32's smallest normal
#: number, log -87.3): a weight that underflowed to 0 stays finite, and so do the gradients
MIN_WEIGHT = torch.finfo(torch.float32).tiny


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., 2022): each window and channel is shifted and scaled
    by its own mean and standard deviation over time, then an affine map per channel; ``denormalize`` undoes
    both on the forecast.

    Args:
        num_channels: C.
        affine: learn a per-channel scale and shift.
        eps: added to the variance (and guards the affine division).
    """

    def __init__(self, num_channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` (B, T, C) -> (normalised x, (mean, std) each (B, 1, C))."""
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - mean) / std
        if self.affine:
            x = x * self.weight + self.bias
        return x, (mean, std)

    def denormalize(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``y`` (B, H, C) back to the input's scale with the window's ``stats``."""
        mean, std = stats
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


class TokenBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the width of tokens ``(batch, seq, width)``: statistics over batch and sequence
    (PatchTST's norm layers; the series of one batch share a scale, unlike LayerNorm's per-token one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class PatchTST(nn.Module):
    """Channel-independent patch Transformer (Nie et al., 2023) with an ``mha.Encoder``.

    Each channel of the RevIN-normalised window is its own sequence: padded at the end by repeating its
    last value ``stride`` times, cut into ``num_patches = (lookback - patch_len) // stride + 2`` patches of
    ``patch_len`` rows, each patch projected to ``d_model`` plus a learned position; the encoder attends
    over the patches of one channel; a linear head maps the flattened tokens to ``horizon`` values.

    Args:
        num_channels: C (RevIN's affine parameters; the weights are shared by all channels).
        lookback, horizon: input and output rows.
        patch_len, stride: patch size and step in rows.
        d_model, num_heads, num_layers, ffn_dim: encoder sizes.
        dropout: on the patch embeddings, residual branches and in the MLP; attn_dropout: on attention
            probabilities; head_dropout: before the linear head.
        norm_first: pre-norm encoder layers (False: post-norm, as the paper's BatchNorm layers).
        norm: ``"layer"`` (LayerNorm) or ``"batch"`` (BatchNorm over batch and patches, the paper's choice).
        revin, revin_affine: reversible instance normalisation and its per-channel affine map.
        res_attention: residual attention (the default of the paper's code): each layer's pre-softmax scores
            get the previous layer's added, ``s_l = q_l k_l^T / sqrt(head_dim) + s_{l-1}``. Through mha's API:
            layer ``l`` gets ``log(weights_{l-1})`` (the softmax probabilities, before dropout) as an additive
            mask, which equals ``s_{l-1}`` up to a constant per row that softmax ignores. Every layer then
            takes mha's eager path (the weights are needed), slower than the fused kernels. Weights below
            ``MIN_WEIGHT`` (scores ~87 below their row's best) pass on ``log(MIN_WEIGHT)``.
    """

    def __init__(
        self,
        num_channels: int,
        lookback: int,
        horizon: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 16,
        num_heads: int = 4,
        num_layers: int = 3,
        ffn_dim: int = 128,
        dropout: float = 0.3,
        attn_dropout: float = 0.0,
        head_dropout: float = 0.0,
        norm_first: bool = True,
        norm: str = "layer",
        revin: bool = True,
        revin_affine: bool = True,
        res_attention: bool = False,
    ) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f"task.horizon={horizon} must be >= 1 (rows to forecast)")
        if not 1 <= patch_len <= lookback:
            raise ValueError(
                f"task.model.patch_len={patch_len} must be between 1 and task.lookback={lookback}; "
                "use a shorter patch or a longer look-back"
            )
        if not 1 <= stride <= patch_len:
            raise ValueError(f"task.model.stride={stride} must be between 1 and patch_len={patch_len}")
        if norm not in ("layer", "batch"):
            raise ValueError(f"task.model.norm={norm!r} must be 'layer' or 'batch'")
        self.lookback, self.horizon = lookback, horizon
        self.res_attention = res_attention
        self.patch_len, self.stride = patch_len, stride
        self.num_patches = (lookback - patch_len) // stride + 2  # +1: the end padding of `stride` rows
        self.revin = RevIN(num_channels, affine=revin_affine) if revin else None
        self.patch_embed = nn.Linear(patch_len, d_model)
        self.pos_embed = nn.Parameter(torch.empty(self.num_patches, d_model).uniform_(-0.02, 0.02))
        self.embed_dropout = nn.Dropout(dropout)
        self.encoder = Encoder(
            num_layers,
            d_model,
            num_heads,
            ffn_dim=ffn_dim,
            dropout=dropout,
            attn_dropout=attn_dropout,
            norm_first=norm_first,
        )
        if norm == "batch":
            for layer in self.encoder.layers:
                layer.norm1, layer.norm2 = TokenBatchNorm(d_model), TokenBatchNorm(d_model)
            if not isinstance(self.encoder.norm, nn.Identity):
                self.encoder.norm = TokenBatchNorm(d_model)
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.num_patches * d_model, horizon)

    def no_weight_decay(self) -> list[str]:
        return ["pos_embed"]

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """(B, L, C) -> patch tokens (B * C, N, d_model) and the RevIN statistics."""
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        series = x.transpose(1, 2).flatten(0, 1)  # (B * C, L)
        series = F.pad(series.unsqueeze(1), (0, self.stride), mode="replicate").squeeze(1)  # (B * C, L + S)
        patches = series.unfold(-1, self.patch_len, self.stride)  # (B * C, N, patch_len)
        return self.embed_dropout(self.patch_embed(patches) + self.pos_embed), stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, lookback, C) -> forecast (B, horizon, C)."""
        batch, _, channels = x.shape
        tokens, stats = self._tokens(x)
        h, _ = self._encode(tokens)  # (B * C, N, d_model)
        y = self.head(self.head_dropout(h.flatten(1)))  # (B * C, horizon)
        y = y.view(batch, channels, self.horizon).transpose(1, 2)  # (B, horizon, C)
        return self.revin.denormalize(y, stats) if self.revin is not None else y

    @torch.no_grad()
    def attention(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Head-averaged attention over patches of ``layer``: (B, C, N, N) for ``x`` (B, lookback, C)."""
        tokens, _ = self._tokens(x)
        _, weights = self._encode(tokens, need_weights=True)  # per layer (B * C, heads, N, N)
        return weights[layer].mean(1).view(x.shape[0], x.shape[2], self.num_patches, self.num_patches)

    def _encode(
        self, tokens: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """``self.encoder`` on tokens (B * C, N, d_model) -> (tokens, per-layer weights (B * C, heads, N, N)
        when ``need_weights``); with ``res_attention`` its layers are run here, each given the log of the
        previous layer's weights as an additive mask, then the encoder's final norm."""
        if not self.res_attention:
            return self.encoder(tokens, need_weights=need_weights)
        all_weights, log_weights = [], None
        for layer in self.encoder.layers:
            tokens, weights = layer(tokens, need_weights=True, sdpa_mask=log_weights)
            # in fp32: under autocast the weights are bf16 / fp16, where MIN_WEIGHT rounds to 0 (fp16); mha
            # casts the mask back to the attention dtype
            log_weights = weights.float().clamp_min(MIN_WEIGHT).log()  # (B * C, heads, N, N)
            all_weights.append(weights)
        return self.encoder.norm(tokens), (all_weights if need_weights else None)


def moving_average(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Trend of ``x`` (B, T, C): a centred moving average over time, the ends padded by repeating the
    first / last row (DLinear's ``moving_avg``; odd ``kernel_size`` keeps the length T)."""
    front = x[:, :1].expand(-1, (kernel_size - 1) // 2, -1)
    back = x[:, -1:].expand(-1, kernel_size // 2, -1)
    padded = torch.cat([front, x, back], dim=1).transpose(1, 2)  # (B, C, T + kernel_size - 1)
    return F.avg_pool1d(padded, kernel_size, stride=1).transpose(1, 2)


class DLinear(nn.Module):
    """DLinear (Zeng et al., 2023): moving-average trend + remainder, one linear map over time for each,
    shared by all channels; weights start at the mean (``1 / lookback``) as in the authors' code.

    Args:
        lookback, horizon: input and output rows.
        kernel_size: moving-average window (25 in the paper).
    """

    def __init__(self, lookback: int, horizon: int, kernel_size: int = 25) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"task.dlinear.kernel_size={kernel_size} must be >= 1")
        self.kernel_size = kernel_size
        self.seasonal = nn.Linear(lookback, horizon)
        self.trend = nn.Linear(lookback, horizon)
        for lin in (self.seasonal, self.trend):
            nn.init.constant_(lin.weight, 1.0 / lookback)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, lookback, C) -> forecast (B, horizon, C)."""
        trend = moving_average(x, self.kernel_size)
        seasonal = x - trend
        y = self.seasonal(seasonal.transpose(1, 2)) + self.trend(trend.transpose(1, 2))  # (B, C, horizon)
        return y.transpose(1, 2)


def last_value(x: torch.Tensor, horizon: int) -> torch.Tensor:
    """The last observed row repeated: (B, lookback, C) -> (B, horizon, C)."""
    return x[:, -1:].expand(-1, horizon, -1)


def seasonal_naive(x: torch.Tensor, horizon: int, period: int) -> torch.Tensor:
    """The last ``period`` rows repeated: forecast row ``h`` is ``x[:, lookback - period + h % period]``."""
    lookback = x.shape[1]
    if not 1 <= period <= lookback:
        raise ValueError(f"task.period={period} must be between 1 and task.lookback={lookback}")
    idx = lookback - period + torch.arange(horizon, device=x.device) % period
    return x[:, idx]
