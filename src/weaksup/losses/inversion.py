"""Semi-supervised loss from deep network inversion (Balestriero et al. 2017 and 2018).

Sources:
    [2017] Balestriero, Roger, Glotin & Baraniuk, "Semi-Supervised Learning via New Deep Network
        Inversion", arXiv 1711.04313. Abstract and Sec. 1: any deep network is given an inverse that
        reconstructs its input, and the semi-supervised loss adds a term built on that inverse.
    [2018] Balestriero et al., "Semi-Supervised Learning Enabled by Multiscale Deep Neural Network
        Inversion", arXiv 1802.10172. Abstract: one loss for networks of any topology, trained
        "without extra hyper-parameters"; the title's multiscale inversion reconstructs every layer.
    [spline] Balestriero & Baraniuk, "Mad Max: Affine Spline Insights into Deep Learning",
        arXiv 1805.06576, abstract: conditioned on its input, a network made of max-affine spline
        operators (e.g. linear and convolution layers, ReLU, max-pooling) is an affine map
        `z_L = A[x] x + b[x]`, whose rows are signal-dependent class templates.
    [seed] The multiscale-inversion seed note (`../shared/seeds/`, summarising [2018]): [2018]
        removes the hyper-parameters of [2017]'s loss by a loss-dependent renormalisation and
        replaces its global reconstruction loss by a multiscale one; the hyper-parameters are
        `β_CE, β_E, (β_R^(l))_{l=0}^{L-1}`; and, as the note author's own guess at what the
        experiments used ("个人认为"), `β_E = 1/log C` and `β_R^(l) = 1/(L·D^(l))`.

Only the abstracts of [2017] and [2018] and the introduction of [2017] could be read from here, so
no equation number is cited; the choices below are ours where those texts are silent, and the ones
the papers' bodies may settle otherwise are constructor arguments.

The reconstruction of level l (the input `z_l` of layer l; `z_0 = x`) is the region template
weighted by a stop-gradient class distribution ŷ,

    ẑ_l = ∂⟨z_L, sg(ŷ)⟩ / ∂z_l,

which for a piecewise-affine network is `A_l[x]ᵀ ŷ`, `A_l[x]` being the Jacobian of the logits with
respect to `z_l` ([spline]; `A_0[x] = A[x]`). All levels come from one `torch.autograd.grad` call
with `create_graph=True`, so the reconstruction error trains the weights through the templates.

Choices (each documented where it is made):
- ŷ: the one-hot label on labeled rows and the prediction on unlabeled rows (issue 14 and
  `methods.md`; not checked in the papers' bodies). Which prediction is an argument: the softmax
  (`unlabeled_template="probabilities"`, default: the same ŷ whose entropy the loss takes) or its
  argmax one-hot (`"argmax"`, the template of the predicted class alone).
- `‖z_l − ẑ_l‖²` is summed over the level's D^(l) dimensions and averaged over the batch, so
  with the default `β_R^(l) = 1/(L·D^(l))` the reconstruction term is the mean over levels of the
  per-dimension mean squared error, whatever the level sizes.
- The reconstruction error is taken on every row (labeled and unlabeled), the entropy on the
  unlabeled rows, the cross-entropy on the labeled rows; each is a batch mean.
- Both sides of `z_l − ẑ_l` stay differentiable (no stop-gradient on the target `z_l`).
- Labeled and unlabeled inputs go through the network in one concatenated forward pass (see
  `MultiscaleInversionLoss.forward` for what that means for BatchNorm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weaksup.losses._checks import at_least_float32, check_class_indices

SCALES = ("multiscale", "input")
UNLABELED_TEMPLATES = ("probabilities", "argmax")


class FeatureBackbone(Protocol):
    """What the loss needs from a network: the project's `weaksup.nn.Backbone` contract."""

    def __call__(self, inputs: Tensor) -> Tensor: ...

    def forward_with_features(self, inputs: Tensor) -> tuple[Tensor, list[Tensor]]: ...


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Shannon entropy (nats) of `softmax(logits)` per row, `[N, C] -> [N]`.

    Computed from `log_softmax` so that saturated rows stay finite: with logits of ±1e4 the
    vanishing probabilities multiply a finite log-probability (`0·(−2e4) = 0`), where
    `log(softmax)` would give `0·(−inf) = nan` in the value and in the gradient.
    """
    log_probabilities = F.log_softmax(at_least_float32(logits), dim=1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=1)


def default_entropy_weight(num_classes: int) -> float:
    """`β_E = 1/log C`: the entropy divided by its maximum, so the term lies in [0, 1].

    The seed note's reading of [2018]'s "hyper-parameter free" weights, not a formula read in the
    paper itself.
    """
    if num_classes < 2:
        raise ValueError(f"the entropy weight 1/log C needs C >= 2 classes, got C = {num_classes}")
    return 1.0 / math.log(num_classes)


def default_reconstruction_weights(level_sizes: Sequence[int]) -> list[float]:
    """`β_R^(l) = 1/(L·D^(l))` for the L reconstructed levels of D^(l) values per example each.

    With the squared error summed over a level's dimensions this averages the per-dimension
    error over the levels, so a 784-pixel input and a 10-unit layer count the same. The seed
    note's reading of [2018], not a formula read in the paper itself.
    """
    num_levels = len(level_sizes)
    if num_levels == 0 or any(size <= 0 for size in level_sizes):
        raise ValueError(f"level sizes must be positive, one per level; got {list(level_sizes)}")
    return [1.0 / (num_levels * size) for size in level_sizes]


def sigmoid_rampup(step: int, length: int) -> float:
    """`exp(−5·(1 − t)²)`, `t = min(step, length)/length`: the weight of the unsupervised terms
    ramped up from about 0.007 to 1 over `length` steps, then 1 (Laine & Aila 2017, Temporal
    Ensembling, Sec. 3.1 and App. A: "a Gaussian ramp-up curve exp[−5(1 − T)²]"). `length=0`
    gives 1 from the first step (no ramp-up).
    """
    if length < 0:
        raise ValueError(f"the ramp-up length must be >= 0 steps, got {length}")
    if length == 0 or step >= length:
        return 1.0
    progress = max(step, 0) / length
    return math.exp(-5.0 * (1.0 - progress) ** 2)


def reconstructions(
    logits: Tensor,
    features: Sequence[Tensor],
    target_probabilities: Tensor,
    *,
    create_graph: bool = True,
) -> list[Tensor]:
    """Reconstruct every listed level: `ẑ_l = ∂⟨z_L, sg(ŷ)⟩/∂z_l`, one autograd call for all.

    For a piecewise-affine network this is `A_l[x]ᵀ ŷ` per example, the region template of level l
    weighted by ŷ ([spline]; [2017] Sec. 1 for the input, [2018] for every level). The inner
    product is summed over the batch: examples do not interact, so row i of the gradient is
    example i's template, except through layers that mix examples (BatchNorm in training mode
    adds the derivative of the batch statistics; in eval mode it is a per-example affine map).

    Args:
        logits: `[N, C]` network output `z_L`, computed from every tensor in `features`.
        features: the tensors to reconstruct (e.g. `forward_with_features`' list, whose first
            entry is the input; that input must require grad).
        target_probabilities: `[N, C]` ŷ; detached here (the stop-gradient sg).
        create_graph: keep the graph of the templates so a loss on them trains the weights;
            `False` for pictures and evaluation.

    Returns:
        One tensor per feature, of the feature's shape.
    """
    if logits.dim() != 2 or target_probabilities.shape != logits.shape:
        raise ValueError(
            f"expected logits [N, C] and target_probabilities of the same shape, got logits "
            f"{tuple(logits.shape)} and target_probabilities {tuple(target_probabilities.shape)}"
        )
    if len(features) == 0:
        raise ValueError("features is empty: give at least one level to reconstruct")
    if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        raise RuntimeError(
            "the inversion reconstructions are gradients and need autograd: call them under "
            "torch.enable_grad() and outside torch.inference_mode()"
        )
    for level, feature in enumerate(features):
        if not feature.requires_grad:
            raise ValueError(
                f"features[{level}] does not require grad; pass inputs.requires_grad_() to "
                "forward_with_features so that the input level can be differentiated"
            )
    inner_product = (logits * target_probabilities.detach().to(logits.dtype)).sum()
    gradients = torch.autograd.grad(
        inner_product, list(features), create_graph=create_graph, allow_unused=True
    )
    for level, gradient in enumerate(gradients):
        if gradient is None:
            raise ValueError(
                f"features[{level}] is not on the autograd path to the logits; "
                "forward_with_features must list the tensors the network computed the logits from"
            )
    return list(gradients)


def _check_weight(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0 (0 switches the term off), got {value!r}")
    return float(value)


def _check_reconstruction_weights(
    weights: float | Sequence[float] | None,
) -> float | tuple[float, ...] | None:
    if weights is None:
        return None
    if isinstance(weights, int | float) and not isinstance(weights, bool):
        return _check_weight(weights, "reconstruction_weights")
    if isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise TypeError(
            "reconstruction_weights must be null (β_R^(l) = 1/(L·D^(l))), one number for every "
            f"level, or a non-empty list with one number per level; got {weights!r}"
        )
    return tuple(
        _check_weight(weight, f"reconstruction_weights[{index}]")
        for index, weight in enumerate(weights)
    )


class MultiscaleInversionLoss(nn.Module):
    """`β_CE·CE(labeled) + β_E·H(unlabeled) + Σ_l β_R^(l)·‖z_l − ẑ_l‖²` ([2018], via the seed note).

    Args:
        ce_weight: β_CE, on the mean cross-entropy of the labeled rows.
        entropy_weight: β_E, on the mean prediction entropy (nats) of the unlabeled rows;
            `None` for `1/log C` (see `default_entropy_weight`).
        reconstruction_weights: β_R^(l), on the batch mean of `‖z_l − ẑ_l‖²` (summed over the
            level's dimensions). `None` for `1/(L·D^(l))` (see `default_reconstruction_weights`);
            one number for the same raw weight on every level; a list for one weight per
            reconstructed level (its length is checked against the backbone's levels).
        reconstruction_scale: a factor on every β_R^(l) (the defaults or the given ones), so the
            default's shape across levels can be kept at another overall strength (1: as given).
        scales: `"multiscale"` reconstructs the input of every level ([2018]); `"input"` only the
            network input, the single-scale loss of [2017].
        unlabeled_template: the ŷ that weights the templates of unlabeled rows: `"probabilities"`
            (softmax, default) or `"argmax"` (one-hot of the predicted class). Labeled rows use
            their one-hot label.

    A weight of 0 removes its term: it is neither computed nor returned, and with the entropy and
    every reconstruction weight at 0 (supervised only) the unlabeled batch is not even forwarded.
    The ablation settings are `scales="input"` (single scale), `reconstruction_weights=0`
    (entropy only) and `reconstruction_weights=0, entropy_weight=0` (supervised only).
    """

    def __init__(
        self,
        ce_weight: float = 1.0,
        entropy_weight: float | None = None,
        reconstruction_weights: float | Sequence[float] | None = None,
        scales: str = "multiscale",
        unlabeled_template: str = "probabilities",
        reconstruction_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if scales not in SCALES:
            raise ValueError(f"scales must be one of {SCALES}, got {scales!r}")
        if unlabeled_template not in UNLABELED_TEMPLATES:
            raise ValueError(
                f"unlabeled_template must be one of {UNLABELED_TEMPLATES}, got {unlabeled_template!r}"
            )
        self.ce_weight = _check_weight(ce_weight, "ce_weight")
        self.entropy_weight = (
            None if entropy_weight is None else _check_weight(entropy_weight, "entropy_weight")
        )
        self.reconstruction_weights = _check_reconstruction_weights(reconstruction_weights)
        self.reconstruction_scale = _check_weight(reconstruction_scale, "reconstruction_scale")
        self.scales = scales
        self.unlabeled_template = unlabeled_template
        if not (self.ce_weight or self.uses_entropy or self.uses_reconstruction):
            raise ValueError(
                "every term is switched off (ce_weight, entropy_weight and reconstruction_weights "
                "are all 0): at least one weight must be positive"
            )

    def extra_repr(self) -> str:
        return (
            f"ce_weight={self.ce_weight}, entropy_weight={self.entropy_weight}, "
            f"reconstruction_weights={self.reconstruction_weights}, "
            f"reconstruction_scale={self.reconstruction_scale}, scales={self.scales!r}, "
            f"unlabeled_template={self.unlabeled_template!r}"
        )

    @property
    def uses_entropy(self) -> bool:
        return self.entropy_weight != 0

    @property
    def uses_reconstruction(self) -> bool:
        if self.reconstruction_scale == 0:
            return False
        weights = self.reconstruction_weights
        if weights is None:
            return True
        if isinstance(weights, float):
            return weights != 0
        return any(weight != 0 for weight in weights)

    @property
    def uses_unlabeled(self) -> bool:
        """Whether any term needs the unlabeled batch (the entropy, or the reconstruction)."""
        return self.uses_entropy or self.uses_reconstruction

    def forward(
        self,
        backbone: FeatureBackbone,
        labeled_inputs: Tensor,
        labeled_targets: Tensor,
        unlabeled_inputs: Tensor | None = None,
        unlabeled_scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """Named terms of one training step: `loss`, and `ce`, `entropy`, `reconstruction`,
        `reconstruction_l{l}` for the terms that are on (see `terms`; `unlabeled_scale`
        multiplies the entropy and reconstruction terms in `loss`, for a ramp-up).

        Labeled rows first, then unlabeled rows, in ONE forward pass. Why one pass: it is one
        network call instead of two, and with BatchNorm in training mode both streams are
        normalised with the same statistics, those of the mixed batch (B labeled + μB unlabeled
        examples, mostly the unlabeled pool, i.e. close to the training distribution), which are
        also what the running statistics used at evaluation accumulate. Two separate passes would
        normalise the few labeled examples with their own, noisier statistics and update the
        running statistics twice per step. The price: BatchNorm makes each row's output depend
        on the other rows, so the templates are exact per-example region templates only in eval
        mode (see `reconstructions`).
        """
        if self.uses_unlabeled:
            if unlabeled_inputs is None:
                raise ValueError(
                    "unlabeled_inputs is required: the entropy and reconstruction terms are "
                    "computed on the unlabeled batch (set both weights to 0 for supervised only)"
                )
            if unlabeled_inputs.shape[1:] != labeled_inputs.shape[1:]:
                raise ValueError(
                    f"labeled and unlabeled examples differ in shape: labeled_inputs "
                    f"{tuple(labeled_inputs.shape)}, unlabeled_inputs {tuple(unlabeled_inputs.shape)}"
                )
            inputs = torch.cat([labeled_inputs, unlabeled_inputs])
        else:
            inputs = labeled_inputs
        if not self.uses_reconstruction:
            return self.terms(backbone(inputs), labeled_targets, unlabeled_scale=unlabeled_scale)
        # The input is level 0: a fresh leaf that requires grad, whatever the batch tensor was.
        inputs = inputs.detach().requires_grad_(True)
        if self.scales == "input":
            return self.terms(backbone(inputs), labeled_targets, [inputs], unlabeled_scale)
        logits, features = backbone.forward_with_features(inputs)
        return self.terms(logits, labeled_targets, features, unlabeled_scale)

    def terms(
        self,
        logits: Tensor,
        labeled_targets: Tensor,
        features: Sequence[Tensor] | None = None,
        unlabeled_scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """The loss terms from a forward pass already made (labeled rows first).

        Args:
            logits: `[N, C]`, the first `len(labeled_targets)` rows labeled, the rest unlabeled.
            labeled_targets: `[B]` class indices of the labeled rows.
            features: the levels of the same forward pass (`features[0]` the input, requiring
                grad); required when a reconstruction weight is non-zero. With
                `scales="input"` only `features[0]` is used.
            unlabeled_scale: `s ≥ 0`, a factor on the entropy and reconstruction terms in
                `loss` (a ramp-up schedule, `sigmoid_rampup`); the returned terms are unscaled.

        Returns:
            `ce` (mean over labeled rows), `entropy` (mean over unlabeled rows, nats),
            `reconstruction_l{l}` (mean over all rows of `‖z_l − ẑ_l‖²`, unweighted),
            `reconstruction` (`Σ_l β_R^(l)·reconstruction_l{l}`), and
            `loss = β_CE·ce + s·(β_E·entropy + reconstruction)`; switched-off terms are absent.
        """
        if not 0 <= unlabeled_scale < math.inf:
            raise ValueError(f"unlabeled_scale must be a finite number >= 0, got {unlabeled_scale}")
        num_classes = self._check_logits(logits, labeled_targets)
        num_labeled = labeled_targets.shape[0]
        scores = at_least_float32(logits)
        result: dict[str, Tensor] = {}
        total = scores.new_zeros(())
        if self.ce_weight:
            result["ce"] = F.cross_entropy(scores[:num_labeled], labeled_targets.long())
            total = total + self.ce_weight * result["ce"]
        if self.uses_entropy:
            if logits.shape[0] == num_labeled:
                raise ValueError(
                    f"the entropy term needs unlabeled rows after the {num_labeled} labeled ones, "
                    f"but logits has {logits.shape[0]} rows"
                )
            result["entropy"] = entropy_from_logits(scores[num_labeled:]).mean()
            weight = self.entropy_weight
            weight = default_entropy_weight(num_classes) if weight is None else weight
            total = total + unlabeled_scale * weight * result["entropy"]
        if self.uses_reconstruction:
            reconstruction_terms = self._reconstruction_terms(logits, labeled_targets, features)
            result.update(reconstruction_terms)
            total = total + unlabeled_scale * reconstruction_terms["reconstruction"]
        result["loss"] = total
        return result

    def template_targets(self, logits: Tensor, labeled_targets: Tensor) -> Tensor:
        """ŷ per row, `[N, C]`, detached: one-hot labels, then the unlabeled rows' predictions."""
        num_classes = logits.shape[1]
        num_labeled = labeled_targets.shape[0]
        scores = at_least_float32(logits.detach())
        labeled = F.one_hot(labeled_targets.long(), num_classes).to(scores.dtype)
        unlabeled_scores = scores[num_labeled:]
        if self.unlabeled_template == "argmax":
            unlabeled = F.one_hot(unlabeled_scores.argmax(dim=1), num_classes).to(scores.dtype)
        else:
            unlabeled = unlabeled_scores.softmax(dim=1)
        return torch.cat([labeled, unlabeled])

    def level_weights(self, level_sizes: Sequence[int]) -> list[float]:
        """β_R^(l) for the reconstructed levels of `level_sizes` values per example each (times
        `reconstruction_scale`)."""
        return [self.reconstruction_scale * weight for weight in self._level_weights(level_sizes)]

    def _level_weights(self, level_sizes: Sequence[int]) -> list[float]:
        weights = self.reconstruction_weights
        if weights is None:
            return default_reconstruction_weights(level_sizes)
        if isinstance(weights, float):
            return [weights] * len(level_sizes)
        if len(weights) != len(level_sizes):
            raise ValueError(
                f"reconstruction_weights lists {len(weights)} weights but the backbone exposes "
                f"{len(level_sizes)} levels to reconstruct (scales={self.scales!r}); give one "
                "weight per level, one number for all, or null for 1/(L·D^(l))"
            )
        return list(weights)

    def _reconstruction_terms(
        self, logits: Tensor, labeled_targets: Tensor, features: Sequence[Tensor] | None
    ) -> dict[str, Tensor]:
        if features is None or len(features) == 0:
            raise ValueError(
                "the reconstruction term needs the features of the forward pass "
                "(backbone.forward_with_features(inputs.requires_grad_()))"
            )
        levels = list(features) if self.scales == "multiscale" else [features[0]]
        for index, level in enumerate(levels):
            if level.dim() == 0 or level.shape[0] != logits.shape[0]:
                raise ValueError(
                    f"features[{index}] has shape {tuple(level.shape)}; every level needs one "
                    f"row per logits row ({logits.shape[0]})"
                )
        weights = self.level_weights([level[0].numel() for level in levels])
        active = [index for index, weight in enumerate(weights) if weight != 0]
        templates = reconstructions(
            logits,
            [levels[index] for index in active],
            self.template_targets(logits, labeled_targets),
        )
        result: dict[str, Tensor] = {}
        weighted = at_least_float32(logits).new_zeros(())
        for index, template in zip(active, templates, strict=True):
            error = _squared_error(levels[index], template)
            result[f"reconstruction_l{index}"] = error
            weighted = weighted + weights[index] * error
        result["reconstruction"] = weighted
        return result

    @staticmethod
    def _check_logits(logits: Tensor, labeled_targets: Tensor) -> int:
        if logits.dim() != 2 or logits.shape[1] < 2:
            raise ValueError(f"logits must be [N, C] with C >= 2, got shape {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
        num_classes = logits.shape[1]
        check_class_indices(labeled_targets, num_classes)
        if labeled_targets.shape[0] > logits.shape[0]:
            raise ValueError(
                f"{labeled_targets.shape[0]} labeled targets but only {logits.shape[0]} logits rows"
            )
        return num_classes


def _squared_error(level: Tensor, template: Tensor) -> Tensor:
    """Batch mean of the per-example `‖z − ẑ‖²`, summed over the level's dimensions."""
    difference = at_least_float32(level) - at_least_float32(template)
    return difference.pow(2).flatten(1).sum(dim=1).mean()
