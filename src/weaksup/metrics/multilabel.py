"""Tag-set metrics for partially tagged data (predicted multi-hot tags against true tag sets).

*Common* examples are those whose true tag set has more than one tag (the partially tagged
class); *pure* examples have exactly one true tag.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class TagSetMetrics(Metric):
    """Per-class precision/recall/F1, exact match, and the partial-tag shares of a data set.

    `update(predicted [N, C] bool/0-1, true_tags [N, C] 0-1, scores [N, C])`; `compute()` returns:

    - `exact_match`: share of examples whose predicted set equals the true set;
    - `common_all_tags`: share of common examples given *all* their true tags (both, for two);
    - `common_exact`: share of common examples given exactly their true tags;
    - `pure_own_only`: share of pure examples given only their own tag (= exact match on them);
    - `top1_accuracy`: share of pure examples whose highest score is their own class (plain
      accuracy when every example is pure);
    - `precision/<c>`, `recall/<c>`, `f1/<c>` per class, and their unweighted means `macro_f1` ...;
    - `common_score/<c>`: mean score of class c over common examples (the post's figure).

    Shares over an empty group (no common examples, e.g. fully labeled data) are left out.
    """

    full_state_update = False

    def __init__(self, num_classes: int, class_names: list[str] | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = class_names or [str(c) for c in range(num_classes)]
        for name in ("true_positives", "false_positives", "false_negatives", "common_score_sum"):
            self.add_state(
                name, default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum"
            )
        for name in (
            "total",
            "exact",
            "common_total",
            "common_all",
            "common_exact",
            "pure_total",
            "pure_exact",
            "pure_top1",
        ):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, true_tags: Tensor, scores: Tensor) -> None:
        if predicted.shape != true_tags.shape or predicted.shape != scores.shape:
            raise ValueError(
                f"predicted {tuple(predicted.shape)}, true_tags {tuple(true_tags.shape)} and scores "
                f"{tuple(scores.shape)} must all be [N, {self.num_classes}]"
            )
        if predicted.dim() != 2 or predicted.shape[1] != self.num_classes:
            raise ValueError(f"expected [N, {self.num_classes}] tags, got {tuple(predicted.shape)}")
        predicted = predicted.bool()
        truth = true_tags.bool()
        self.true_positives += (predicted & truth).sum(dim=0).double()
        self.false_positives += (predicted & ~truth).sum(dim=0).double()
        self.false_negatives += (~predicted & truth).sum(dim=0).double()
        exact = (predicted == truth).all(dim=1)
        common = truth.sum(dim=1) > 1
        all_true_given = (predicted | ~truth).all(dim=1)
        self.total += len(predicted)
        self.exact += exact.sum().double()
        self.common_total += common.sum().double()
        self.common_all += (all_true_given & common).sum().double()
        self.common_exact += (exact & common).sum().double()
        self.pure_total += (~common).sum().double()
        self.pure_exact += (exact & ~common).sum().double()
        self.common_score_sum += scores[common].double().sum(dim=0)
        top1 = truth.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)
        self.pure_top1 += (top1 & ~common).sum().double()

    def compute(self) -> dict[str, Tensor]:
        def share(count: Tensor, total: Tensor) -> Tensor | None:
            return (count / total).float() if total > 0 else None

        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.zeros_like(tp))
        f1 = torch.where(
            precision + recall > 0,
            2 * precision * recall / (precision + recall).clamp_min(1e-12),
            torch.zeros_like(tp),
        )
        results = {
            "exact_match": share(self.exact, self.total),
            "common_all_tags": share(self.common_all, self.common_total),
            "common_exact": share(self.common_exact, self.common_total),
            "pure_own_only": share(self.pure_exact, self.pure_total),
            "top1_accuracy": share(self.pure_top1, self.pure_total),
            "macro_precision": precision.mean().float(),
            "macro_recall": recall.mean().float(),
            "macro_f1": f1.mean().float(),
        }
        for index, name in enumerate(self.class_names):
            results[f"precision/{name}"] = precision[index].float()
            results[f"recall/{name}"] = recall[index].float()
            results[f"f1/{name}"] = f1[index].float()
            if self.common_total > 0:
                results[f"common_score/{name}"] = (
                    self.common_score_sum[index] / self.common_total
                ).float()
        return {name: value for name, value in results.items() if value is not None}
