"""loihi-stable: robust stable spiking neural networks, trained in float and proven on Loihi."""
from . import compat as _compat  # noqa: F401  (must run before any lava import)

__version__ = "0.1.0"
