"""White-box attacks through the surrogate gradient on f(x) = mean_t logits (torchattacks-style)."""
from .base import Attack
from .gaussian import GaussianNoise
from .pgd import PGD
from .rfgsm import RFGSM

__all__ = ["Attack", "GaussianNoise", "PGD", "RFGSM"]
