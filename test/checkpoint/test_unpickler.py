"""Unpickling a .ckpt: every global a Diffusion Policy workspace does not need is refused before anything runs."""
import os
import pickle
import struct
import sys

import pytest
import torch
from checkpoint_files import (assert_load_fails, assert_same_policy, dp_cfg, global_op, reference, text_op,
                              with_data_pkl, write_dp_checkpoint)

from paradigms_policy.checkpoint import load_policy
from paradigms_policy.checkpoint.unpickler import SAFE_GLOBALS, load_archive


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class ExecCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('pwned')",)


class SubprocessCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import subprocess

        return subprocess.check_call, (["touch", str(self.marker)],)


class FileWrite:
    """builtins.open directly: writing a file needs no code execution beyond the call itself."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("gadget, refused_name", [
    (SystemCall, "system"), (EvalCall, "builtins.eval"), (ExecCall, "builtins.exec"),
    (SubprocessCall, "subprocess.check_call"), (FileWrite, "open"),
], ids=["os.system", "eval", "exec", "subprocess", "open"])
@pytest.mark.parametrize("pickler", ["dill", "pickle"])
def test_malicious_checkpoint_is_refused(tmp_path, gadget, refused_name, pickler):
    module = pytest.importorskip("dill") if pickler == "dill" else pickle
    marker = tmp_path / "pwned"
    payload = {"cfg": {"horizon": 16}, "state_dicts": {"model": {"model.x": torch.zeros(1)}},
               "pickles": {"trap": gadget(marker)}}
    path = tmp_path / "evil.ckpt"
    torch.save(payload, path, pickle_module=module)
    assert_load_fails(path, "refused to unpickle", refused_name, "not a class a Diffusion Policy checkpoint needs")
    assert not marker.exists()


def test_protocol_4_globals_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil4.ckpt"
    torch.save({"trap": SystemCall(marker)}, path, pickle_protocol=4)
    assert_load_fails(path, "refused the STACK_GLOBAL opcode")
    assert not marker.exists()


def test_dill_function_is_refused(tmp_path):
    dill = pytest.importorskip("dill")
    marker = tmp_path / "pwned"
    path = tmp_path / "function.ckpt"
    torch.save({"cfg": {}, "state_dicts": {}, "hook": lambda: marker.write_text("pwned")}, path, pickle_module=dill)
    assert_load_fails(path, "refused to unpickle dill._dill.")
    assert not marker.exists()


def _call(function: bytes, *args: bytes) -> bytes:
    return function + b"(" + b"".join(args) + b"tR"


_P2 = b"\x80\x02"
_LATIN1_CALL = global_op("_codecs", "encode") + b"q\x00" + text_op("a") + text_op("latin1") + b"q\x01\x86R"


@pytest.mark.parametrize("data, match", [
    # BUILD with slot state on an admitted function, trying to overwrite its __defaults__.
    (_P2 + global_op("torch._utils", "_rebuild_tensor_v2") + b"N}X\x0c\x00\x00\x00__defaults__)s\x86b.",
     "cannot unpickle the checkpoint"),
    (_P2 + _call(global_op("dill._dill", "_load_type"), text_op("CodeType")) + b".",
     "refused to unpickle dill._dill._load_type('CodeType')"),
    (_P2 + _call(global_op("__builtin__", "eval"), text_op("1")) + b".", "refused to unpickle builtins.eval"),
    (_P2 + _call(global_op("torch.storage", "_load_from_bytes"), b"C\x00") + b".",
     "refused to unpickle torch.storage._load_from_bytes"),
    (_P2 + _call(global_op("builtins", "bytearray"), b"J" + struct.pack("<i", 2**31 - 1)) + b".",
     "refused to unpickle builtins.bytearray"),
    (_P2 + _call(global_op("torch._utils", "_rebuild_qtensor"), b"N") + b".",
     "refused to unpickle torch._utils._rebuild_qtensor"),
    (_P2 + global_op("_codecs", "encode") + text_op("a") + text_op("rot13") + b"\x86R.",
     "refused to unpickle _codecs.encode"),
    # A first, harmless call memoises _codecs.encode; the second calls it through the memo with punycode.
    (_P2 + b"](" + _LATIN1_CALL + b"h\x00" + text_op("\u4e00" * 3) + text_op("punycode") + b"\x86Re.",
     "refused to unpickle _codecs.encode"),
], ids=["build-on-function", "dill-code-type", "py2-eval", "nested-torch-load", "bytearray", "qtensor",
        "codecs-rot13", "codecs-through-memo"])
def test_handwritten_pickles_are_refused(tmp_path, data, match):
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    assert_load_fails(with_data_pkl(tmp_path, data, "crafted.ckpt"), match)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults


def test_bytes_written_through_the_memo_are_read(tmp_path):
    """Protocol 2 stores bytes as _codecs.encode(text, 'latin1'), memoising the function and 'latin1'."""
    data = _P2 + b"](" + _LATIN1_CALL + b"h\x00" + text_op("\xff\x00") + b"h\x01\x86Re."
    payload, _ = load_archive(with_data_pkl(tmp_path, data, "bytes.ckpt"))
    assert payload == [b"a", b"\xff\x00"]


def test_reading_needs_neither_omegaconf_nor_dill(tmp_path, monkeypatch):
    """omegaconf's objects become inert stand-ins, admitted only while loading."""
    ref = reference()
    path = write_dp_checkpoint(tmp_path / "run.ckpt", ref, dp_cfg(ref.config))
    for module in ("omegaconf", "omegaconf.dictconfig", "dill", "dill._dill"):
        monkeypatch.setitem(sys.modules, module, None)  # any import of them now fails
    payload, _ = load_archive(path)
    # torch may register safe globals of its own on first use; the stand-ins must not stay registered.
    stand_ins = {id(entry) for entry, _ in SAFE_GLOBALS}
    assert not any(id(entry[0] if isinstance(entry, tuple) else entry) in stand_ins
                   for entry in torch.serialization.get_safe_globals())
    assert repr(payload["cfg"]) == "<placeholder for omegaconf.dictconfig.DictConfig>"
    assert_same_policy(load_policy(path), ref)


def test_an_archive_that_expands_is_refused(tmp_path):
    """torch's reader inflates deflated records: 100 KB could stand for 100 MB of weights."""
    import zipfile

    source = tmp_path / "plain.ckpt"
    torch.save({"x": torch.zeros(1_000_000)}, source)
    path = tmp_path / "deflated.ckpt"
    with zipfile.ZipFile(source) as plain, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as deflated:
        for item in plain.infolist():
            deflated.writestr(item.filename, plain.read(item.filename))
    assert_load_fails(path, "expand to")
