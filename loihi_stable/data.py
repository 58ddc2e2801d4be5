"""Data sets kept on disk or shipped inside packages; nothing is downloaded."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

DATASETS = ("digits",)


@dataclass
class Split:
    x: torch.Tensor  # (N, features) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def head(self, limit: int | None) -> "Split":
        return self if limit is None else Split(self.x[:limit], self.y[:limit])


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], stratified split fixed by ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction,
                                              random_state=seed, stratify=y)
    as_split = lambda a, b: Split(torch.from_numpy(a), torch.from_numpy(b))  # noqa: E731
    return as_split(x_tr, y_tr), as_split(x_te, y_te)


def load_dataset(name: str) -> tuple[Split, Split]:
    if name == "digits":
        return load_digits_split()
    raise UserError(f"unknown data set '{name}': choose one of {', '.join(DATASETS)}")
