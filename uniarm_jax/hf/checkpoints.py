"""Hugging Face checkpoints <-> our parameter tree.

Loading reads tensor by tensor and, through `jax.make_array_from_callback`, each device reads only its
own shard from disk: host memory never holds a second full copy of the model. The HF <-> Flax mapping
is a small table: kernels are transposed (`[d_out, d_in]` -> `[d_in, d_out]`) and per-layer tensors are
stacked on the leading `layers` axis. HF's q/k weights are already laid out for split-halves RoPE, so
nothing is permuted.
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import CheckpointError, MissingFileError
from uniarm_jax.hf.safetensors import SafetensorsFile, save_safetensors, sliced_shape
from uniarm_jax.model import quantize
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.families import family_of
from uniarm_jax.model.llama import param_shapes
from uniarm_jax.model.projections import BY_NAME, PROJECTIONS
from uniarm_jax.model.sharding import param_shardings, path_str

# our path -> (HF name with {i} for the layer, transposed?); the projections from their table. Biases
# exist where the config says (Qwen2's q/k/v) and in merged exports (MoSLoRA's shift at a fixed α); the
# per-head q/k norms in Qwen3.
_LAYER_MAP = {
    "layers/input_layernorm/weight": ("model.layers.{i}.input_layernorm.weight", False),
    "layers/post_attention_layernorm/weight": ("model.layers.{i}.post_attention_layernorm.weight", False),
    "layers/self_attn/q_norm/weight": ("model.layers.{i}.self_attn.q_norm.weight", False),
    "layers/self_attn/k_norm/weight": ("model.layers.{i}.self_attn.k_norm.weight", False),
}
for _p in PROJECTIONS:
    _LAYER_MAP[f"{_p.path}/kernel"] = (_p.hf_module("{i}") + ".weight", True)
    _LAYER_MAP[f"{_p.path}/bias"] = (_p.hf_module("{i}") + ".bias", False)
_TOP_MAP = {
    "embed_tokens/embedding": ("model.embed_tokens.weight", False),
    "norm/weight": ("model.norm.weight", False),
    "lm_head/kernel": ("lm_head.weight", True),
}
# Buffers some checkpoints carry that hold nothing to load (RoPE is recomputed from the config).
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


def hf_tensor_names(path: str, cfg: LlamaConfig) -> list[str]:
    """The HF tensors that make up our parameter `path`, one per layer for stacked parameters."""
    if path in _LAYER_MAP:
        template = _LAYER_MAP[path][0]
        return [template.format(i=i) for i in range(cfg.num_hidden_layers)]
    return [_TOP_MAP[path][0]]


def _transposed(path: str) -> bool:
    return (_LAYER_MAP.get(path) or _TOP_MAP[path])[1]


class TensorIndex:
    """Every tensor of an HF directory: safetensors (single or sharded), or a torch `.bin` read with
    `weights_only=True` (never plain pickle)."""

    def __init__(self, hf_dir: str):
        self.hf_dir = hf_dir
        self._where: dict[str, object] = {}
        single = os.path.join(hf_dir, "model.safetensors")
        index = os.path.join(hf_dir, "model.safetensors.index.json")
        bins = [os.path.join(hf_dir, "pytorch_model.bin"), os.path.join(hf_dir, "pytorch_model.bin.index.json")]
        if os.path.isfile(index):
            files = sorted(set(_read_weight_map(index).values()))
            for fname in files:
                self._add(SafetensorsFile(_existing(hf_dir, fname, index)))
        elif os.path.isfile(single):
            self._add(SafetensorsFile(single))
        elif os.path.isfile(bins[1]):
            for fname in sorted(set(_read_weight_map(bins[1]).values())):
                self._add(_TorchBinFile(_existing(hf_dir, fname, bins[1])))
        elif os.path.isfile(bins[0]):
            self._add(_TorchBinFile(bins[0]))
        else:
            raise MissingFileError(
                f"{hf_dir!r} holds no weights; expected model.safetensors, model.safetensors.index.json "
                "or pytorch_model.bin")

    def _add(self, file):
        for name in file.keys():
            self._where[name] = file

    def names(self) -> set[str]:
        return set(self._where)

    def shape(self, name: str) -> tuple:
        return self._where[name].shape(name)

    def read(self, name: str, index: tuple = ()) -> np.ndarray:
        return self._where[name].read(name, index)

    def read_into(self, name: str, index: tuple, out: np.ndarray, transpose: bool = False) -> None:
        self._where[name].read_into(name, index, out, transpose)


def _read_weight_map(index_path: str) -> dict:
    with open(index_path) as f:
        try:
            return json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError):
            raise CheckpointError(f"{index_path} is not a checkpoint index (no 'weight_map')") from None


def _existing(hf_dir: str, fname: str, index_path: str) -> str:
    path = os.path.join(hf_dir, fname)
    if not os.path.isfile(path):
        raise MissingFileError(f"{index_path} names the weight file {fname!r}, which does not exist")
    return path


class _TorchBinFile:
    """A pickled PyTorch state dict, opened only through torch's `weights_only` loader."""

    def __init__(self, path: str):
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{path} is a PyTorch pickle; reading it needs torch installed "
                                  "(or convert the checkpoint to safetensors)") from None
        try:
            self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # the weights-only unpickler refuses anything but tensors
            raise CheckpointError(f"{path} could not be read with torch.load(weights_only=True): {e}") from None

    def keys(self):
        return list(self._state)

    def shape(self, name):
        return tuple(self._state[name].shape)

    def read(self, name, index=()):
        import torch
        t = self._state[name][index]
        if t.dtype == torch.bfloat16:
            import ml_dtypes
            return t.view(torch.int16).numpy().copy().view(ml_dtypes.bfloat16)
        return t.numpy().copy()

    def read_into(self, name, index, out, transpose=False):
        part = self.read(name, index)
        out[...] = part.T if transpose else part


def check_tensors(tensors: TensorIndex, cfg: LlamaConfig, shapes: dict, ignore: str | None = None) -> None:
    """Refuses a checkpoint with a missing, unexpected or mis-shaped tensor, naming it and both shapes.
    Tensors whose names fully match the regex `ignore` (a score model's head) are not the Llama's."""
    expected = {}
    for path, leaf in flatten(shapes).items():
        shape = leaf.shape[1:] if path in _LAYER_MAP else leaf.shape
        hf_shape = tuple(reversed(shape)) if _transposed(path) else tuple(shape)
        for name in hf_tensor_names(path, cfg):
            expected[name] = hf_shape
    present = tensors.names()
    if cfg.tie_word_embeddings:
        present.discard("lm_head.weight")  # a tied copy some exporters write anyway
    present = {n for n in present if not _IGNORED.fullmatch(n) and not (ignore and re.fullmatch(ignore, n))}
    missing = sorted(set(expected) - present)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{tensors.hf_dir}: tensor {missing[0]!r} is missing (expected shape "
                              f"{expected[missing[0]]}){more}")
    unexpected = sorted(present - set(expected))
    if unexpected:
        raise CheckpointError(f"{tensors.hf_dir}: unexpected tensor {unexpected[0]!r} with shape "
                              f"{tensors.shape(unexpected[0])}; the config describes no such weight")
    for name, shape in expected.items():
        if tensors.shape(name) != shape:
            raise CheckpointError(f"{tensors.hf_dir}: tensor {name!r} has shape {tensors.shape(name)}; "
                                  f"the config expects {shape}")


def _aligned_empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An uninitialised host array on a 64-byte boundary, which a CPU device can use without a copy."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _source(path: str) -> tuple[str, str | None]:
    """The float parameter a leaf is read from, and which quantized leaf it is (None: the leaf itself)."""
    head, _, leaf = path.rpartition("/")
    return (f"{head}/kernel", leaf) if leaf in quantize.LEAVES else (path, None)


def load_params(hf_dir: str, cfg: LlamaConfig, mesh=None, ignore: str | None = None) -> dict:
    """Our parameter tree from an HF directory, each array placed in its sharding on `mesh`
    (or on the default device), in `cfg.param_dtype` (an int8 base's kernels: int8 and float32
    scales). `ignore`: see `check_tensors`.

    Each device reads only its own shard, and each shard is one copy out of the page cache (the
    transpose and the dtype cast happen in that copy); on a lone CPU device the array it fills becomes
    the device array itself (DLPack, no second copy). With `cfg.quantize`, a device's shard of an int8
    kernel (or of its scales) is quantized from its columns read whole, one layer at a time: a column's
    scales need all of its rows, and the host never holds more than one layer's float columns."""
    tensors = TensorIndex(hf_dir)
    shapes = param_shapes(cfg)
    check_tensors(tensors, cfg, param_shapes(cfg.replace(quantize=None)), ignore)
    shardings = param_shardings(mesh, shapes, cfg.head_dim) if mesh is not None else None
    on_cpu = mesh is None and jax.devices()[0].platform == "cpu"

    def load(path, leaf, sharding):
        source, part = _source(path)
        names, transposed = hf_tensor_names(source, cfg), _transposed(source)
        stacked = source in _LAYER_MAP
        dtype = np.dtype(leaf.dtype)

        def read(index):
            index = tuple(index) + (slice(None),) * (len(leaf.shape) - len(index))
            layer_index, inner = (index[0], index[1:]) if stacked else (slice(None), index)
            hf_index = tuple(reversed(inner)) if transposed else inner
            out = _aligned_empty(sliced_shape(leaf.shape, index), dtype)
            if part is not None:
                for j, name in enumerate(names[layer_index]):
                    out[j] = _quantized(tensors, name, inner, part)
            elif stacked:
                for j, name in enumerate(names[layer_index]):
                    tensors.read_into(name, hf_index, out[j], transposed)
            else:
                tensors.read_into(names[0], hf_index, out, transposed)
            return out

        # DLPack takes the host arrays as they are (no bfloat16: that dtype is not in its list)
        if on_cpu and dtype != jnp.bfloat16:
            return jax.dlpack.from_dlpack(read(()))
        if sharding is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.make_array_from_callback(leaf.shape, sharding, read)

    flat_shardings = flatten(shardings) if shardings is not None else {}
    out = {path: load(path, leaf, flat_shardings.get(path)) for path, leaf in flatten(shapes).items()}
    return unflatten(out)


def _quantized(tensors: TensorIndex, name: str, inner: tuple, part: str) -> np.ndarray:
    """One layer's slice `inner` (of `[d_in, d_out]`, or `[groups, d_out]` for the scales) of the int8
    kernel or of the scales made from the HF tensor `name` (`[d_out, d_in]`): its columns read whole."""
    cols = inner[-1]
    d_out, d_in = tensors.shape(name)
    kernel = np.empty((d_in, len(range(*cols.indices(d_out)))), np.float32)
    tensors.read_into(name, (cols, slice(None)), kernel, transpose=True)
    scales = quantize.int8_scales(kernel)
    if not np.isfinite(scales).all():
        row = int(np.flatnonzero(~np.isfinite(scales).all(axis=0))[0]) + (cols.start or 0)
        raise CheckpointError(f"{tensors.hf_dir}: tensor {name!r} holds non-finite values (in row {row}, an "
                              "output channel); it cannot be quantized to int8")
    return (scales if part == "scale" else quantize.to_int8(kernel, scales))[inner[0]]


def export_hf(params: dict, cfg: LlamaConfig, out_dir: str, dtype: str | None = None,
              max_shard_bytes: int = 5 * 2**30) -> None:
    """Writes `config.json` and safetensors (sharded with an index past `max_shard_bytes`) that the
    family's transformers class (LlamaForCausalLM, Qwen2ForCausalLM, ...) loads. One tensor is on the
    host at a time. A merged tree's extra biases are declared by the family's flags, with zeros on
    the projections a flag covers that carry none."""
    quantize.require_float(cfg, "writing a Hugging Face directory")
    os.makedirs(out_dir, exist_ok=True)
    flat = flatten(params)
    biased = [p.name for p in PROJECTIONS if f"{p.path}/bias" in flat]
    hf_config = cfg.to_hf_dict(biased)
    for name in family_of(cfg.model_type).bias_fields(biased)[1]:
        kernel = flat[f"{BY_NAME[name].path}/kernel"]
        flat.setdefault(f"{BY_NAME[name].path}/bias", jnp.zeros(kernel.shape[::2], kernel.dtype))
    dtype = np.dtype(jnp.dtype(dtype or cfg.param_dtype))
    entries = []
    for path, array in flat.items():
        transposed = _transposed(path)
        for i, name in enumerate(hf_tensor_names(path, cfg)):
            shape = array.shape[1:] if path in _LAYER_MAP else array.shape
            hf_shape = tuple(reversed(shape)) if transposed else tuple(shape)

            def produce(array=array, i=i, stacked=path in _LAYER_MAP, transposed=transposed):
                host = np.asarray(jax.device_get(array[i] if stacked else array)).astype(dtype)
                return host.T if transposed else host
            entries.append((name, hf_shape, dtype, produce))

    shards, current, size = [], [], 0
    for entry in entries:
        nbytes = int(np.prod(entry[1])) * dtype.itemsize
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += nbytes
    shards.append(current)

    if len(shards) == 1:
        save_safetensors(os.path.join(out_dir, "model.safetensors"), shards[0], {"format": "pt"})
    else:
        weight_map = {}
        for n, shard in enumerate(shards, 1):
            fname = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
            save_safetensors(os.path.join(out_dir, fname), shard, {"format": "pt"})
            weight_map.update({e[0]: fname for e in shard})
        total = sum(int(np.prod(e[1])) * dtype.itemsize for e in entries)
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    hf_config["torch_dtype"] = str(jnp.dtype(dtype))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)


def flatten(tree) -> dict:
    """{"layers/self_attn/q_proj/kernel": leaf, ...}: a nested dict tree keyed by "/"-joined paths."""
    return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict) -> dict:
    """The inverse of `flatten`."""
    tree: dict = {}
    for path, x in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = x
    return tree
