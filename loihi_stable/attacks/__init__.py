"""White-box attacks through the surrogate gradient on f(x) = mean_t logits (torchattacks-style)."""
from .apgd import APGD, dlr_loss
from .base import Attack
from .fgsm import FGSM
from .gaussian import GaussianNoise
from .pgd import PGD
from .registry import STANDARD_SUITE, load_suite, make_attack
from .rfgsm import RFGSM

__all__ = ["APGD", "Attack", "FGSM", "GaussianNoise", "PGD", "RFGSM", "STANDARD_SUITE",
           "dlr_loss", "load_suite", "make_attack"]
