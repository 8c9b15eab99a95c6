"""Min-max loss: pull samples to the learned embedding of each of their tags, push class embeddings apart.

Source: Pawan's blog post "Min-Max Loss, Revisiting Classification Losses" (a continuation of his
"Partial Tagged Data Classification" post). The objective, with a distance D, a feature encoder f
and a class-embedding table E (one row per class):

    min  Σ_{x tagged c} D(f(x), E_c)  −  Σ_{i≠j} D(E_i, E_j)
    s.t. Σ_{i≠j} D(E_i, E_j) ≤ K        (the post's "norm constraint", for unbounded distances)

The push is *class against class*: samples are never pushed away from classes. A sample tagged
sometimes c and sometimes c' (the partially tagged "common" points) is pulled toward both
embeddings and may end up close to both.

Two forms:

- ``sampled`` — the post's supervised set-up: for each (sample, tag) pair two outputs,
  ``s(f(x), E_tag)`` trained to ``pull_target`` (+1) and ``s(E_other, E_tag)`` trained to
  ``push_target`` (−1) with a squared error each (Keras ``MeanSquaredError`` on both outputs,
  summed), where ``s`` is the similarity (cosine; ``−D`` for the other distances) times
  ``similarity_scale``. ``other`` is a class drawn uniformly among the classes that are *not*
  tags of the sample (the post draws it among the classes other than the sample's hidden
  original class, so a common point can get its own tag as "negative"; we do not).
- ``full`` — the objective above without sampling: the pull over every tag of every sample and
  the push over every ordered pair of classes (averaged), ``pull − push_weight · push``.

Push target and C ≥ 3 classes (docs/minmax.md, "Three or more tags"). The post's target −1 is
reachable only for two classes: C unit vectors have `Σ_{i≠j} cos(E_i, E_j) = ‖Σ_i Ê_i‖² − C ≥ −C`,
so their mean pairwise cosine is at least ``−1/(C−1)``, reached by the regular simplex (any
dimension ≥ C−1). With the target −1 and C ≥ 3 the push is never satisfied: the centred simplex
(``Σ_i Ê_i = 0``) is where it settles, and there the C cosines of *any* feature sum to 0, so no
point can be positive for all of them. The common points' pull lifts the table off that
simplex (towards their own direction), but the push resists with ``2(cos + 1) ≈ 1`` per pair,
so the lift stays small (measured: cos ≈ −0.46 for C = 3) and the common points end near cos 0
with all their tags on a knife edge. ``push_target="simplex"`` uses ``−1/(C−1)`` instead: the
most separated reachable configuration, whose resistance ``2(cos + 1/(C−1))`` vanishes there,
as the post's −1 does for C = 2 (where the pull and the push balance at cos −0.81). For C = 2 it
*is* −1, so the two-tag case is the post's loss unchanged.

Distances (``DISTANCES``), all ``D(a, b)`` of two rows:

- ``cosine``: ``1 − cos(a, b)`` in [0, 2] (bounded: needs no constraint).
- ``l2``: squared Euclidean ``‖a − b‖²`` (squared, so that a sample pulled toward several
  embeddings settles at their mean; the plain norm is minimised anywhere between two of them).
- ``l1``: ``Σ_k |a_k − b_k|``.
- ``kl``: ``KL(softmax(a) ‖ softmax(b))``, rows read as logits. Although probabilistic, it is
  unbounded (it grows without limit as the logits of two rows separate), so unlike the post's
  remark it needs the constraint too.

The constraint (``l2``, ``l1``, ``kl``): ``projection`` scales the class embeddings about their
mean, ``E_c ← Ē + α (E_c − Ē)`` with the largest α ≤ 1 found such that the spread
``Σ_{i≠j} D(E_i, E_j) ≤ K`` (closed form for ``l2`` and ``l1``, which scale as α² and α;
bisection for ``kl``; in every case the result is checked, so the bound holds exactly after
each call). ``penalty`` adds ``penalty_weight · max(0, spread − K)²`` to the loss instead
(the bound is then only approached, not guaranteed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DISTANCES = ("cosine", "l2", "l1", "kl")
FORMS = ("sampled", "full")
#: Named push targets of the sampled form (a number is used as given).
PUSH_TARGETS = ("simplex",)
CONSTRAINTS = ("none", "projection", "penalty")
#: Distances whose spread Σ D(E_i, E_j) is unbounded, so the push needs the constraint.
UNBOUNDED_DISTANCES = ("l2", "l1", "kl")
COSINE_EPS = 1e-8


def simplex_cosine(num_classes: int) -> float:
    """`−1/(C−1)`: the pairwise cosine of C unit vectors spread as a regular simplex.

    The lowest mean pairwise cosine C unit vectors can have (`‖Σ Ê_i‖² ≥ 0`), hence the most
    separated class table that exists; −1 for two classes (the post's target).
    """
    if num_classes < 2:
        raise ValueError(f"a simplex needs at least 2 classes, got {num_classes}")
    return -1.0 / (num_classes - 1)


def resolve_push_target(push_target: float | str, num_classes: int) -> float:
    """The push target as a number: `"simplex"` gives `simplex_cosine(C)`, a number is kept."""
    if isinstance(push_target, str):
        if push_target not in PUSH_TARGETS:
            raise ValueError(
                f"method.loss.push_target={push_target!r} is unknown; allowed: a number or "
                f"{', '.join(PUSH_TARGETS)}"
            )
        return simplex_cosine(num_classes)
    return float(push_target)


def check_distance(distance: str, key: str = "distance") -> str:
    if distance not in DISTANCES:
        raise ValueError(f"{key}={distance!r} is unknown; allowed: {', '.join(DISTANCES)}")
    return distance


def paired_distance(first: Tensor, second: Tensor, distance: str) -> Tensor:
    """`D(first[n], second[n])` for rows `[N, D]` of both -> `[N]`."""
    check_distance(distance)
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(first, second, dim=-1, eps=COSINE_EPS)
    if distance == "l2":
        return (first - second).pow(2).sum(dim=-1)
    if distance == "l1":
        return (first - second).abs().sum(dim=-1)
    log_p, log_q = first.log_softmax(dim=-1), second.log_softmax(dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def pairwise_distance(first: Tensor, second: Tensor, distance: str) -> Tensor:
    """`D(first[n], second[m])` for every pair of rows: `[N, D] x [M, D] -> [N, M]`."""
    check_distance(distance)
    if distance == "cosine":
        first_unit = first / first.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)
        second_unit = second / second.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)
        return 1.0 - first_unit @ second_unit.T
    if distance == "kl":
        log_p, log_q = first.log_softmax(dim=-1), second.log_softmax(dim=-1)
        p = log_p.exp()
        return (p * log_p).sum(dim=-1, keepdim=True) - p @ log_q.T
    difference = first[:, None, :] - second[None, :, :]
    if distance == "l2":
        return difference.pow(2).sum(dim=-1)
    return difference.abs().sum(dim=-1)


def similarity_from_distance(distances: Tensor, distance: str) -> Tensor:
    """The similarity the sampled form and the tag rule use: cosine itself, else `−D`."""
    return 1.0 - distances if distance == "cosine" else -distances


def class_spread(class_embeddings: Tensor, distance: str) -> Tensor:
    """`Σ_{i≠j} D(E_i, E_j)` over ordered pairs of distinct classes (the constrained quantity)."""
    distances = pairwise_distance(class_embeddings, class_embeddings, distance)
    off_diagonal = ~torch.eye(len(class_embeddings), dtype=torch.bool, device=distances.device)
    return distances[off_diagonal].sum()


def as_multi_hot(tags: Tensor, num_classes: int) -> Tensor:
    """Tags as a float multi-hot `[N, C]`: accepts class indices `[N]` or a 0/1 matrix `[N, C]`.

    Raises ValueError when an index lies outside [0, C), the matrix has another width than
    C or holds values other than 0 and 1, or a sample has no tag.
    """
    if tags.dim() == 1:
        if tags.is_floating_point() or tags.dtype == torch.bool:
            raise TypeError(f"tag indices [N] must be integers, got {tags.dtype}")
        if tags.numel() and (int(tags.min()) < 0 or int(tags.max()) >= num_classes):
            raise ValueError(
                f"tags must be class indices in [0, {num_classes}) for {num_classes} classes; "
                f"got min {int(tags.min())} and max {int(tags.max())}"
            )
        return F.one_hot(tags.long(), num_classes).float()
    if tags.dim() != 2 or tags.shape[1] != num_classes:
        raise ValueError(
            f"multi-hot tags must be [N, {num_classes}] (one column per class), got shape "
            f"{tuple(tags.shape)}; tags outside the class range cannot be represented"
        )
    multi_hot = tags.float()
    if not torch.all((multi_hot == 0) | (multi_hot == 1)):
        raise ValueError("multi-hot tags must hold only 0 and 1")
    if multi_hot.numel() and bool((multi_hot.sum(dim=1) == 0).any()):
        raise ValueError("every sample needs at least one tag (a row of the tag matrix is all 0)")
    return multi_hot


def sample_negative_classes(tags: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """For each row of multi-hot `tags [P, C]`: a class drawn uniformly among its *non*-tags.

    Returns `[P]` int64, −1 for rows tagged with every class (no negative exists).
    """
    candidates = 1.0 - tags.float()
    has_negative = candidates.sum(dim=1) > 0
    negatives = torch.full((tags.shape[0],), -1, dtype=torch.long, device=tags.device)
    if bool(has_negative.any()):
        drawn = torch.multinomial(candidates[has_negative], 1, generator=generator).squeeze(1)
        negatives[has_negative] = drawn
    return negatives


def sampled_minmax_terms(
    features: Tensor,
    class_embeddings: Tensor,
    tags: Tensor,
    negatives: Tensor,
    distance: str = "cosine",
    pull_target: float = 1.0,
    push_target: float = -1.0,
    similarity_scale: float = 1.0,
) -> dict[str, Tensor]:
    """The post's two MSE outputs over every (sample, tag) pair.

    Args:
        features: `f(x)`, `[N, D]`.
        class_embeddings: `E`, `[C, D]`.
        tags: multi-hot `[N, C]` (or indices `[N]`).
        negatives: one class per (sample, tag) pair, in the row-major order of
            `tags.nonzero()` (`sample_negative_classes(tags[rows])`), −1 where none exists.

    Returns `pull` = mean `(scale·s(f(x), E_tag) − pull_target)²` and `push` = mean
    `(scale·s(E_neg, E_tag) − push_target)²` (over pairs that have a negative; 0 if none).
    """
    tags = as_multi_hot(tags, class_embeddings.shape[0])
    rows, tag_classes = tags.nonzero(as_tuple=True)
    if negatives.shape != rows.shape:
        raise ValueError(
            f"need one negative per (sample, tag) pair: {rows.numel()} pairs, got negatives "
            f"{tuple(negatives.shape)}"
        )
    tag_embeddings = class_embeddings[tag_classes]
    pull_similarity = similarity_from_distance(
        paired_distance(features[rows], tag_embeddings, distance), distance
    )
    pull = (similarity_scale * pull_similarity - pull_target).pow(2).mean()
    has_negative = negatives >= 0
    if bool(has_negative.any()):
        push_similarity = similarity_from_distance(
            paired_distance(
                class_embeddings[negatives[has_negative]], tag_embeddings[has_negative], distance
            ),
            distance,
        )
        push = (similarity_scale * push_similarity - push_target).pow(2).mean()
    else:
        push = pull.new_zeros(())
    return {"pull": pull, "push": push}


def full_minmax_terms(
    features: Tensor, class_embeddings: Tensor, tags: Tensor, distance: str = "cosine"
) -> dict[str, Tensor]:
    """The objective without sampling.

    `pull` = `(1/N) Σ_n Σ_{c ∈ tags(n)} D(f(x_n), E_c)`; `push` = the mean of `D(E_i, E_j)`
    over the `C(C−1)` ordered pairs of distinct classes (to be *maximised*).
    """
    num_classes = class_embeddings.shape[0]
    tags = as_multi_hot(tags, num_classes)
    distances = pairwise_distance(features, class_embeddings, distance)
    pull = (distances * tags).sum() / features.shape[0]
    push = class_spread(class_embeddings, distance) / (num_classes * (num_classes - 1))
    return {"pull": pull, "push": push}


def spread_penalty(class_embeddings: Tensor, distance: str, bound: float) -> Tensor:
    """`max(0, Σ_{i≠j} D(E_i, E_j) − K)²`."""
    return F.relu(class_spread(class_embeddings, distance) - bound).pow(2)


@torch.no_grad()
def project_class_embeddings(
    class_embeddings: Tensor, distance: str, bound: float, bisection_steps: int = 50
) -> float:
    """Scale the rows about their mean, in place, until `Σ_{i≠j} D(E_i, E_j) ≤ bound`.

    Returns the factor α applied (1.0 when the bound already held). `l2` spreads scale as α²
    and `l1` spreads as α, so α has a closed form; `kl` is bisected on [0, 1] keeping the
    feasible end (α = 0 makes all rows equal, spread 0). The result is verified and α shrunk
    further if rounding left the spread above the bound, so the bound holds on return.
    """
    if distance not in UNBOUNDED_DISTANCES:
        raise ValueError(
            f"projection is defined for {', '.join(UNBOUNDED_DISTANCES)}, got {distance!r}"
        )
    if not bound > 0:
        raise ValueError(f"the bound K must be > 0, got {bound}")
    spread = float(class_spread(class_embeddings, distance))
    if spread <= bound:
        return 1.0
    mean = class_embeddings.mean(dim=0, keepdim=True)
    centered = class_embeddings - mean

    def spread_at(alpha: float) -> float:
        return float(class_spread(mean + alpha * centered, distance))

    if distance == "l2":
        alpha = math.sqrt(bound / spread)
    elif distance == "l1":
        alpha = bound / spread
    else:
        low, high = 0.0, 1.0
        for _ in range(bisection_steps):
            middle = 0.5 * (low + high)
            if spread_at(middle) <= bound:
                low = middle
            else:
                high = middle
        alpha = low
    while alpha > 0 and spread_at(alpha) > bound:
        alpha *= 1.0 - 1e-6
    class_embeddings.copy_(mean + alpha * centered)
    return alpha


class MinMaxLoss(nn.Module):
    """The min-max loss of a batch, configured once (see the module docstring).

    Args:
        distance: one of `DISTANCES`.
        form: `"sampled"` (the post's two MSE outputs) or `"full"` (all tags, all class pairs).
        push_weight: weight of the push term (sampled: of its MSE; full: of the mean spread).
        pull_target: sampled form, target of the scaled sample-tag similarity (post: +1).
        push_target: sampled form, target of the scaled class-class similarity: a number (post:
            −1) or `"simplex"`, `−1/(C−1)` for C classes (equal to −1 for two; with cosine the
            only reachable "as far apart as possible" for C ≥ 3, see the module docstring).
        similarity_scale: sampled form, factor on the similarities before the MSE (post: 1).
        constraint: `"none"`, `"projection"` (the method calls `project` after every optimizer
            step) or `"penalty"` (added to the loss here).
        constraint_bound: K of `Σ_{i≠j} D(E_i, E_j) ≤ K` (must be > 0).
        penalty_weight: factor of the penalty term.
    """

    def __init__(
        self,
        distance: str = "cosine",
        form: str = "sampled",
        push_weight: float = 1.0,
        pull_target: float = 1.0,
        push_target: float | str = -1.0,
        similarity_scale: float = 1.0,
        constraint: str = "none",
        constraint_bound: float = 1.0,
        penalty_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.distance = check_distance(distance, "method.loss.distance")
        if form not in FORMS:
            raise ValueError(f"method.loss.form={form!r} is unknown; allowed: {', '.join(FORMS)}")
        if constraint not in CONSTRAINTS:
            raise ValueError(
                f"method.loss.constraint={constraint!r} is unknown; allowed: {', '.join(CONSTRAINTS)}"
            )
        if not (isinstance(constraint_bound, int | float) and constraint_bound > 0):
            raise ValueError(
                f"method.loss.constraint_bound (K) must be > 0, got {constraint_bound!r}"
            )
        for key, value in (("push_weight", push_weight), ("penalty_weight", penalty_weight)):
            if not value >= 0:
                raise ValueError(f"method.loss.{key} must be >= 0, got {value!r}")
        if constraint != "none" and distance == "cosine":
            raise ValueError(
                f"method.loss.constraint={constraint!r} with distance='cosine': the cosine distance "
                "is bounded (1 - cos <= 2), the constraint is for l2, l1 and kl; set constraint=none"
            )
        if isinstance(push_target, str) and form == "sampled" and distance != "cosine":
            raise ValueError(
                f"method.loss.push_target={push_target!r} is a cosine (−1/(C−1)) and needs "
                f"distance='cosine', got distance={distance!r}; give a number instead"
            )
        if (
            form == "full"
            and distance in UNBOUNDED_DISTANCES
            and constraint == "none"
            and push_weight > 0
        ):
            raise ValueError(
                f"method.loss.constraint='none' with form='full' and distance={distance!r}: the "
                "push term is unbounded and training diverges; use constraint=projection or penalty"
            )
        self.form = form
        self.push_weight = float(push_weight)
        self.pull_target = float(pull_target)
        resolve_push_target(push_target, 2)  # checks a name early
        self.push_target = push_target if isinstance(push_target, str) else float(push_target)
        self.similarity_scale = float(similarity_scale)
        self.constraint = constraint
        self.constraint_bound = float(constraint_bound)
        self.penalty_weight = float(penalty_weight)

    def extra_repr(self) -> str:
        return (
            f"distance={self.distance!r}, form={self.form!r}, push_weight={self.push_weight}, "
            f"push_target={self.push_target!r}, "
            f"constraint={self.constraint!r}, constraint_bound={self.constraint_bound}"
        )

    def similarities(self, features: Tensor, class_embeddings: Tensor) -> Tensor:
        """`[N, C]` similarity of every sample to every class (cosine, or `−D`)."""
        return similarity_from_distance(
            pairwise_distance(features, class_embeddings, self.distance), self.distance
        )

    def forward(
        self,
        features: Tensor,
        class_embeddings: Tensor,
        tags: Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Loss terms of a batch: `loss` (what is minimised), `pull`, `push` and `penalty`."""
        if features.dim() != 2 or class_embeddings.dim() != 2:
            raise ValueError(
                f"features must be [N, D] and class embeddings [C, D], got {tuple(features.shape)} "
                f"and {tuple(class_embeddings.shape)}"
            )
        if features.shape[1] != class_embeddings.shape[1]:
            raise ValueError(
                f"feature width {features.shape[1]} differs from the class embedding width "
                f"{class_embeddings.shape[1]}"
            )
        tags = as_multi_hot(tags, class_embeddings.shape[0])
        if tags.shape[0] != features.shape[0]:
            raise ValueError(f"{features.shape[0]} samples but {tags.shape[0]} rows of tags")
        if self.form == "sampled":
            rows, _ = tags.nonzero(as_tuple=True)
            negatives = sample_negative_classes(tags[rows], generator)
            terms = sampled_minmax_terms(
                features,
                class_embeddings,
                tags,
                negatives,
                self.distance,
                self.pull_target,
                resolve_push_target(self.push_target, class_embeddings.shape[0]),
                self.similarity_scale,
            )
            loss = terms["pull"] + self.push_weight * terms["push"]
        else:
            terms = full_minmax_terms(features, class_embeddings, tags, self.distance)
            loss = terms["pull"] - self.push_weight * terms["push"]
        penalty = loss.new_zeros(())
        if self.constraint == "penalty":
            penalty = spread_penalty(class_embeddings, self.distance, self.constraint_bound)
            loss = loss + self.penalty_weight * penalty
        return {"loss": loss, **terms, "penalty": penalty}

    def project(self, class_embeddings: Tensor) -> float:
        """Enforce the bound in place when `constraint="projection"`; returns the factor applied."""
        if self.constraint != "projection":
            return 1.0
        return project_class_embeddings(class_embeddings, self.distance, self.constraint_bound)


def soft_target_cross_entropy(logits: Tensor, tags: Tensor) -> Tensor:
    """Softmax cross-entropy against the uniform distribution over each sample's tags.

    The softmax baseline of the partial-tag posts; with one tag per sample this is the usual
    cross-entropy of that tag.
    """
    tags = as_multi_hot(tags, logits.shape[1])
    return F.cross_entropy(logits, tags / tags.sum(dim=1, keepdim=True))


def assume_negative_bce(logits: Tensor, tags: Tensor) -> Tensor:
    """One-vs-rest sigmoid BCE where every class that is not a tag counts as a negative.

    The "assume negative" baseline of single-positive multi-label learning (Cole et al.,
    CVPR 2021), the BCE baseline of the partial-tag post; mean over the N·C terms.
    """
    tags = as_multi_hot(tags, logits.shape[1])
    return F.binary_cross_entropy_with_logits(logits, tags)
