"""The NetX HDF5 file: layer spec, input encoding, writing and reading. Nothing else knows the keys.

Stock keys (what ``lava.lib.dl.netx.hdf5.Network`` reads):
  layer/<i>/type      input | conv | flatten | dense
  layer/<i>/shape     (C, H, W) or (N,)
  conv:   weight (out, in, kh, kw), stride, padding, dilation (H, W), groups, inChannels, outChannels,
          kernelSize; dense: weight (out, in), inFeatures, outFeatures; optional bias (bias_mant)
          (weights int16, gzip-compressed; older files hold int32: both are read)
  layer/<i>/neuron/   type=CUBA, iDecay, vDecay, vThMant, refDelay, gradedSpike
Extension keys (stock NetX ignores them):
  layer/<i>/neuron/vDecaySchedule   DLIF's dv per time step, int32 [T]
  loihi_stable/ attrs: format_version, timesteps, input_scale, input_message_bits, input_shape,
      bias_channel, dataset, neuron, arch; dataset ``checkpoint``: the source checkpoint.

Input encoding: each pixel x in [0, 1] is a graded spike of payload round(64 x), held for the
T steps of its sample; conv files append one channel of constant payload 64 (the first layer's
bias, which would not fit Loihi's 13-bit bias mantissa on that layer's fine grid). The first
layer sums W p unshifted: its threshold and state run on a grid 64 times finer, so stock NetX,
which derives every weight exponent from the weights, computes what ``run`` does.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from loihi_stable import chip_kernel as kernel, interrupts
from loihi_stable.errors import UserError
from loihi_stable.fixed_point import INPUT_MESSAGE_BITS, INPUT_SCALE, graded_payload
from loihi_stable.io import atomic_path, checkpoint_from_bytes

FORMAT_VERSION = 3  # 2: no first-layer input exponent; 3: conv layers, bias channel
EXTENSION_GROUP = "loihi_stable"
NEURON_KEYS = tuple(kernel.CubaNeuron.NETX)  # spelled once, in chip_kernel.CubaNeuron
MAX_TIMESTEPS = 1024
# weights as int16 (stock NetX reads any integer type), byte-shuffled and deflated: VGG11's 4096x8192
# layer goes from 134 MB (int32) to a few MB; level 1 compresses nearly as well as 9, many times faster
WEIGHT_STORAGE = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


@dataclass
class LayerSpec:
    """One Loihi layer in chip integers."""

    weight: np.ndarray                  # dense (out, in); conv (out, in, kh, kw); even ints in [-256, 254]
    neuron: kernel.CubaNeuron           # CUBA parameters (a dict of NEURON_KEYS is read into one)
    dv_schedule: np.ndarray | None = None   # DLIF: vDecay per time step
    bias: np.ndarray | None = None      # bias_mant per neuron (dense) or channel (conv)
    kind: str = "dense"
    stride: int = 1
    padding: int = 0
    out_shape: tuple = ()               # (C, H, W) for conv, (N,) for dense

    def __post_init__(self):
        if not isinstance(self.neuron, kernel.CubaNeuron):
            self.neuron = kernel.CubaNeuron.from_netx(self.neuron)
        self.weight = np.asarray(self.weight, dtype=np.int64)
        if self.bias is not None:
            self.bias = np.asarray(self.bias, dtype=np.int64)
        if self.dv_schedule is not None:
            self.dv_schedule = np.asarray(self.dv_schedule, dtype=np.int64)
        if not self.out_shape:
            self.out_shape = (int(self.weight.shape[0]),)

    @property
    def i_decay(self) -> int:
        return self.neuron.i_decay

    @property
    def threshold(self) -> int:
        """Voltage (chip units) the neuron must exceed to spike."""
        return self.neuron.threshold

    @property
    def neurons(self) -> int:
        return int(np.prod(self.out_shape)) if self.out_shape else int(self.weight.shape[0])


@dataclass
class NetSpec:
    path: Path | None
    layers: list[LayerSpec]
    timesteps: int
    input_scale: int = INPUT_SCALE
    input_message_bits: int = INPUT_MESSAGE_BITS
    dataset: str = "digits"
    neuron: str = "lif"
    checkpoint: dict = field(default_factory=dict)
    arch: str = "mlp"
    input_shape: tuple = ()             # (C, H, W) of the chip's input, bias channel included; () for dense
    bias_channel: bool = False

    @property
    def in_features(self) -> int:
        """Features of a sample as the user gives it (without the bias channel)."""
        if not self.input_shape:
            return int(self.layers[0].weight.shape[1])
        c, h, w = self.input_shape
        return (c - int(self.bias_channel)) * h * w

    def shape_payload(self, payload: torch.Tensor) -> torch.Tensor:
        """Flat payloads (N, features) as the first layer takes them: (N, C, H, W) for conv files, with
        the bias channel (a constant payload of ``input_scale``) appended; unchanged for dense files."""
        if not self.input_shape:
            return payload
        c, h, w = self.input_shape
        payload = payload.reshape(len(payload), c - int(self.bias_channel), h, w)
        if self.bias_channel:
            payload = torch.cat([payload, payload.new_full((len(payload), 1, h, w), float(self.input_scale))], 1)
        return payload


@dataclass
class ChipRun:
    """Readout voltage per sample (chip units) and, if probed, every layer's state per step."""

    readout: np.ndarray                        # (N, classes)
    spikes: list[np.ndarray] | None = None     # per spiking layer (N, neurons, T)
    voltage: list[np.ndarray] | None = None    # per spiking layer (N, neurons, T), after reset

    @property
    def predictions(self) -> np.ndarray:
        return self.readout.argmax(1)

    def split(self, sizes: list[int]) -> list["ChipRun"]:
        """Consecutive runs of ``sizes`` samples each: one long run, handed back to the batches that made it."""
        cuts = np.cumsum(sizes)[:-1]

        def parts(layers):
            return [None] * len(sizes) if layers is None else list(zip(*(np.split(a, cuts) for a in layers)))

        return [ChipRun(readout, None if s is None else list(s), None if v is None else list(v))
                for readout, s, v in zip(np.split(self.readout, cuts), parts(self.spikes), parts(self.voltage))]


def encode_inputs(spec: NetSpec, x: np.ndarray) -> np.ndarray:
    """Samples (N, ...) in [0, 1] -> graded payloads, int64: (N, C, H, W) for conv files, else (N, F)."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if x.shape[1] != spec.in_features:
        raise UserError(f"inputs have {x.shape[1]} features, the network expects {spec.in_features}")
    payload = graded_payload(torch.from_numpy(x), spec.input_scale)
    return spec.shape_payload(payload).numpy().astype(np.int64)


# --- writing -----------------------------------------------------------------------------
def _layer_datasets(layer: LayerSpec, weight_dtype=np.int16) -> dict:
    data = {"weight": layer.weight.astype(weight_dtype)}  # 8-bit weights (even, in [-256, 254]): int16
    if layer.bias is not None:
        data["bias"] = layer.bias.astype(np.int32)
    if layer.kind == "conv":
        data.update({"type": [b"conv"], "shape": np.array(layer.out_shape), "inChannels": layer.weight.shape[1],
                     "outChannels": layer.weight.shape[0], "kernelSize": np.array(layer.weight.shape[2:]),
                     "stride": np.array([layer.stride] * 2), "padding": np.array([layer.padding] * 2),
                     "dilation": np.array([1, 1]), "groups": 1})
    else:
        data.update({"type": [b"dense"], "shape": np.array([layer.weight.shape[0]]),
                     "inFeatures": layer.weight.shape[1], "outFeatures": layer.weight.shape[0]})
    data.update({f"neuron/{k}": v for k, v in layer.neuron.to_netx().items()})
    if layer.dv_schedule is not None:
        data["neuron/vDecaySchedule"] = np.asarray(layer.dv_schedule, dtype=np.int32)
    return data


def write_netx_file(spec: NetSpec, path: str | Path, weight_dtype=np.int16, weight_storage: dict | None = None) -> None:
    """Atomically write ``spec`` (and its checkpoint, for provenance) in stock NetX's layout; weights as
    ``weight_dtype`` with ``weight_storage``'s h5py filters (default: int16, WEIGHT_STORAGE)."""
    weight_storage = WEIGHT_STORAGE if weight_storage is None else weight_storage
    entries = []
    if spec.input_shape:
        entries.append({"type": [b"input"], "shape": np.array(spec.input_shape)})
    for i, layer in enumerate(spec.layers):
        if layer.kind == "dense" and i > 0 and spec.layers[i - 1].kind == "conv":
            entries.append({"type": [b"flatten"]})
        entries.append(_layer_datasets(layer, weight_dtype))
    buffer = io.BytesIO()
    torch.save(spec.checkpoint, buffer)
    with atomic_path(path) as tmp, interrupts.deferred():  # HDF5 cut mid-write can fail to close; then nothing is renamed
        with h5py.File(tmp, "w") as handle:
            group = handle.create_group("layer")
            for i, entry in enumerate(entries):
                sub = group.create_group(str(i))
                for key, value in entry.items():
                    if key == "type":
                        sub.create_dataset("type", (1,), "S10", value)
                    elif key == "weight":
                        sub.create_dataset(key, data=value, **weight_storage)
                    else:
                        sub.create_dataset(key, data=value)
            meta = handle.create_group(EXTENSION_GROUP)
            meta.attrs.update({"format_version": FORMAT_VERSION, "timesteps": spec.timesteps,
                               "input_scale": spec.input_scale, "input_message_bits": spec.input_message_bits,
                               "input_shape": np.array(spec.input_shape, dtype=np.int64),
                               "bias_channel": spec.bias_channel, "neuron": spec.neuron, "arch": spec.arch,
                               "dataset": spec.dataset})
            meta.create_dataset("checkpoint", data=np.void(buffer.getvalue()))
            meta.attrs["sha256"] = content_digest(handle)


# --- integrity ---------------------------------------------------------------------------
MAX_ELEMENTS = 1 << 28  # per dataset: far above VGG11's largest layer, far below what would exhaust memory


def _entries(handle) -> list[tuple[str, object]]:
    """Every dataset by path, after refusing links out of the file and data stored outside it."""
    entries: list[tuple[str, object]] = []
    problems: list[str] = []

    def visit(name, link):  # h5py cannot carry an exception out of this callback: note it and stop
        try:
            if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                problems.append(f"holds a link ('{name}'), which a loihi-stable export never does")
                return True
            item = handle[name]
            if isinstance(item, h5py.Dataset):
                if item.external or item.is_virtual:
                    problems.append(f"keeps dataset '{name}' outside the file, which a loihi-stable export never does")
                elif int(np.prod(item.shape or (1,))) > MAX_ELEMENTS:
                    problems.append(f"declares dataset '{name}' of shape {item.shape}, larger than any Loihi network")
                else:
                    entries.append((name, item))
        except Exception as err:  # noqa: BLE001  (a damaged object header)
            problems.append(f"is damaged ({type(err).__name__} at '{name}')")
        return True if problems else None

    handle.visititems_links(visit)
    if problems:
        raise UserError(problems[0])
    return sorted(entries, key=lambda entry: entry[0])


def content_digest(handle) -> str:
    """SHA-256 of every dataset (path, dtype, shape, bytes) and the extension attributes."""
    digest = hashlib.sha256()
    for name, dataset in _entries(handle):
        value = np.asarray(dataset[()])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    attrs = handle[EXTENSION_GROUP].attrs
    for key in sorted(k for k in attrs if k != "sha256"):
        digest.update(f"{key}={np.asarray(attrs[key]).tolist()!r};".encode())
    return digest.hexdigest()


# --- reading -----------------------------------------------------------------------------
def _scalar(group, key: str, where: str) -> int:
    value = np.asarray(group[key][()]).reshape(-1)
    if value.size == 0:
        raise UserError(f"{where}: '{key}' is empty")
    return int(value[0])


def _read_layer(group, i: int, shape_in: tuple, where: str, timesteps: int) -> LayerSpec:
    kind = group["type"][()][0].decode()
    neuron = {k: group["neuron"][k][()] for k in group["neuron"] if k != "vDecaySchedule"}
    missing = [k for k in ("vThMant", "vDecay") if k not in neuron]
    if missing:
        raise UserError(f"{where}: layer {i} has no neuron/{missing[0]}")
    if not 1 <= int(neuron.get("iDecay", kernel.DECAY_UNITY)) <= kernel.DECAY_UNITY:
        raise UserError(f"{where}: layer {i} has iDecay {neuron.get('iDecay')}, outside Lava's "
                        f"1..{kernel.DECAY_UNITY} (du = iDecay - 1 is 12-bit)")
    schedule = group["neuron"].get("vDecaySchedule")
    schedule = None if schedule is None else np.asarray(schedule[()], dtype=np.int64).reshape(-1)
    for key, value, high in (("vThMant", neuron["vThMant"], kernel.MAX_VTH_MANT),
                             ("vDecay", neuron["vDecay"], kernel.MAX_DECAY),
                             ("vDecaySchedule", schedule, kernel.MAX_DECAY)):
        values = np.asarray(value if value is not None else 0, dtype=np.float64)
        if not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or values.max(initial=0) > high:
            raise UserError(f"{where}: layer {i} has neuron/{key} outside Loihi's 0..{high}")
    if schedule is not None and len(schedule) < timesteps:
        raise UserError(f"{where}: layer {i} has {len(schedule)} vDecaySchedule entries for {timesteps} time steps")
    weight = np.asarray(group["weight"][()])
    bias = np.asarray(group["bias"][()], dtype=np.int64).reshape(-1) if "bias" in group else None
    if kind == "conv":
        if weight.ndim != 4 or weight.shape[1] != shape_in[0]:
            raise UserError(f"{where}: conv layer {i} has weights of shape {weight.shape} for "
                            f"{shape_in[0]} input channels")
        stride, padding = _scalar(group, "stride", where), _scalar(group, "padding", where)
        out_shape = tuple(int(v) for v in group["shape"][()])
        layer = LayerSpec(weight.astype(np.int64), neuron, schedule, bias, "conv", stride, padding, out_shape)
    else:
        features = int(np.prod(shape_in))
        if weight.ndim != 2 or weight.shape[1] != features:
            raise UserError(f"{where}: dense layer {i} has weights of shape {weight.shape} for {features} inputs")
        layer = LayerSpec(weight.astype(np.int64), neuron, schedule, bias, "dense", out_shape=(weight.shape[0],))
    if bias is not None and len(bias) != (layer.out_shape[0] if kind == "conv" else layer.weight.shape[0]):
        raise UserError(f"{where}: layer {i} has {len(bias)} biases for {layer.weight.shape[0]} outputs")
    if np.abs(layer.weight).max(initial=0) > -kernel.WEIGHT_MIN:
        raise UserError(f"{where}: layer {i} has weights outside Loihi's 8 bits")
    if bias is not None and np.abs(bias).max(initial=0) > kernel.MAX_BIAS_MANT:
        raise UserError(f"{where}: layer {i} has biases outside Loihi's 13-bit bias mantissa")
    return layer


METADATA_KINDS = {"format_version": "int", "timesteps": "int", "input_scale": "int", "input_message_bits": "int",
                  "input_shape": "ints", "bias_channel": "bool", "neuron": "str", "arch": "str", "dataset": "str",
                  "sha256": "str"}


def _typed_metadata(meta: dict, path: Path, fix: str) -> dict:
    """The extension attributes with the kinds an export writes (text where a number belongs: one line)."""
    def fits(value, kind) -> bool:
        if kind == "int":
            return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if kind == "bool":
            return isinstance(value, (bool, np.bool_))
        if kind == "str":
            return isinstance(value, str)
        return isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu"

    for key, kind in METADATA_KINDS.items():
        if key in meta and not fits(meta[key], kind):
            words = {"int": "a whole number", "bool": "true/false", "str": "text", "ints": "a list of whole numbers"}
            raise UserError(f"'{path}' has attribute '{key}' = {meta[key]!r:.30}, which must be {words[kind]}: {fix}")
    return meta


def read_netx(path: str | Path) -> NetSpec:
    """Parse and validate an exported file; any defect is a one-line UserError."""
    path = Path(path)
    fix = "re-export it with 'loihi-stable export --to netx model.pt'"
    if not path.is_file():
        raise UserError(f"network file '{path}' not found: {fix}")
    if not h5py.is_hdf5(path):
        raise UserError(f"'{path}' is not an HDF5 file: {fix}")
    try:
        with h5py.File(path, "r") as handle:
            if "layer" not in handle or EXTENSION_GROUP not in handle:
                raise UserError(f"'{path}' is HDF5 but not a loihi-stable NetX export: {fix}")
            meta = _typed_metadata(dict(handle[EXTENSION_GROUP].attrs), path, fix)
            if int(meta.get("format_version", -1)) != FORMAT_VERSION:
                raise UserError(f"'{path}' has format version {meta.get('format_version')}, "
                                f"expected {FORMAT_VERSION}: {fix}")
            try:
                digest = content_digest(handle)
            except UserError as err:
                raise UserError(f"'{path}' {err}: {fix}") from None
            if str(meta.get("sha256", "")) != digest:
                raise UserError(f"'{path}' fails its integrity check (SHA-256 of its contents differs from the one "
                                f"written at export): the file is damaged or was edited; {fix}")
            timesteps = int(meta["timesteps"])
            if not 1 <= timesteps <= MAX_TIMESTEPS:
                raise UserError(f"'{path}' has {timesteps} time steps (1..{MAX_TIMESTEPS} run here): {fix}")
            input_shape = tuple(int(v) for v in np.asarray(meta.get("input_shape", ())).reshape(-1))
            shape, layers = input_shape, []
            for i in range(len(handle["layer"])):
                group = handle["layer"][str(i)]
                kind = group["type"][()][0].decode()
                if kind in ("input", "flatten"):
                    continue
                if kind not in ("dense", "conv"):
                    raise UserError(f"'{path}' layer {i} is a '{kind}' layer, which Loihi layers here do not include")
                if not shape:
                    shape = (int(np.asarray(group["weight"]).shape[1]),)
                layer = _read_layer(group, i, shape, f"'{path}'", timesteps)
                layers.append(layer)
                shape = layer.out_shape
            if not layers:
                raise UserError(f"'{path}' has no layers: {fix}")
            checkpoint = checkpoint_from_bytes(handle[EXTENSION_GROUP]["checkpoint"][()].tobytes(), str(path))
            return NetSpec(path, layers, timesteps, int(meta["input_scale"]), int(meta["input_message_bits"]),
                           str(meta["dataset"]), str(meta["neuron"]), checkpoint, str(meta.get("arch", "mlp")),
                           input_shape, bool(meta.get("bias_channel", False)))
    except UserError as err:
        if fix in str(err) or "checkpoint" in str(err):
            raise
        raise UserError(f"{err}: {fix}") from None
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as err:
        raise UserError(f"'{path}' is damaged or truncated ({type(err).__name__}): {fix}") from None
