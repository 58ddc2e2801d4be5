"""Attack names used on the command line and in suite files, and the standard suite."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UserError
from ..budget import read_fraction
from .apgd import APGD
from .fgsm import FGSM
from .gaussian import GaussianNoise
from .pgd import PGD

# the columns of the paper's Table 1, plus Gaussian noise
STANDARD_SUITE = ["fgsm", "pgd7", "pgd10", "pgd20", "pgd40", "apgd-ce", "apgd-dlr", "gaussian"]
KINDS = ("fgsm", "pgd", "apgd", "gaussian")


def make_attack(spec: str | dict, model, eps: float):
    """'fgsm', 'pgd<k>', 'apgd-ce', 'apgd-dlr', 'gaussian', or a dict {name, type, ...options}."""
    if isinstance(spec, str):
        name = spec.lower()
        if name == "fgsm":
            return name, FGSM(model, eps=eps)
        if match := re.fullmatch(r"pgd(\d+)", name):
            return name, PGD(model, eps=eps, steps=int(match.group(1)))
        if name in ("apgd-ce", "apgd-dlr"):
            return name, APGD(model, eps=eps, loss=name.split("-")[1])
        if name == "gaussian":
            return name, GaussianNoise(model, eps=eps)
        raise UserError(f"unknown attack '{spec}': use fgsm, pgd<steps> (e.g. pgd10), apgd-ce, apgd-dlr or gaussian")
    options = dict(spec)
    name, kind = options.pop("name", None), options.pop("type", None)
    if not name or kind not in KINDS:
        raise UserError(f"suite entry {spec} needs a 'name' and a 'type' out of {', '.join(KINDS)}")
    options = {k: _number(v) for k, v in options.items()}
    options.setdefault("eps", eps)
    cls = {"fgsm": FGSM, "pgd": PGD, "apgd": APGD, "gaussian": GaussianNoise}[kind]
    try:
        return name, cls(model, **options)
    except TypeError as err:
        raise UserError(f"suite entry '{name}': {err}") from None


def _number(value):
    """Suite files may write step sizes and eps as '2/255'."""
    if isinstance(value, str) and re.fullmatch(r"\s*[\d.]+\s*/\s*[\d.]+\s*", value):
        return read_fraction(value)
    return value


def load_suite(suite: str) -> list:
    """'standard', or a JSON/YAML file holding a list of attacks or {'attacks': [...]}."""
    if suite == "standard":
        return list(STANDARD_SUITE)
    path = Path(suite)
    if not path.is_file():
        raise UserError(f"suite '{suite}' is neither 'standard' nor a JSON/YAML file that exists")
    text = path.read_text()
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
