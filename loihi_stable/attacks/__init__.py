"""White-box attacks through the surrogate gradient on f(x) = mean_t logits (torchattacks-style)."""
from .adaptive import AdaptiveSurrogate
from .apgd import APGD, dlr_loss
from .apgd_targeted import APGDT, targeted_dlr_loss
from .base import Attack
from .fab import FABT
from .fgsm import FGSM
from .gaussian import GaussianNoise
from .pgd import PGD
from .registry import CASCADE_SUITES, DEFAULT_SUITE, STANDARD_SUITE, SUITES, load_suite, make_attack
from .square import Square
from .rfgsm import RFGSM

__all__ = ["AdaptiveSurrogate", "APGD", "APGDT", "Attack", "FABT", "CASCADE_SUITES", "DEFAULT_SUITE", "FGSM", "GaussianNoise", "PGD", "RFGSM", "STANDARD_SUITE",
           "SUITES", "Square", "dlr_loss", "load_suite", "make_attack", "targeted_dlr_loss"]
