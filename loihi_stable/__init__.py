"""loihi-stable: robust stable spiking neural networks, trained in float and proven on Loihi."""
from . import threads as _threads

_threads.passive_wait()  # before torch is imported (OpenMP reads it once)
from . import compat as _compat  # noqa: E402,F401  (must run before any lava import)

__version__ = "0.1.0"
