"""Unpickling a `torch.save` zip archive without running pickled code: a scan, then torch's weights-only loader.

`load_archive` (1) checks the zip's records, (2) scans `data.pkl`'s opcodes with `pickletools.genops`
(nothing is built or called), then (3) unpickles it with `torch.load(weights_only=True)` and
`SAFE_GLOBALS`: inert stand-ins for what a Diffusion Policy workspace pickles and torch's
weights-only unpickler cannot read by itself (omegaconf's containers, nodes and metadata, the
`typing` names in their metadata, dill's `_load_type`, `collections.defaultdict`).

The scan is there because torch's default allow-list cannot be narrowed, and some of it is unfit
for a reader that must fail fast on any file: `builtins.bytearray(n)` allocates n bytes,
`_codecs.encode(text, 'punycode')` takes seconds for a 20 KB file, `_rebuild_qtensor` allocates the
size it is given, `_rebuild_parameter_with_state` and `_rebuild_from_type_v2` set arbitrary
attributes on a tensor. The scan admits only the globals in `ADMITTED` (torch's storages and
`_rebuild_tensor_v2`, `collections.OrderedDict`, the stand-ins) and `_codecs.encode` only as
protocol 2 writes bytes, encode(<text>, 'latin1'); anything else is a `Refused` before torch
unpickles a byte. torch's unpickler is pure Python, so `data.pkl` is limited to `MAX_PICKLE_BYTES`
(a Push-T workspace's is about 55 KB) to keep the worst case well under a second.

`torch.serialization.safe_globals` changes process-wide state while it is active: a weights-only
load in another thread meanwhile would accept the (inert) stand-ins too.
"""
from __future__ import annotations

import _compat_pickle
import os
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

MAX_PICKLE_BYTES = 1 << 20


class Refused(Exception):
    """The checkpoint needs something this reader does not admit (not an UnpicklingError: torch rewrites those)."""


# --------------------------------------------------------------------------------------------
# Inert stand-ins.


class Placeholder:
    """Stands in for an omegaconf object: keeps the state it is unpickled with, does nothing else.

    torch's unpickler makes it with `cls.__new__(cls, *args)` (NEWOBJ) and fills it with
    `__setstate__` (BUILD); `payload` is the state entry that holds the object's value.
    """

    qualified_name = "placeholder"
    payload_key: str | None = None

    def __new__(cls, *args):
        instance = object.__new__(cls)
        instance.__dict__["state"] = None
        return instance

    def __setstate__(self, state):
        self.__dict__["state"] = state

    @property
    def payload(self) -> Any:
        state = self.__dict__["state"]
        return state.get(self.payload_key) if self.payload_key and isinstance(state, dict) else None

    def __repr__(self):
        return f"<placeholder for {self.qualified_name}>"


class TypeRef:
    """An inert name for a type mentioned in omegaconf metadata (typing.Any, builtins.dict, ...)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


def _placeholder(qualified_name: str, payload_key: str | None) -> type:
    name = qualified_name.rsplit(".", 1)[1] + "Placeholder"
    return type(name, (Placeholder,), {"qualified_name": qualified_name, "payload_key": payload_key})


_OMEGACONF = {"omegaconf.dictconfig.DictConfig": "_content", "omegaconf.listconfig.ListConfig": "_content",
              "omegaconf.base.Metadata": None, "omegaconf.base.ContainerMetadata": None}
_OMEGACONF.update({f"omegaconf.nodes.{name}": "_val" for name in (
    "ValueNode", "AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode", "BytesNode",
    "PathNode", "UnionNode", "InterpolationResultNode")})
_DILL_TYPE_NAMES = frozenset(("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str",
                              "bytes", "bytearray", "NoneType"))


def _load_type(name):
    """dill._dill._load_type for builtin data types, as an inert name (never a type that could be called)."""
    if not isinstance(name, str) or name not in _DILL_TYPE_NAMES:
        raise Refused(f"refused to unpickle dill._dill._load_type({str(name)[:40]!r}): only builtin data types "
                      "are admitted")
    return TypeRef(f"builtins.{name}")


def _defaultdict(default_factory=None):
    """collections.defaultdict, as a plain dict (the factory is dropped, never called)."""
    return {}


def _subscript(container, parameters):
    """operator.getitem as pickle rebuilds typing.Dict[str, Any]: on type names only, and of bounded length."""
    if not isinstance(container, TypeRef):
        raise Refused("refused to unpickle operator.getitem: only typing annotations may be subscripted")
    return TypeRef(container.name[:200] + "[...]")


SAFE_GLOBALS: list[tuple[Any, str]] = [(_placeholder(name, key), name) for name, key in _OMEGACONF.items()]
SAFE_GLOBALS += [(TypeRef(f"typing.{name}"), f"typing.{name}")
                 for name in ("Any", "Dict", "List", "Tuple", "Optional", "Union")]
SAFE_GLOBALS += [(_load_type, "dill._dill._load_type"), (_defaultdict, "collections.defaultdict"),
                 (_subscript, "operator.getitem")]

_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
ADMITTED = frozenset([name for _, name in SAFE_GLOBALS] + [f"torch.{kind}Storage" for kind in _STORAGES]
                     + ["torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "_codecs.encode"])

# --------------------------------------------------------------------------------------------
# The scan.

_STRINGS = frozenset(("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE"))
_GETS = frozenset(("BINGET", "LONG_BINGET", "GET"))
_PUTS = frozenset(("BINPUT", "LONG_BINPUT", "PUT"))
_OTHER_GLOBAL_OPCODES = frozenset(("STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"))
_ENCODE_CALL = ("text", "codec", "TUPLE2", "REDUCE")  # what must follow _codecs.encode on the stack
_ENCODE_REFUSAL = ("refused to unpickle _codecs.encode: it is admitted only for latin-1 text "
                   "(how protocol 2 stores bytes)")


def _global_name(arg: str) -> str:
    """A GLOBAL opcode's "module name" argument as the dotted name torch's unpickler looks up."""
    module, _, name = arg.partition(" ")
    # As torch does: protocol <= 2 pickles may carry Python 2 names (__builtin__.eval, copy_reg...).
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def scan_pickle(data: bytes) -> None:
    """Refuse a pickle that names a global outside `ADMITTED`, or calls `_codecs.encode` otherwise than
    encode(<text>, 'latin1'). Only opcodes are read; memo slots are followed so that a call through a
    memoised `_codecs.encode` or 'latin1' is checked the same way."""
    slots: dict[Any, str] = {}  # memo index -> "encode" or "latin1"
    expected: list[str] = []
    pushed = None  # what the last opcode other than a memo PUT pushed, when it is one of those
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name in _PUTS:
            if pushed:
                slots[arg] = pushed
            else:
                slots.pop(arg, None)
            continue
        if name in _OTHER_GLOBAL_OPCODES:
            raise Refused(f"refused the {name} opcode: torch.save's protocol 2 names globals with GLOBAL only")
        if name == "GLOBAL":
            full_name = _global_name(arg)
            if full_name not in ADMITTED:
                raise Refused(f"refused to unpickle {full_name}: not a class a Diffusion Policy checkpoint needs")
            pushed = "encode" if full_name == "_codecs.encode" else None
        elif name in _GETS:
            pushed = slots.get(arg)
        elif name in _STRINGS:
            pushed = "latin1" if arg in ("latin1", "latin-1") else None
        else:
            pushed = None
        if expected:
            step = expected.pop(0)
            text = step == "text" and (name in _STRINGS or name in _GETS) and pushed != "encode"
            if not (text or (step == "codec" and pushed == "latin1") or step == name):
                raise Refused(_ENCODE_REFUSAL)
        elif pushed == "encode":
            expected = list(_ENCODE_CALL)
    if expected:
        raise Refused(_ENCODE_REFUSAL)


# --------------------------------------------------------------------------------------------
# The archive.


def _pickle_record(archive: zipfile.ZipFile, file_size: int) -> tuple[str, int]:
    """The name of the archive's data.pkl and the size of its records together, after checking the records."""
    records = archive.infolist()
    names = [record.filename for record in records]
    if not names:
        raise Refused("the zip archive is empty")
    folded = {name.lower() for name in names}
    prefixes = {name.split("/", 1)[0] for name in names}
    if len(folded) != len(names) or len(prefixes) != 1:
        raise Refused("the zip archive has duplicate records or more than one top-level folder "
                      "(torch.save writes neither)")
    tails = {name.split("/", 1)[-1] for name in names}
    if "constants.pkl" in tails:
        raise Refused("this is a TorchScript archive, not a Diffusion Policy workspace checkpoint")
    pickle_name = f"{prefixes.pop()}/data.pkl"
    if pickle_name not in names:
        raise Refused("the zip archive has no data.pkl (not a torch.save checkpoint)")
    stored = sum(record.file_size for record in records)
    if stored > file_size:
        raise Refused(f"the zip archive's records expand to {stored} bytes, more than the file's {file_size} "
                      "(torch.save does not compress)")
    size = archive.getinfo(pickle_name).file_size
    if size > MAX_PICKLE_BYTES:
        raise Refused(f"data.pkl is {size} bytes; this reader admits up to {MAX_PICKLE_BYTES} "
                      "(a Diffusion Policy workspace's is well under)")
    return pickle_name, stored


def load_archive(path: Path) -> tuple[Any, int]:
    """(the unpickled payload, the bytes its records hold). Raises `Refused` for what the scan refuses,
    zipfile.BadZipFile/OSError for a damaged archive and whatever torch raises for a malformed one.
    The checks, the scan and torch read the same open file."""
    with open(path, "rb") as handle:
        with zipfile.ZipFile(handle) as archive:
            pickle_name, stored = _pickle_record(archive, os.fstat(handle.fileno()).st_size)
            scan_pickle(archive.read(pickle_name))
        handle.seek(0)
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(handle, map_location="cpu", weights_only=True, mmap=False), stored


def torch_reason(err: Exception) -> str:
    """The first line of what torch's weights-only unpickler reports, without its advice to load unsafely."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"
