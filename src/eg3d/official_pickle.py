"""Read official EG3D network pickles without running any code from them.

Official EG3D snapshots (``network-snapshot-*.pkl``, the released ``ffhq512-128.pkl`` ...) are a plain
``pickle.dump`` of a dict ``{'training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe'}``. Each network is an
instance of a ``torch_utils.persistence`` class, pickled as ``_reconstruct_persistent_obj(meta)`` where ``meta``
carries the *source code* of the defining module (normally ``exec``-ed on load), the class name and the object
state (``obj.__dict__``: ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``, ``_init_kwargs``,
``rendering_kwargs``, ``neural_rendering_resolution``, ...). Helper modules that are not persistent (the decoder's
``Sequential``/``Softplus``, the renderer, the ray sampler) are pickled as ordinary objects of their class.

The :class:`SafeUnpickler` below resolves only an explicit allow-list of globals and never imports or calls
anything else:

- tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter[_with_state]`` are replaced by our own
  rebuilders, and ``torch.storage._load_from_bytes`` (which the stock version feeds to ``torch.load`` with
  ``weights_only=False``) by a reader using ``torch.load(..., weights_only=True)``;
- ``torch_utils.persistence._reconstruct_persistent_obj`` returns a :class:`PersistentRecord` holding the state
  (the embedded source is kept as text and never executed);
- module classes of the official code base (``training.*``, ``eg3d.training.*`` as renamed by TEx-Face) and of
  ``torch.nn.modules.*`` become inert :class:`ModuleRecord` objects that only store their pickled state;
- ``dnnlib.util.EasyDict`` -> a dict; ``collections.OrderedDict``; numeric numpy scalars (the official layers
  keep gains such as ``np.sqrt(2)`` as attributes); torch dtypes, ``torch.Size`` and ``torch.device``;
  ``builtins.set``/``frozenset``; protocol 2's ``_codecs.encode(text, 'latin1')`` for bytes.

Class names under the module prefixes must start with a capital letter, so functions there are refused too.

Anything else is refused with :class:`UnsafePickleError` naming the global. The state dict of ``G_ema`` is then
collected the way ``nn.Module.state_dict`` would (parameters, then persistent buffers, then children).
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from texface.errors import ConvertError, UnsafePickleError, first_line

# Positional parameters of the official TriPlaneGenerator, to name `_init_args` if a pickle has any.
_POSITIONAL_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
# Module prefixes whose classes are rebuilt as inert ModuleRecords (official code base and torch.nn).
_MODULE_PREFIXES = ("training.", "eg3d.training.", "torch.nn.modules.")


class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` stood for: a class name and an object state, never code."""

    def __init__(self, class_name: str, state: dict, version, module_src: str):
        self.class_name = class_name
        self.state = state
        self.version = version
        self.module_src = module_src  # kept as text for inspection only

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"


class ModuleRecord:
    """An ordinary (non-persistent) module of the pickle, e.g. ``torch.nn.Sequential``: its name and state only.

    The unpickler instantiates a per-name subclass through ``__new__``/``__init__`` and hands it the pickled state
    through ``__setstate__``; none of the original class's code is imported or run.
    """

    qualname = "?"
    state: dict = {}  # replaced, never mutated, by __setstate__

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state) from some reducers
            state = state[0] or {}
        if not isinstance(state, dict):
            raise UnsafePickleError(f"module {self.qualname} has a non-dict state ({type(state).__name__})")
        self.state = state

    def __repr__(self) -> str:
        return f"ModuleRecord({self.qualname})"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access); converted to ``dict`` afterwards."""


class _NumpyDType:
    """Stand-in for a pickled numeric ``numpy.dtype`` (numpy pickles dtypes as ``dtype(code)`` + a state tuple)."""

    def __init__(self, code, align=False, copy=True):
        if not isinstance(code, str) or len(code) < 2 or code[0] not in "biufc" or not code[1:].isdigit():
            raise UnsafePickleError(f"numpy dtype {code!r} is not a plain numeric type; refusing it")
        self.code, self.byteorder = code, "<"

    def __setstate__(self, state):
        # state = (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1] if state[1] in "<>" else "<"

    def numpy(self) -> np.dtype:
        return np.dtype(self.byteorder + self.code)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar with a non-numeric dtype or payload; refusing it")
    return np.frombuffer(data, dtype=dtype.numpy(), count=1)[0].item()


def _load_storage(data: bytes):
    # What torch.storage._load_from_bytes does, but with the weights-only unpickler and on the CPU.
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("tensor storage payload is not bytes")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises several types for corrupt/unsafe payloads
        raise ConvertError(f"a tensor storage in the pickle could not be read safely: {first_line(err)}") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"a tensor storage payload decoded to {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    # Same arguments as torch._utils._rebuild_tensor_v2; hooks and metadata are dropped (weights need neither).
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    tensor = torch.empty((0,), dtype=storage.dtype)
    return tensor.set_(storage._untyped_storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
    return data


def _latin1_bytes(text, encoding="latin1"):
    # Protocol 2 stores bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _persistent_record(meta):
    if not isinstance(meta, dict):
        raise ConvertError(f"persistent object metadata is a {type(meta).__name__}, expected a dict")
    if meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise ConvertError(f"persistent object metadata of unknown type {meta.get('type')!r}")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise ConvertError(f"persistent object {meta['class_name']} has no state dict")
    return PersistentRecord(meta["class_name"], state, meta.get("version"), str(meta.get("module_src", "")))


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class SafeUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the allow-listed globals described in the module docstring."""

    _records: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        # Protocols < 3 store Python 2 names (e.g. __builtin__.set); map them as pickle.Unpickler does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[module, name]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(_MODULE_PREFIXES) and name.isidentifier() and name[:1].isupper():
            qualname = f"{module}.{name}"
            if qualname not in self._records:
                self._records[qualname] = type(name, (ModuleRecord,), {"qualname": qualname})
            return self._records[qualname]
        raise UnsafePickleError(
            f"refusing to load global '{module}.{name}': it is not on the converter's allow-list "
            "(only tensors, EG3D network state and plain containers can be read)")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {pid!r}: network pickles are plain pickle.dump files")


def read_network_pickle(path: str | Path) -> dict:
    """Read an EG3D network pickle with :class:`SafeUnpickler`; networks come back as :class:`PersistentRecord`."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"network pickle not found: {path}")
    try:
        with open(path, "rb") as f:
            data = SafeUnpickler(f).load()
    except ConvertError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, UnicodeDecodeError) as err:
        reason = f"{type(err).__name__}: {first_line(err)}"
        raise ConvertError(f"{path} is not a readable network pickle ({reason})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path} holds a {type(data).__name__}, expected the dict of an EG3D snapshot")
    return data


def _plain(value):
    """JSON-able copy of pickled kwargs (EasyDicts -> dicts, tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConvertError(f"constructor argument of type {type(value).__name__} cannot be stored as JSON")


def state_dict_of(record, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flat state dict of a pickled module record, ordered and filtered like ``nn.Module.state_dict``."""
    state = record.state
    out: dict[str, torch.Tensor] = {}
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (state.get(kind) or {}).items():
            if tensor is None or (kind == "_buffers" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ConvertError(f"{prefix}{name} is a {type(tensor).__name__}, expected a tensor")
            out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, (PersistentRecord, ModuleRecord)):
            raise ConvertError(f"submodule {prefix}{name} is a {type(child).__name__}, expected a module")
        out.update(state_dict_of(child, f"{prefix}{name}."))
    return out


def generator_from_pickle(path: str | Path) -> tuple[dict, int, dict[str, torch.Tensor]]:
    """``(init_kwargs, neural_rendering_resolution, state_dict)`` of the ``G_ema`` in an EG3D network pickle."""
    data = read_network_pickle(path)
    if "G_ema" not in data:
        raise ConvertError(f"{path} has no 'G_ema' network (keys: {sorted(map(str, data))})")
    g = data["G_ema"]
    if not isinstance(g, PersistentRecord) or g.class_name != "TriPlaneGenerator":
        found = g.class_name if isinstance(g, PersistentRecord) else type(g).__name__
        raise ConvertError(f"{path}: G_ema is a {found}, expected an EG3D TriPlaneGenerator")
    args, kwargs = g.state.get("_init_args", ()), g.state.get("_init_kwargs")
    if not isinstance(kwargs, dict) or not isinstance(args, (tuple, list)) or len(args) > len(_POSITIONAL_ARGS):
        raise ConvertError(f"{path}: G_ema does not record its constructor arguments (_init_args/_init_kwargs)")
    init_kwargs = _plain({**dict(zip(_POSITIONAL_ARGS, args)), **kwargs})
    if isinstance(g.state.get("rendering_kwargs"), dict):
        # The live attribute wins, as when the official scripts rebuild G ("reload_modules").
        init_kwargs["rendering_kwargs"] = _plain(g.state["rendering_kwargs"])
    nrr = g.state.get("neural_rendering_resolution", 64)
    if not isinstance(nrr, int) or nrr <= 0:
        raise ConvertError(f"{path}: G_ema has an invalid neural_rendering_resolution {nrr!r}")
    return init_kwargs, nrr, state_dict_of(g)
