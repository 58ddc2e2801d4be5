"""What the chip makes of robustness: its differentiable grid model, its certificate, float vs chip comparisons."""
