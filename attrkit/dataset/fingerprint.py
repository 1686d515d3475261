"""What an :func:`attrkit.attribute_dataset` run is computed from, as JSON descriptions and short hashes.

A store records these, and a later call on the same store must agree with them before any stored result is
returned or resumed into (:mod:`attrkit.dataset.stream`):

- the **model**: a hash of the parameters and buffers (``state_dict``) of every ``nn.Module`` the forward function
  is or reaches (a module, a bound method of one, a ``functools.partial``, a function or lambda through the
  variables it closes over or the globals it names, with the function's own code), and the modules' train/eval
  mode. A callable the fingerprint cannot see into (an object that is not a module, a function referring to such
  an object) has no fingerprint: a store computed with it is never resumed or returned again (the error says so;
  pass the module, or a lambda over it, or use ``overwrite=True``).
- the **method**: its class, its constructor settings (the layer, ``multiply_by_inputs``, a wrapped method, ...) and
  the ``attribute`` keywords; ``summarize`` by its code.
- the **data**: a hash of single examples (the first of each chunk, loaded alone through the collate function),
  checked on a sample of the done chunks. A transform that is random on every load (data augmentation) makes the
  examples differ on every call, so such a store is not resumed: fix the transform's randomness first.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os
import sysconfig
import types
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

_MAX_DEPTH = 4


def tensor_digest(t: torch.Tensor) -> str:
    """A short hash of a tensor's shape, dtype and values."""
    data = t.detach().cpu().contiguous().reshape(-1)
    h = hashlib.sha256(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()[:16]


def _digest(parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _name(value) -> str:
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__qualname__)}"


def describe(value) -> Any:
    """A JSON description of an argument: tensors by shape, dtype and hash; functions by name and code."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype), "sha256": tensor_digest(value)}
    if isinstance(value, np.ndarray):
        return describe(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, torch.nn.Module):
        return {"module": type(value).__qualname__, "sha256": _module_state(value)}
    if callable(value):
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        return f"callable:{_name(value)}" + (f"#{_code_digest(code)}" if code is not None else "")
    text = repr(value)
    return text if " at 0x" not in text else type(value).__qualname__  # never an address: it changes every run


# -- the model -----------------------------------------------------------------------------------------------------
def _module_state(module: torch.nn.Module) -> str:
    return _digest([type(module).__qualname__] + [(k, tensor_digest(t)) for k, t in module.state_dict().items()])


def _code_digest(code: types.CodeType) -> str:
    consts = [(_code_digest(c) if isinstance(c, types.CodeType) else repr(c)) for c in code.co_consts]
    return _digest([code.co_code.hex(), consts, code.co_names])


def _names_used(code: types.CodeType) -> List[str]:
    names = list(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names += _names_used(c)
    return names


class _Walk:
    """Everything a forward function reaches: its parts (hashable descriptions) and the modules it uses."""

    def __init__(self):
        self.parts: List[Any] = []
        self.modules: List[torch.nn.Module] = []
        self.opaque: List[str] = []
        self._seen: set = set()

    def value(self, v, depth: int) -> None:
        if isinstance(v, torch.nn.Module):
            if all(m is not v for m in self.modules):
                self.modules.append(v)
        elif isinstance(v, torch.Tensor):
            self.parts.append(tensor_digest(v))
        elif v is None or isinstance(v, (bool, int, float, str, types.ModuleType, type)):
            self.parts.append(v.__name__ if isinstance(v, (types.ModuleType, type)) else v)
        elif isinstance(v, (list, tuple, dict)):
            for x in (sorted(v.items(), key=lambda kv: str(kv[0])) if isinstance(v, dict) else v):
                self.value(x, depth)
        elif callable(v):
            self.callable(v, depth)
        else:
            self.opaque.append(type(v).__qualname__)

    def callable(self, fn, depth: int) -> None:
        if id(fn) in self._seen or depth > _MAX_DEPTH:
            return
        self._seen.add(id(fn))
        if isinstance(fn, torch.nn.Module):
            self.value(fn, depth)
        elif isinstance(fn, functools.partial):
            self.callable(fn.func, depth + 1)
            self.value(tuple(fn.args) + tuple(sorted(fn.keywords.items())), depth + 1)
        elif inspect.ismethod(fn):
            self.parts.append(fn.__func__.__qualname__)
            self.value(fn.__self__, depth + 1)
        elif inspect.isfunction(fn) and _is_library(fn):
            self.parts.append(_name(fn))  # library code: its name (its globals are the library's business)
        elif inspect.isfunction(fn):
            self._function(fn, depth)
        elif isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType)) or type(fn).__module__ == "torch":
            self.parts.append(_name(fn))
        else:
            self.opaque.append(type(fn).__qualname__)

    def _function(self, fn, depth: int) -> None:
        self.parts.append((fn.__qualname__, _code_digest(fn.__code__)))
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                pass
        for name in _names_used(fn.__code__):
            if name in fn.__globals__:
                self.value(fn.__globals__[name], depth + 1)


_LIBRARY_DIRS = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                       os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})


def _is_library(fn) -> bool:
    """A function of an installed package, the standard library or attrkit (not the user's own code)."""
    path = os.path.abspath(fn.__code__.co_filename)
    return "site-packages" in path or "dist-packages" in path or path.startswith(_LIBRARY_DIRS)


def model_fingerprint(forward_func) -> Tuple[Optional[str], str, List[torch.nn.Module]]:
    """``(digest or None, mode, modules)`` of a forward function; the digest is None when it reaches an object
    it cannot see into, and ``mode`` is ``"eval"``, ``"train"`` or ``"mixed (k of n modules in train mode)"``."""
    walk = _Walk()
    walk.callable(forward_func, 0)
    if walk.opaque:
        return None, _mode(walk.modules), walk.modules
    return _digest(walk.parts + [_module_state(m) for m in walk.modules]), _mode(walk.modules), walk.modules


def unfingerprintable_parts(forward_func) -> List[str]:
    """The kinds of object that make ``forward_func`` impossible to fingerprint (for the error message)."""
    walk = _Walk()
    walk.callable(forward_func, 0)
    return sorted(set(walk.opaque))


def _mode(modules: List[torch.nn.Module]) -> str:
    flags = [m.training for root in modules for m in root.modules()]
    if not flags or not any(flags):
        return "eval"
    if all(flags):
        return "train"
    return f"mixed ({sum(flags)} of {len(flags)} modules in train mode)"


# -- the method ----------------------------------------------------------------------------------------------------
def method_config(attribution, modules: List[torch.nn.Module]) -> Dict[str, Any]:
    """The attribution object's own settings (what its constructor was given), without the model itself."""
    config: Dict[str, Any] = {"class": type(attribution).__qualname__}
    for key, value in sorted(vars(attribution).items()):
        if key == "forward_func":
            continue
        if isinstance(value, torch.nn.Module):
            config[key] = _module_path(value, modules)
        elif hasattr(value, "attribute") and hasattr(value, "forward_func"):  # a wrapped method (NoiseTunnel)
            config[key] = method_config(value, modules)
        elif callable(value) or isinstance(value, (torch.Tensor, list, tuple, dict)) or value is None \
                or isinstance(value, (bool, int, float, str)):
            config[key] = describe(value)
        else:  # a helper object (e.g. KernelShap's linear model): its class and plain settings
            config[key] = {"class": type(value).__qualname__,
                           **{k: v for k, v in sorted(vars(value).items()) if not k.startswith("_")
                              and isinstance(v, (bool, int, float, str, type(None)))}} \
                if hasattr(value, "__dict__") else describe(value)
    return config


def _module_path(module: torch.nn.Module, roots: List[torch.nn.Module]) -> str:
    for i, root in enumerate(roots):
        for name, m in root.named_modules():
            if m is module:
                return f"model[{i}].{name}" if name else f"model[{i}]"
    return f"module:{type(module).__qualname__}:{_module_state(module)}"


# -- the data ------------------------------------------------------------------------------------------------------
def example_digest(batch, row: int) -> str:
    """A hash of example ``row`` of a collated batch (a tensor, or a tuple/list of tensors and other values)."""
    elems = batch if isinstance(batch, (tuple, list)) else (batch,)
    parts = []
    for e in elems:
        if isinstance(e, torch.Tensor):
            parts.append(tensor_digest(e[row:row + 1]) if e.dim() else tensor_digest(e))
        elif isinstance(e, (list, tuple)) and len(e) > row:
            parts.append(describe(e[row]))
        else:
            parts.append(describe(e))
    return _digest(parts)
