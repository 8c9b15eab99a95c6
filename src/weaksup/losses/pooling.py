"""Permutation-invariant bag pooling over flat instances, vectorised with segment reductions.

A batch of bags is one flat tensor of instance values `[N, D]` plus, for every instance, the
index of its bag (`BagSegments.bag_index`, `[N]`). Every reduction here is a single
`index_add` / `scatter_reduce` over all bags at once: there is no Python loop over bags.

Two places to pool (Ilse, Tomczak & Welling 2018, "Attention-based Deep Multiple Instance
Learning", Sec. 2.3; Wang et al. 2018, mi-Net vs MI-Net):

* instance level (`level="instance"`): a classifier scores every instance, the pooling turns
  the instance *logits* `[N, 1]` into one bag *logit* `[B, 1]`;
* embedding level (`level="embedding"`): the pooling turns instance embeddings `[N, D]` into one
  bag embedding `[B, D]`, which the classifier scores.

Every instance-level pooling returns a logit (never a probability), so bag losses can be computed
stably from logits. A bag of one instance pools to that instance's own value for every pooling
here (the `1/K` inside LSE and the attention softmax over one element make sure of it), which is
what lets a trained model score single instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weaksup.data.segments import BagSegments

PoolingLevel = Literal["instance", "embedding"]
POOLING_LEVELS = ("instance", "embedding")


def _expand_index(bag_index: Tensor, values: Tensor) -> Tensor:
    shape = (-1,) + (1,) * (values.dim() - 1)
    return bag_index.view(shape).expand_as(values)


def segment_sum(values: Tensor, segments: BagSegments) -> Tensor:
    """Per-bag sum `[B, ...]` of instance values `[N, ...]`."""
    output = values.new_zeros((segments.num_bags, *values.shape[1:]))
    return output.index_add(0, segments.bag_index, values)


def segment_mean(values: Tensor, segments: BagSegments) -> Tensor:
    """Per-bag mean `[B, ...]`."""
    sizes = segments.bag_sizes.to(values.dtype).view((-1,) + (1,) * (values.dim() - 1))
    return segment_sum(values, segments) / sizes


def segment_max(values: Tensor, segments: BagSegments) -> Tensor:
    """Per-bag maximum `[B, ...]`; the gradient is shared evenly between tied maxima."""
    output = values.new_full((segments.num_bags, *values.shape[1:]), -math.inf)
    return output.scatter_reduce(
        0, _expand_index(segments.bag_index, values), values, reduce="amax", include_self=False
    )


def segment_logsumexp(values: Tensor, segments: BagSegments) -> Tensor:
    """Per-bag `log Σ_k exp(v_k)`, stable: the per-bag maximum is subtracted before `exp`."""
    bag_max = segment_max(values.detach(), segments)
    shifted = (values - bag_max[segments.bag_index]).exp()
    return segment_sum(shifted, segments).log() + bag_max


def segment_softmax(logits: Tensor, segments: BagSegments) -> Tensor:
    """Softmax over the instances of each bag `[N, ...]`, stable (per-bag maximum subtracted)."""
    bag_max = segment_max(logits.detach(), segments)
    shifted = (logits - bag_max[segments.bag_index]).exp()
    return shifted / segment_sum(shifted, segments)[segments.bag_index]


def _log1mexp(values: Tensor) -> Tensor:
    """`log(1 - exp(v))` for `v < 0`, accurate everywhere (Mächler 2012, "Accurately Computing
    log(1 - exp(-|a|))": `log(-expm1(v))` above `-log 2`, `log1p(-exp(v))` below)."""
    near_zero = values > -math.log(2.0)
    # Each branch sees only inputs of its own region, so the other's gradient is never 0 * inf.
    safe_near = torch.where(near_zero, values, -1.0)
    safe_far = torch.where(near_zero, -1.0, values)
    return torch.where(near_zero, (-safe_near.expm1()).log(), (-safe_far.exp()).log1p())


@dataclass
class PoolingOutput:
    """Pooled bag values `[B, D]` and, for attention poolings, the instance weights `[N]`."""

    pooled: Tensor
    weights: Tensor | None = None


class BagPooling(nn.Module):
    """Base class of the `pooling` group.

    `level` says what the method feeds in: instance logits `[N, 1]` ("instance") or instance
    embeddings `[N, D]` ("embedding"). `needs_embedding_dim` poolings have parameters and get the
    backbone's embedding size from the method (`embedding_dim`, not a config key).
    """

    needs_embedding_dim: ClassVar[bool] = False
    allowed_levels: ClassVar[tuple[str, ...]] = POOLING_LEVELS

    def __init__(self, level: str) -> None:
        super().__init__()
        if level not in self.allowed_levels:
            raise ValueError(
                f"pooling.level={level!r} is not possible for {type(self).__name__}; "
                f"allowed: {', '.join(self.allowed_levels)}"
            )
        self.level = level

    def forward(self, values: Tensor, segments: BagSegments) -> PoolingOutput:
        if values.dim() != 2 or values.shape[0] != segments.num_instances:
            raise ValueError(
                f"{type(self).__name__} expects instance values [N, D] with N = "
                f"{segments.num_instances}, got {tuple(values.shape)}"
            )
        return self.pool(values, segments)

    def pool(self, values: Tensor, segments: BagSegments) -> PoolingOutput:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"level={self.level!r}"


class MaxPooling(BagPooling):
    """`max_k v_k` per bag (Ilse eq. 4, first line). At instance level the max logit is the
    logit of the max probability (sigmoid is increasing)."""

    def __init__(self, level: str = "instance") -> None:
        super().__init__(level)

    def pool(self, values: Tensor, segments: BagSegments) -> PoolingOutput:
        return PoolingOutput(segment_max(values, segments))


class MeanPooling(BagPooling):
    """Mean per bag (Ilse eq. 4, second line).

    Embedding level: mean embedding. Instance level: the mean instance *probability*
    `θ = 1/K Σ σ(z_k)` (mi-Net, Wang et al. 2018), returned as its logit
    `log θ - log(1 - θ) = LSE_k log σ(z_k) - LSE_k log σ(-z_k)` (the `1/K` cancels), exact and
    stable for logits of any size.
    """

    def __init__(self, level: str = "instance") -> None:
        super().__init__(level)

    def pool(self, values: Tensor, segments: BagSegments) -> PoolingOutput:
        if self.level == "embedding":
            return PoolingOutput(segment_mean(values, segments))
        log_positive = segment_logsumexp(F.logsigmoid(values), segments)
        log_negative = segment_logsumexp(F.logsigmoid(-values), segments)
        return PoolingOutput(log_positive - log_negative)


class LSEPooling(BagPooling):
    """Log-sum-exp pooling `r⁻¹ log(1/K Σ_k exp(r v_k))` (Ilse eq. 4, after Ramon & De Raedt
    2000): the mean for `r → 0`, the max for `r → ∞`. At instance level it pools the logits.

    Args:
        r: sharpness `r > 0`.
    """

    def __init__(self, r: float = 5.0, level: str = "instance") -> None:
        super().__init__(level)
        if (
            isinstance(r, bool)
            or not isinstance(r, int | float)
            or not (math.isfinite(r) and r > 0)
        ):
            raise ValueError(f"pooling.r must be a finite number > 0, got {r!r}")
        self.r = float(r)

    def pool(self, values: Tensor, segments: BagSegments) -> PoolingOutput:
        log_sizes = segments.bag_sizes.to(values.dtype).log().unsqueeze(1)
        pooled = (segment_logsumexp(self.r * values, segments) - log_sizes) / self.r
        return PoolingOutput(pooled)

    def extra_repr(self) -> str:
        return f"r={self.r}, level={self.level!r}"


class NoisyOrPooling(BagPooling):
    """Noisy-OR `θ = 1 - Π_k (1 - σ(z_k))` (Maron & Lozano-Pérez 1998; Zhang et al. 2006),
    instance level only, returned as a logit.

    With `S = Σ_k log σ(-z_k) = log(1 - θ)`: logit `θ = log(1 - e^S) - S`, using a stable
    `log1mexp`. When every instance is so negative that `S` rounds to 0, `S` is capped at
    `-min_log_complement` (bag logit about `log(min_log_complement)`), so the logit stays finite.
    """

    allowed_levels: ClassVar[tuple[str, ...]] = ("instance",)

    def __init__(self, level: str = "instance", min_log_complement: float = 1e-30) -> None:
        super().__init__(level)
        if not (isinstance(min_log_complement, int | float) and 0 < min_log_complement < 1):
            raise ValueError(
                f"pooling.min_log_complement must be in (0, 1), got {min_log_complement!r}"
            )
        self.min_log_complement = float(min_log_complement)

    def pool(self, values: Tensor, segments: BagSegments) -> PoolingOutput:
        log_complement = segment_sum(F.logsigmoid(-values), segments)
        log_complement = log_complement.clamp(max=-self.min_log_complement)
        return PoolingOutput(_log1mexp(log_complement) - log_complement)


class AttentionPooling(BagPooling):
    """Attention-based pooling, Ilse et al. 2018 eq. 8 (and eq. 9 when `gated`), embedding level.

    `a_k = softmax_k(wᵀ tanh(V h_k))`, gated: `a_k = softmax_k(wᵀ (tanh(V h_k) ⊙ sigm(U h_k)))`,
    bag embedding `z = Σ_k a_k h_k`. The softmax runs over each bag's instances (segment softmax,
    stable). Dimensions as in their code (`model.py`): `attention_dim` L = 128, one branch (K = 1).

    Args:
        embedding_dim: size M of the instance embeddings (given by the backbone).
        attention_dim: hidden size L of the attention network.
        gated: use the gated mechanism (eq. 9).
    """

    needs_embedding_dim: ClassVar[bool] = True
    allowed_levels: ClassVar[tuple[str, ...]] = ("embedding",)

    def __init__(
        self,
        embedding_dim: int,
        attention_dim: int = 128,
        gated: bool = False,
        level: str = "embedding",
    ) -> None:
        super().__init__(level)
        for name, value in (("embedding_dim", embedding_dim), ("attention_dim", attention_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"pooling.{name} must be a positive integer, got {value!r}")
        self.gated = bool(gated)
        self.attention_V = nn.Linear(embedding_dim, attention_dim)
        self.attention_U = nn.Linear(embedding_dim, attention_dim) if gated else None
        self.attention_w = nn.Linear(attention_dim, 1)

    def attention_logits(self, embeddings: Tensor) -> Tensor:
        """`wᵀ tanh(V h)` (or the gated form) for every instance, `[N]`."""
        hidden = torch.tanh(self.attention_V(embeddings))
        if self.attention_U is not None:
            hidden = hidden * torch.sigmoid(self.attention_U(embeddings))
        return self.attention_w(hidden).squeeze(1)

    def pool(self, values: Tensor, segments: BagSegments) -> PoolingOutput:
        weights = segment_softmax(self.attention_logits(values), segments)
        return PoolingOutput(segment_sum(weights.unsqueeze(1) * values, segments), weights)

    def extra_repr(self) -> str:
        return f"gated={self.gated}, level={self.level!r}"
