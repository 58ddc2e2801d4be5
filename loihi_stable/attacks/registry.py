"""Attack names used on the command line and in suite files, and the standard suite."""
from __future__ import annotations

import inspect
import json
import math
import re
import typing
from pathlib import Path

from .. import schema
from ..errors import UserError
from ..budget import check_eps, read_fraction
from .. import surrogates
from .adaptive import AdaptiveSurrogate
from .apgd import APGD
from .apgd_targeted import APGDT
from .fab import FABT
from .fgsm import FGSM
from .gaussian import GaussianNoise
from .pgd import PGD
from .square import Square

# the columns of the paper's Table 1 (APGD with torchattacks' 10 steps, as the paper ran it), plus Gaussian noise
STANDARD_SUITE = ["fgsm", "pgd7", "pgd10", "pgd20", "pgd40", "apgd-ce", "apgd-dlr", "gaussian"]
# AutoAttack's standard L-inf evaluation (Croce & Hein 2020), each attack on the samples the previous
# ones left robust; "fast" is a shorter cascade at a fraction of the cost (CI, quick looks; no FAB-T)
AUTOATTACK_SUITE = ["apgd-ce100", "apgd-t", "fab-t", "square"]
# the default: AutoAttack's cascade, then APGD-CE/DLR/T through the spike backwards a per-model search
# finds strongest (AutoAttack differentiates only through the training surrogate, the weakest setting)
SNN_ADAPTIVE_SUITE = [*AUTOATTACK_SUITE, "adaptive"]
FAST_SUITE = ["apgd-ce20", {"name": "apgd-t20", "type": "apgd-t", "steps": 20, "n_target_classes": 3}, "square500"]
SUITES = {"snn-adaptive": SNN_ADAPTIVE_SUITE, "standard": STANDARD_SUITE, "autoattack": AUTOATTACK_SUITE,
          "fast": FAST_SUITE}
DEFAULT_SUITE = "snn-adaptive"
CASCADE_SUITES = ("snn-adaptive", "autoattack", "fast")  # only the worst case per sample counts: attack what is still robust
ATTACK_CLASSES = {"fgsm": FGSM, "pgd": PGD, "apgd": APGD, "apgd-t": APGDT, "fab-t": FABT, "square": Square,
                  "gaussian": GaussianNoise, "adaptive": AdaptiveSurrogate}  # the 'type' of a suite-file entry
KINDS = tuple(ATTACK_CLASSES)


ATTACK_NAMES = ("fgsm, pgd<steps> (e.g. pgd10), apgd-ce[steps], apgd-dlr[steps], apgd-t[steps], fab-t[steps], "
                "square[queries], gaussian or adaptive[steps]; a gradient attack through another spike backward "
                "as <attack>@<shape>[:sharpness][:detach], e.g. apgd-ce100@sigmoid:4 (shapes: "
                f"{', '.join(surrogates.SHAPES)})")
MAX_STEPS = 10_000           # an attack of more iterations is a typo, not an evaluation
COUNTS = ("steps", "n_restarts", "n_queries", "n_target_classes", "search_steps", "calibration", "top_k",
          "restart_backwards")


def make_attack(spec: str | dict, model, eps: float):
    """'fgsm', 'pgd<k>', 'apgd-ce', 'apgd-dlr', 'gaussian', or a dict {name, type, ...options}."""
    if not isinstance(spec, (str, dict)):
        raise UserError(f"suite entry {spec!r} is neither an attack name nor a mapping {{name, type, ...}}")
    try:
        if isinstance(spec, str) and "@" in spec:  # 'apgd-ce100@sigmoid:4': an attack through a chosen backward
            return _through(spec, model, eps)
        return _make_attack(spec, model, eps)
    except ValueError as err:
        raise UserError(f"attack '{spec if isinstance(spec, str) else spec.get('name', '?')}': {err}") from None


def _through(spec: str, model, eps: float):
    attack_name, surrogate = spec.split("@", 1)
    backward = surrogates.parse(surrogate)  # a ValueError names what is wrong with it
    _, attack = _make_attack(attack_name, model, eps)
    if not hasattr(attack, "backward") or isinstance(attack, (Square, GaussianNoise, AdaptiveSurrogate)):
        raise ValueError(f"'{attack_name}' uses no gradient (or chooses its own backwards): drop '@{surrogate}'")
    attack.backward = backward
    return spec.lower(), attack


def _checked_options(options: dict) -> dict:
    """Suite-file numbers: finite, eps in [0, 1], step sizes positive, counts in [1, MAX_STEPS]."""
    checked = {}
    for key, value in options.items():
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if key in COUNTS or key in ("eps", "alpha", "rho", "start", "p_init"):
                raise ValueError(f"'{key}' must be a number, got {value!r}")
            checked[key] = value
            continue
        if not math.isfinite(value):
            raise ValueError(f"'{key}' must be finite, got {value}")
        if key in COUNTS and not (float(value).is_integer() and 1 <= value <= MAX_STEPS):
            raise ValueError(f"'{key}' must be a whole number in [1, {MAX_STEPS}], got {value}")
        if key == "eps":
            check_eps(value)
        if key == "alpha" and value <= 0:
            raise ValueError(f"alpha (the step size) must be positive, got {value}")
        checked[key] = int(value) if key in COUNTS else value
    return checked


def _make_attack(spec: str | dict, model, eps: float):
    if isinstance(spec, str):
        name = spec.lower()
        if name == "fgsm":
            return name, FGSM(model, eps=eps)
        if match := re.fullmatch(r"pgd(\d+)", name):
            steps = int(match.group(1))
            if not 1 <= steps <= MAX_STEPS:
                raise UserError(f"attack '{spec}': PGD takes 1 to {MAX_STEPS} steps (e.g. pgd10)")
            return name, PGD(model, eps=eps, steps=steps)
        if match := re.fullmatch(r"apgd-(ce|dlr)(\d*)", name):
            return name, APGD(model, eps=eps, loss=match.group(1), steps=_steps(spec, match.group(2), 10))
        if match := re.fullmatch(r"apgd-t(\d*)", name):
            return name, APGDT(model, eps=eps, steps=_steps(spec, match.group(1), 100))
        if match := re.fullmatch(r"fab-t(\d*)", name):
            return name, FABT(model, eps=eps, steps=_steps(spec, match.group(1), 100))
        if match := re.fullmatch(r"square(\d*)", name):
            return name, Square(model, eps=eps, n_queries=_steps(spec, match.group(1), 5000))
        if name == "gaussian":
            return name, GaussianNoise(model, eps=eps)
        if match := re.fullmatch(r"adaptive(\d*)", name):
            return name, AdaptiveSurrogate(model, eps=eps, steps=_steps(spec, match.group(1), 100))
        raise UserError(f"unknown attack '{spec}': use {ATTACK_NAMES}")
    options = dict(spec)
    name, kind = options.pop("name", None), options.pop("type", None)
    if not isinstance(name, str) or not name or not isinstance(kind, str) or kind not in KINDS:
        raise UserError(f"suite entry {spec!r:.80} needs a 'name' (text) and a 'type' out of {', '.join(KINDS)}")
    options = _checked_options(options)
    options.setdefault("eps", eps)
    cls = ATTACK_CLASSES[kind]
    _check_option_types(cls, name, options)
    if "surrogate" in options:
        surrogates.parse(options["surrogate"])  # a ValueError: one line naming the entry
    try:
        return name, cls(model, **options)
    except (TypeError, ValueError) as err:
        raise UserError(f"suite entry '{name}': {err}") from None


def _check_option_types(cls, name: str, options: dict) -> None:
    """Each option is one the attack takes, of the type its constructor declares (a string where a
    number belongs, a list where a name does: one line, before any work)."""
    hints = typing.get_type_hints(cls.__init__)
    taken = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model", "logits")]
    for key, value in options.items():
        if key not in taken:
            raise UserError(f"suite entry '{name}': {cls.__name__} takes no option '{key}' (it takes {', '.join(taken)})")
        if key in hints and not schema.matches(value, hints[key]):
            raise UserError(f"suite entry '{name}': '{key}' must be {schema.describe(hints[key])}, "
                            f"got {schema.type_name(value)} {value!r:.40}")


def _steps(spec: str, digits: str, default: int) -> int:
    steps = int(digits) if digits else default
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"attack '{spec}': takes 1 to {MAX_STEPS} iterations")
    return steps


def _number(value):
    """Suite files may write step sizes and eps as '2/255'."""
    if isinstance(value, str) and re.fullmatch(r"\s*[\d.]+\s*/\s*[\d.]+\s*", value):
        return read_fraction(value)
    return value


def suite_description(name: str) -> str:
    """How strong a number from ``name`` is, said where it is printed."""
    return {"snn-adaptive": "the strong suite: AutoAttack, then APGD-CE/DLR/T through the spike backwards searched "
                            "for this model",
            "autoattack": "AutoAttack, through the training surrogate only (weaker on SNNs than snn-adaptive)",
            "fast": "a cheap suite", "standard": "the paper's Table 1 attacks"}.get(
        name, "the attacks of a suite file: as strong as they are" if Path(name).is_file() else
        "one attack, not a strong suite")


def load_suite(suite: str) -> list:
    """'standard', 'autoattack', 'fast', or a JSON/YAML file holding a list of attacks or {'attacks': [...]}."""
    if suite in SUITES:
        return list(SUITES[suite])
    path = Path(suite)
    if not path.is_file():
        raise UserError(f"suite '{suite}' is neither one of {', '.join(SUITES)} nor a JSON/YAML file that exists")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise UserError(f"suite file '{suite}' is not readable UTF-8 text ({type(err).__name__}): give a JSON or "
                        "YAML list of attacks") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        raise UserError(f"cannot parse suite file '{suite}' ({type(err).__name__}): fix its syntax") from None
    attacks = data.get("attacks") if isinstance(data, dict) else data
    if not isinstance(attacks, list) or not attacks:
        raise UserError(f"suite file '{suite}' must hold a non-empty list of attacks (or {{'attacks': [...]}})")
    return attacks
