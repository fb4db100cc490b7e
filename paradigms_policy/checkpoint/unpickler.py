"""A restricted unpickler for Diffusion Policy workspace checkpoints: a fixed table of globals, nothing imported."""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import types
from collections import OrderedDict
from typing import Any

import torch

# --------------------------------------------------------------------------------------------
# Inert stand-ins for omegaconf and typing objects.


class Placeholder:
    """Stands in for a pickled object of an admitted class: records constructor args and state, does nothing else."""

    qualified_name = "placeholder"

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.__dict__["_pickled_args"] = args
        instance.__dict__["_pickled_kwargs"] = kwargs
        instance.__dict__["_pickled_state"] = None
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_pickled_state"] = state

    def __repr__(self):
        return f"<placeholder for {self.qualified_name}>"

    @property
    def pickled_state(self) -> Any:
        return self.__dict__["_pickled_state"]


class DictConfigPlaceholder(Placeholder):
    qualified_name = "omegaconf.dictconfig.DictConfig"


class ListConfigPlaceholder(Placeholder):
    qualified_name = "omegaconf.listconfig.ListConfig"


class NodePlaceholder(Placeholder):
    """A leaf value node (AnyNode, StringNode, ...): the value is `_val` in its state."""

    qualified_name = "omegaconf.nodes.ValueNode"


class MetadataPlaceholder(Placeholder):
    qualified_name = "omegaconf.base.Metadata"


class _Frozen:
    """Base of the shared objects handed to the unpickler: a pickle's BUILD opcode cannot alter them."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"refused to set state on {self!r}")


class TypeRef(_Frozen):
    """An inert name for a `typing` object (typing.Any, typing.Dict[...]) mentioned in omegaconf metadata."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)

    def __repr__(self):
        return self.name


class SafeCallable(_Frozen):
    """An admitted function, wrapped so that a pickle cannot rewrite its attributes (e.g. __defaults__)."""

    __slots__ = ("function", "label")

    def __init__(self, function, label: str):
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "label", label)

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __repr__(self):
        return f"<admitted {self.label}>"


def _subclass(base: type, qualified_name: str) -> type:
    return type(qualified_name.rsplit(".", 1)[1] + "Placeholder", (base,), {"qualified_name": qualified_name})


_OMEGACONF_NODES = ("ValueNode", "AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode",
                    "BytesNode", "PathNode", "UnionNode", "InterpolationResultNode")

# --------------------------------------------------------------------------------------------
# The allowlist.


def _safe_defaultdict(default_factory=None, *args):
    """collections.defaultdict, rebuilt as a plain dict (the factory is never called)."""
    if args:
        raise RefusedGlobal("collections", "defaultdict", "called with unexpected arguments")
    return {}


def _safe_latin1_encode(text, encoding="latin1"):
    """_codecs.encode as protocol 2 uses it for bytes: latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("_codecs", "encode", f"only latin-1 text is accepted (got encoding {encoding!r})")
    return text.encode("latin1")


_BUILTIN_TYPES = {t.__name__: t for t in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes,
                                          bytearray)}
_DILL_TYPES = dict(_BUILTIN_TYPES, NoneType=type(None))


def _safe_dill_load_type(name):
    """dill._dill._load_type, for builtin data types only."""
    if not isinstance(name, str) or name not in _DILL_TYPES:
        raise RefusedGlobal("dill._dill", f"_load_type({name!r})", "only builtin data types are admitted")
    return _DILL_TYPES[name]


def _safe_typing_subscript(container, parameters):
    """operator.getitem, as pickle rebuilds typing.Dict[str, Any]: on typing placeholders only."""
    if not isinstance(container, TypeRef):
        raise RefusedGlobal("operator", "getitem", "only typing annotations may be subscripted")
    if not isinstance(parameters, tuple):
        parameters = (parameters,)
    return TypeRef(f"{container.name}[{', '.join(_type_name(p) for p in parameters)}]")


def _type_name(value) -> str:
    if isinstance(value, TypeRef):
        return value.name
    if isinstance(value, type):
        return value.__name__
    return repr(value)


def _build_allowlist() -> dict[tuple[str, str], Any]:
    functions = {
        ("collections", "defaultdict"): _safe_defaultdict,
        ("_codecs", "encode"): _safe_latin1_encode,
        ("dill._dill", "_load_type"): _safe_dill_load_type,
        ("operator", "getitem"): _safe_typing_subscript,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, name):
            functions[("torch._utils", name)] = getattr(torch._utils, name)
    allowed: dict[tuple[str, str], Any] = {key: SafeCallable(fn, ".".join(key)) for key, fn in functions.items()}
    # Classes: immutable builtin/C types, and our placeholders (whose BUILD only records state).
    allowed[("collections", "OrderedDict")] = OrderedDict
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch", "device")] = torch.device
    for name, value in vars(torch).items():
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    for name, kind in _BUILTIN_TYPES.items():
        allowed[("builtins", name)] = kind
    for name in ("Any", "Dict", "List", "Tuple", "Optional", "Union"):
        allowed[("typing", name)] = TypeRef(f"typing.{name}")
    allowed[("omegaconf.dictconfig", "DictConfig")] = DictConfigPlaceholder
    allowed[("omegaconf.listconfig", "ListConfig")] = ListConfigPlaceholder
    allowed[("omegaconf.base", "Metadata")] = MetadataPlaceholder
    allowed[("omegaconf.base", "ContainerMetadata")] = _subclass(MetadataPlaceholder,
                                                                 "omegaconf.base.ContainerMetadata")
    for name in _OMEGACONF_NODES:
        allowed[("omegaconf.nodes", name)] = _subclass(NodePlaceholder, f"omegaconf.nodes.{name}")
    return allowed


ALLOWED_GLOBALS = _build_allowlist()


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that a Diffusion Policy checkpoint does not need."""

    def __init__(self, module: str, name: str, reason: str = "not a class a Diffusion Policy checkpoint needs"):
        self.module, self.name, self.reason = module, name, reason
        super().__init__(f"refused to unpickle {module}.{name}: {reason}")


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose `find_class` answers only from `ALLOWED_GLOBALS` and never imports."""

    def find_class(self, module, name):
        module, name = str(module), str(name)
        # Protocol <= 2 pickles may carry Python 2 names (__builtin__.set, copy_reg...).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data, **kwargs):
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# A module-like object for torch.load(pickle_module=...): torch subclasses its `Unpickler` (keeping
# our find_class underneath its own Storage handling) and calls its `load` for legacy headers.
RESTRICTED_PICKLE = types.ModuleType("paradigms_policy.restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
RESTRICTED_PICKLE.loads = _restricted_loads
RESTRICTED_PICKLE.UnpicklingError = pickle.UnpicklingError
RESTRICTED_PICKLE.__version__ = "1"


