"""NetX HDF5 export of loihi-stable models and the Lava runner that executes them."""
import loihi_stable  # noqa: F401  (installs the Python 3.11 compatibility shim before lava)
