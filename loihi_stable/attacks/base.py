"""torchattacks-compatible attack base: ``atk(images, labels)`` -> adversarial images."""
from __future__ import annotations

import torch


class Attack:
    """Runs in eval mode, restores the model's mode and never leaves gradients on its parameters."""

    def __init__(self, model: torch.nn.Module, eps: float = 8 / 255, seed: int | None = 0):
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (on the /255 scale, e.g. 8/255), got {eps}")
        self.model = model
        self.eps = float(eps)
        self.seed = seed
        self.model_training = False  # attack the model in eval mode unless told otherwise

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError

    def input_grad(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the summed cross-entropy w.r.t. the images, and the per-sample loss."""
        images = images.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(self.model(images), labels, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), images)
        return grad, loss.detach()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        grad_flags = [p.requires_grad for p in self.model.parameters()]
        self.model.train(self.model_training)
        for p in self.model.parameters():
            p.requires_grad_(False)
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        try:
            adv = self.perturb(images.detach().clone(), labels, generator)
        finally:
            for p, flag in zip(self.model.parameters(), grad_flags):
                p.requires_grad_(flag)
            self.model.train(was_training)
        return adv.detach()

    def project(self, adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Back into the L-inf eps ball around ``images`` and into [0, 1]."""
        return torch.min(torch.max(adv, images - self.eps), images + self.eps).clamp(0.0, 1.0)
