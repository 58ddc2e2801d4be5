import pytest
import torch

import loihi_stable  # noqa: F401  (compat shim before lava)
from loihi_stable.data import load_dataset
from loihi_stable.io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.training import TrainConfig, train


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


def trained_checkpoint(digits, neuron: str, epochs: int = 3, hidden=(32, 16), perturb: str = "rfgsm",
                       train_eps=None, arch: str = "mlp") -> dict:
    torch.manual_seed(0)
    conv = {} if arch == "mlp" else {"arch": arch, "input_shape": [1, 8, 8], "mean": [0.0], "std": [1.0],
                                     "timesteps": 4}
    model = build_model(ModelConfig(neuron=neuron, hidden=list(hidden), **conv))
    config = TrainConfig(epochs=epochs, perturb=perturb, train_eps=train_eps)
    train(model, digits[0], config, progress=False)
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model_config": model.config.to_dict(), "train_config": config.to_dict(),
            "state_dict": model.state_dict(), "metrics": {}}


@pytest.fixture(scope="session")
def lif_checkpoint(digits):
    return trained_checkpoint(digits, "lif")


@pytest.fixture(scope="session")
def dlif_checkpoint(digits):
    return trained_checkpoint(digits, "dlif")


@pytest.fixture(scope="module")
def dlif_model(dlif_checkpoint):
    """The digits DLIF MLP, rebuilt from its checkpoint (a fresh one per test module)."""
    from netx_export.compiler.export import model_from_checkpoint
    return model_from_checkpoint(dlif_checkpoint)


@pytest.fixture(scope="session")
def natural_checkpoint(digits):
    return trained_checkpoint(digits, "dlif", epochs=6, perturb="none")


@pytest.fixture(scope="session")
def ibp_checkpoint(digits):
    """Certifiably trained (S-IBP at 8/255), for tests that need verified samples."""
    return trained_checkpoint(digits, "dlif", epochs=6, perturb="ibp", train_eps=8 / 255)


@pytest.fixture(scope="session")
def conv_lif_checkpoint(digits):
    """convnet-s on digits (conv 16, conv 32, pool, dense 64), T=4."""
    return trained_checkpoint(digits, "lif", arch="convnet-s")


@pytest.fixture(scope="session")
def conv_dlif_checkpoint(digits):
    return trained_checkpoint(digits, "dlif", arch="convnet-s")


def exported(folder, checkpoint):
    """``checkpoint`` saved as folder/model.pt and exported to folder/model.net, as a user would."""
    from loihi_stable.cli import app
    from typer.testing import CliRunner

    torch.save(checkpoint, folder / "model.pt")
    result = CliRunner().invoke(app, ["export", "--to", "netx", str(folder / "model.pt"), "-o", str(folder / "model.net")])
    assert result.exit_code == 0, result.output
    return folder
