"""Exporting conv SNNs: normalisation, BatchNorm and pooling fold away exactly; what cannot go to Loihi says why."""
import numpy as np
import pytest
import torch

from loihi_stable.errors import UserError
from loihi_stable.io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from loihi_stable.models import ModelConfig, build_model
from netx_export.compiler.export import write_netx
from netx_export.compiler.folding import fold_model, run_folded


def randomized(arch, shape, mean, std):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, input_shape=list(shape), mean=mean, std=std, timesteps=4))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(0.0, 0.5)
    for neuron in model.spiking_neurons:
        neuron.leak_scale.data.uniform_(0.5, 1.0)
    return model.eval()


@pytest.mark.parametrize("arch,shape,mean,std", [("vgg5", (3, 16, 16), [0.49, 0.48, 0.45], [0.2, 0.2, 0.2]),
                                                 ("convnet-s", (1, 8, 8), [0.0], [1.0])])
def test_folding_is_exact_in_float(arch, shape, mean, std):
    model = randomized(arch, shape, mean, std)
    x = torch.rand(32, *shape)
    layers = fold_model(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layers)
    with torch.no_grad():
        expected = model(x)
    folded = run_folded(layers, x, model.config.timesteps)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(folded, expected, atol=2e-4, rtol=1e-4)
    # pooling before a conv became a 6x6 kernel with stride 2
    if arch == "vgg5":
        assert layers[1].weight.shape[2:] == (6, 6) and layers[1].stride == 2


def test_wrn_refuses_export_with_the_reason(tmp_path):
    model = build_model(ModelConfig(arch="wrn16-4", input_shape=[3, 32, 32], timesteps=2))
    with pytest.raises(UserError, match="residual stream carries analog"):
        write_netx(model, {"train_config": {}}, tmp_path / "w.net")
    assert not list(tmp_path.iterdir())


@pytest.mark.lava
def test_stock_netx_loads_a_folded_vgg(tmp_path):
    from lava.lib.dl.netx import hdf5

    model = randomized("vgg5", (3, 16, 16), [0.5] * 3, [0.25] * 3)
    write_netx(model, checkpoint_of(model, "cifar10"), tmp_path / "v.net")
    net = hdf5.Network(net_config=str(tmp_path / "v.net"))
    assert len(net.layers) == 5  # conv, conv (pool folded), conv, dense, readout
    synapses = [layer.synapse.weight if hasattr(layer.synapse, "weight") else layer.synapse.weights
                for layer in net.layers]
    weights = [np.asarray(var.init) for var in synapses]
    assert all(np.abs(w).max() <= 254 for w in weights)


def checkpoint_of(model, dataset: str = "digits") -> dict:
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": model.config.to_dict(),
            "state_dict": model.state_dict(), "train_config": {"dataset": dataset}}


def test_a_conv_export_reads_back_as_chip_layers(tmp_path):
    from netx_export.fileformat.netx_file import encode_inputs, read_netx

    model = randomized("convnet-s", (1, 8, 8), [0.0], [1.0])
    write_netx(model, checkpoint_of(model), tmp_path / "c.net")
    spec = read_netx(tmp_path / "c.net")
    assert [layer.kind for layer in spec.layers] == ["conv", "conv", "dense", "dense"]
    assert spec.input_shape == (2, 8, 8) and spec.bias_channel and spec.in_features == 64
    first = spec.layers[0]
    assert first.bias is None and (first.weight[:, 1, [0, 0, 2, 2], [0, 2, 0, 2]] == 0).all()
    assert all(layer.bias is not None for layer in spec.layers[1:])
    assert all(np.abs(layer.weight).max() <= 256 and (layer.weight % 2 == 0).all() for layer in spec.layers)
    payload = encode_inputs(spec, np.full((2, 64), 0.5, np.float32))
    assert payload.shape == (2, 2, 8, 8) and (payload[:, 0] == 32).all() and (payload[:, 1] == 64).all()
