"""Malformed and crafted files: each ends, fast and within bounded memory, in one CheckpointError that names
the file and the field.

All files are loaded in one child process (bounded_load.py) whose address space is limited to HEADROOM
above its warmed-up baseline, so that a regression that hangs or allocates what the file does not store
shows up here as a slow record, a MemoryError or a missing record, not as a stalled or exhausted machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from checkpoint_files import (dp_cfg_document, dp_payload, global_op, int_op, lerobot_config, reference, save_dp,
                              text_op, with_data_pkl, write_lerobot_dir)
from safetensors.torch import load_file, save_file

from paradigms_policy.checkpoint import save_policy
from paradigms_policy.checkpoint.unpickler import MAX_PICKLE_BYTES

HEADROOM = 512 << 20  # address space the child may add to its baseline; the files are all under 10 MB
MAX_SECONDS = 2.0
# Resident memory a load may add beyond the size of the files it reads: the unpickled objects take up to
# about 20 bytes per byte of data.pkl, which is at most MAX_PICKLE_BYTES.
ALLOWANCE = 32 << 20
CHILD_TIMEOUT = 300


@dataclass(frozen=True)
class Case:
    name: str
    write: Callable[[Path], Path]  # writes the file into an empty directory, returns the path to load
    fields: tuple[str, ...]  # what the message says besides the path


def shared_dag(depth: int) -> list:
    """2**depth paths through depth + 1 distinct lists."""
    node: list = [0]
    for _ in range(depth):
        node = [node, node]
    return node


def self_containing() -> list:
    cycle: list = []
    cycle.append(cycle)
    return cycle


def dp_with(cfg_change=None, weight=None) -> Callable[[Path], Path]:
    """A workspace .ckpt whose plain-dict cfg is changed by cfg_change(cfg) and whose EMA model's
    final_conv.1.bias is replaced by weight(bias)."""

    def write(directory: Path) -> Path:
        ref = reference()
        cfg = dp_cfg_document(ref.config)
        if cfg_change:
            cfg_change(cfg)
        payload = dp_payload(ref, cfg)
        if weight:
            state = payload["state_dicts"]["ema_model"]
            state["model.final_conv.1.bias"] = weight(state["model.final_conv.1.bias"])
        return save_dp(directory / "run.ckpt", payload)

    return write


def setting(section: str, key: str, value) -> Callable[[dict], None]:
    def change(cfg: dict) -> None:
        (cfg["policy"][section] if section else cfg["policy"])[key] = value
        if not section:
            cfg[key] = value  # the top-level fallback says the same

    return change


def interpolation_loop(cfg: dict) -> None:
    cfg["policy"]["horizon"], cfg["horizon"] = "${horizon}", "${policy.horizon}"


def blob(cfg: dict) -> None:
    cfg["blob"] = {"dag": shared_dag(60), "deep": nested(150), "cycle": self_containing()}


def nested(depth: int) -> list:
    node: list = []
    for _ in range(depth):
        node = [node]
    return node


def parameter_with_attribute(bias: torch.Tensor) -> torch.nn.Parameter:
    parameter = torch.nn.Parameter(bias.clone())
    parameter.float = 5  # saved through torch._utils._rebuild_parameter_with_state
    return parameter


def tensor_with_attribute(bias: torch.Tensor) -> torch.Tensor:
    tensor = bias.clone()
    tensor.detach = None  # saved through torch._tensor._rebuild_from_type_v2
    return tensor


def crafted_pickle(data: bytes) -> Callable[[Path], Path]:
    return lambda directory: with_data_pkl(directory, data, "crafted.ckpt")


def deflated(directory: Path) -> Path:
    import zipfile

    plain = directory / "plain.ckpt"
    torch.save({"x": torch.zeros(25_000_000)}, plain)  # 100 MB of zeros deflate to about 100 KB
    path = directory / "deflated.ckpt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            target.writestr(item.filename, source.read(item.filename))
    plain.unlink()
    return path


def native_with(change=None, weights_change=None) -> Callable[[Path], Path]:
    """A native directory whose config.json is rewritten by change(document) (a str result is written as is)."""

    def write(directory: Path) -> Path:
        ref = reference()
        path = save_policy(directory / "policy", ref.config, ref.model, ref.obs_normalizer, ref.action_normalizer)
        if change:
            document = json.loads((path / "config.json").read_text())
            text = change(document)
            (path / "config.json").write_text(text if isinstance(text, str) else json.dumps(document))
        if weights_change:
            tensors = load_file(str(path / "model.safetensors"))
            weights_change(tensors)
            save_file(tensors, str(path / "model.safetensors"))
        return path

    return write


def native_setting(section: str | None, key: str, value) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        (document["policy"][section] if section else document["policy"])[key] = value

    return change


def deep_json(document: dict) -> str:
    return '{"format": "paradigms_policy", "policy": ' + "[" * 100_000 + "]" * 100_000 + "}"


def huge_integer(document: dict) -> str:
    return json.dumps(document).replace('"horizon": 16', '"horizon": 1' + "0" * 5000)


def integer_bias(tensors: dict) -> None:
    tensors["final_conv.1.bias"] = torch.zeros(2, dtype=torch.int64)


def lerobot_with(change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        ref = reference()
        document = lerobot_config(ref)
        change(document)
        return write_lerobot_dir(directory / "lerobot", ref, "buffers", config=document)

    return write


def lerobot_setting(key: str, value) -> Callable[[dict], None]:
    return lambda document: document.__setitem__(key, value)


def bool_state_shape(document: dict) -> None:
    document["input_features"]["observation.state"]["shape"] = [True]


def _call(function: bytes, *args: bytes) -> bytes:
    return b"\x80\x02" + function + b"(" + b"".join(args) + b"tR."


WIDE = [65536, 65536]
PUNYCODE_TEXT = "".join(chr(0x4E00 + i) for i in range(6000))  # 19 KB; torch's own loader takes ~3 s on it

CASES = [
    # (a) cfg containers that are deep, shared (a DAG) or cyclic, and interpolations that loop.
    Case("dp-cfg-dag-at-down_dims", dp_with(setting("model", "down_dims", shared_dag(60))),
         ("cfg.policy.model.down_dims[0] must be an integer",)),
    Case("dp-cfg-cycle-at-horizon", dp_with(setting("", "horizon", self_containing())),
         ("cfg.policy.horizon must be an integer",)),
    Case("dp-cfg-interpolation-loop", dp_with(interpolation_loop), ("cfg.policy.horizon / cfg.horizon is missing",)),
    # (b) an absurd number of training timesteps.
    Case("dp-num-train-timesteps", dp_with(setting("noise_scheduler", "num_train_timesteps", 10**9)),
         ("cfg.policy.noise_scheduler.num_train_timesteps must be in 1..10000",)),
    Case("native-num-train-timesteps", native_with(native_setting("scheduler", "num_train_timesteps", 10**9)),
         ("policy.scheduler.num_train_timesteps must be in 1..10000",)),
    Case("lerobot-num-train-timesteps", lerobot_with(lerobot_setting("num_train_timesteps", 10**9)),
         ("num_train_timesteps must be in 1..10000 (got 1000000000)",)),
    # (c) U-Net settings out of range, or far wider than the stored weights.
    Case("dp-n-groups-zero", dp_with(setting("model", "n_groups", 0)), ("cfg.policy.model.n_groups must be in",)),
    Case("native-n-groups-zero", native_with(native_setting("unet", "n_groups", 0)),
         ("policy.unet.n_groups must be in 1..65536 (got 0)",)),
    Case("lerobot-n-groups-zero", lerobot_with(lerobot_setting("n_groups", 0)), ("n_groups must be in 1..65536",)),
    Case("dp-kernel-size-negative", dp_with(setting("model", "kernel_size", -3)),
         ("cfg.policy.model.kernel_size must be in 1..63 (got -3)",)),
    Case("lerobot-kernel-size-negative", lerobot_with(lerobot_setting("kernel_size", -3)),
         ("kernel_size must be in 1..63 (got -3)",)),
    Case("dp-down-dims-wide", dp_with(setting("model", "down_dims", WIDE)),
         ("cfg.policy.model.down_dims is (65536, 65536) but the weights have (16, 32)",)),
    Case("native-down-dims-wide", native_with(native_setting("unet", "down_dims", WIDE)),
         ("policy.unet.down_dims is (65536, 65536) but the weights have (16, 32)",)),
    Case("lerobot-down-dims-wide", lerobot_with(lerobot_setting("down_dims", WIDE)),
         ("down_dims is (65536, 65536) but the weights have (16, 32)",)),
    Case("dp-horizon-bool", dp_with(setting("", "horizon", True)),
         ("cfg.policy.horizon must be an integer (got True)",)),
    Case("native-horizon-float", native_with(native_setting(None, "horizon", 16.0)),
         ("policy.horizon must be an integer (got 16.0)",)),
    Case("lerobot-shape-bool", lerobot_with(bool_state_shape),
         ("input_features.observation.state.shape[0] must be an integer (got True)",)),
    # (d) tensors that are not what a state dict holds.
    Case("dp-overlapping-view", dp_with(weight=lambda bias: torch.zeros(1).expand(2**20, 2**20)),
         ("the tensors of state_dicts.ema_model span", "their views overlap")),
    Case("dp-negation-bit", dp_with(weight=lambda bias: bias.clone()._neg_view()),
         ("state_dicts.ema_model.model.final_conv.1.bias carries a negation",)),
    Case("dp-parameter-attributes", dp_with(weight=parameter_with_attribute),
         ("refused to unpickle torch._utils._rebuild_parameter_with_state",)),
    Case("dp-tensor-attributes", dp_with(weight=tensor_with_attribute),
         ("refused to unpickle torch._tensor._rebuild_from_type_v2",)),
    Case("dp-not-a-tensor", dp_with(weight=lambda bias: "bias"),
         ("state_dicts.ema_model.model.final_conv.1.bias is a str, not a tensor",)),
    Case("dp-integer-weights", dp_with(weight=lambda bias: torch.zeros(2, dtype=torch.int64)),
         ("state_dicts.ema_model.model.final_conv.1.bias is a torch.strided torch.int64 tensor",)),
    Case("native-integer-weights", native_with(weights_change=integer_bias),
         ("final_conv.1.bias holds torch.int64 values",)),
    # Pickles and archives that torch's own weights-only loader reads slowly or into much more memory.
    Case("pickle-bytearray", crafted_pickle(_call(global_op("builtins", "bytearray"), int_op(2**31 - 1))),
         ("refused to unpickle builtins.bytearray",)),
    Case("pickle-punycode", crafted_pickle(_call(global_op("_codecs", "encode"), text_op(PUNYCODE_TEXT),
                                                 text_op("punycode"))),
         ("refused to unpickle _codecs.encode",)),
    Case("pickle-qtensor", crafted_pickle(_call(global_op("torch._utils", "_rebuild_qtensor"), b"N")),
         ("refused to unpickle torch._utils._rebuild_qtensor",)),
    Case("pickle-oversized", crafted_pickle(b"\x80\x02](" + b"N" * 9_000_000 + b"e."), ("data.pkl is 9000006 bytes",)),
    # The largest pickle admitted, of the cheapest opcodes: the worst case of the scan and torch's unpickler.
    Case("pickle-at-the-size-limit", crafted_pickle(b"\x80\x02](" + b"N" * (MAX_PICKLE_BYTES - 6) + b"e."),
         ("expected a Diffusion Policy workspace payload (a dict), found list",)),
    Case("zip-deflated", deflated, ("the zip archive's records expand to",)),
    # JSON that Python's parser refuses.
    Case("native-deep-json", native_with(deep_json), ("config.json: cannot read JSON: nested too deeply",)),
    Case("native-huge-integer", native_with(huge_integer), ("config.json: cannot read JSON", "4300 digits")),
]
VALID = [
    # A DAG of 2**60 paths, 150 levels of nesting and a cycle where the reader does not look: read as usual.
    Case("dp-cfg-dag-elsewhere", dp_with(blob), ()),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    """{case name: the child's record and the size of the files} for every case, loaded in one child process."""
    root = tmp_path_factory.mktemp("malformed")
    paths, sizes = {}, {}
    for case in CASES + VALID:
        directory = root / case.name
        directory.mkdir()
        paths[case.name] = case.write(directory)
        sizes[case.name] = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        assert sizes[case.name] < 10 << 20, f"{case.name} is {sizes[case.name]} bytes"
    warm_up = native_with()(root)
    command = [sys.executable, str(Path(__file__).with_name("bounded_load.py")), str(HEADROOM), str(warm_up),
               *map(str, paths.values())]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT).stdout
    except subprocess.TimeoutExpired as expired:  # the records printed before the hang still tell which one hung
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
    records = {record["path"]: record for record in map(json.loads, output.splitlines())}
    return {name: {"size": sizes[name], **records.get(str(path), {"path": str(path), "error": "did not finish"})}
            for name, path in paths.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_file_ends_in_one_checkpoint_error(outcomes, case):
    record = outcomes[case.name]
    assert record["error"] == "CheckpointError", record
    assert record["path"] in record["message"], record["message"]
    for field in case.fields:
        assert field in record["message"], record["message"]
    assert record["seconds"] < MAX_SECONDS, record
    assert record["peak_growth"] < record["size"] + ALLOWANCE, record


@pytest.mark.parametrize("case", VALID, ids=[case.name for case in VALID])
def test_adversarial_but_valid_file_loads_fast(outcomes, case):
    record = outcomes[case.name]
    assert record["error"] is None, record
    assert record["seconds"] < MAX_SECONDS, record
    assert record["peak_growth"] < record["size"] + ALLOWANCE, record
