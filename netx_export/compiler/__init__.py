"""From a trained checkpoint to a NetX file: folding, quantization, the checks of the result."""
