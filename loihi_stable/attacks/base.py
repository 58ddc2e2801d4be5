"""torchattacks-compatible attack base: ``atk(images, labels)`` -> adversarial images.

White-box through the surrogate gradient on f(x) = mean over time of the logits
(the model's forward). Inputs in [0, 1]; any input shape (per-sample norms).
"""
from __future__ import annotations

import torch

from .. import surrogates
from ..budget import check_eps

# how many target classes a targeted attack runs side by side: batching them saves op dispatch on small
# (dense) networks, whose steps cost little per row; on wide ones the rows leave the cache and the batched
# run is slower than one target after another (measured: APGD-T on a convnet-s grid model)
BATCHED_ELEMENTS = 1 << 20   # rows x neurons of the widest layer per batched run


def targets_at_once(model, rows: int, targets: int) -> int:
    """Target classes per run for ``rows`` samples: all of them where the model's widest layer is small,
    one at a time where it is wide or unknown (``widest_layer``: neurons per sample)."""
    width = getattr(model, "widest_layer", None)
    if not width:
        return 1
    return max(1, min(targets, BATCHED_ELEMENTS // max(rows * int(width), 1)))


class Attack:
    """Runs in eval mode, restores the model's mode, never leaves gradients on its parameters.

    Random starts come from a private generator seeded with ``seed``: reproducible,
    and the global torch RNG is left alone.
    """

    name = "attack"

    def __init__(self, model: torch.nn.Module, eps: float = 8 / 255, seed: int | None = 0,
                 surrogate: str | None = None):
        # the spike's backward this attack differentiates through (surrogates.parse; None: the model's own)
        self.backward = None if surrogate is None else surrogates.parse(surrogate)
        self.model = model
        self.eps = check_eps(eps)
        self.seed = seed
        self.model_training = False  # attack the model in eval mode unless told otherwise
        self.loss_history: list[torch.Tensor] = []  # mean loss per iteration, for diagnostics

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError

    def clean_logits(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the clean images and which samples they classify correctly (what is left to attack)."""
        with torch.no_grad():
            logits = self.model(images)
        return logits, logits.argmax(1) == labels

    @staticmethod
    def still_robust(robust: torch.Tensor, rounds: int):
        """(round, indices still robust) for each round (a restart, a target class): every round works
        only on what the rounds before it left robust, and the attack stops once nothing is."""
        for round_ in range(rounds):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                return
            yield round_, idx

    def loss_and_grad(self, images: torch.Tensor, labels: torch.Tensor, loss_fn=None):
        """Per-sample loss, its input gradient and the logits at ``images``."""
        images = images.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(images)
            loss = (loss_fn or cross_entropy)(logits, labels)
            (grad,) = torch.autograd.grad(loss.sum(), images)
        return loss.detach(), grad, logits.detach()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        grad_flags = [p.requires_grad for p in self.model.parameters()]
        self.model.train(self.model_training)
        for p in self.model.parameters():
            p.requires_grad_(False)
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        self.loss_history = []
        try:
            with surrogates.backward_through(self.model, self.backward):  # the forward stays the model's own
                adv = self.perturb(images.detach().clone(), labels.detach(), generator)
        finally:
            for p, flag in zip(self.model.parameters(), grad_flags):
                p.requires_grad_(flag)
            self.model.train(was_training)
        return adv.detach()

    def project(self, adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Back into the L-inf eps ball around ``images`` and into [0, 1]."""
        return torch.min(torch.max(adv, images - self.eps), images + self.eps).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        through = f", surrogate={self.backward.name}" if self.backward else ""
        return f"{type(self).__name__}(eps={self.eps * 255:g}/255{through})"


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")


def uniform_noise(shape, generator, device) -> torch.Tensor:
    """Uniform in [-1, 1]."""
    return 2 * torch.rand(shape, generator=generator, device=device) - 1
