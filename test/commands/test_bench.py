"""`paradigms-policy bench`: the table and the JSON other tools read."""
import json
import shutil
import subprocess

import pytest

from paradigms_policy.checkpoint import save_policy
from paradigms_policy.commands.cli import main

from conftest import pixel_normalizers, small_config, small_model


@pytest.fixture
def tiny_checkpoint(tmp_path):
    config = small_config()
    return save_policy(tmp_path / "tiny", config, small_model(config=config), *pixel_normalizers())


def test_bench_writes_the_documented_json(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bench.json"
    plot = tmp_path / "residuals.png"
    code = main(["bench", "--checkpoint", str(tiny_checkpoint), "--samplers", "sequential,paradigms,parataa",
                 "--chunks", "3", "--warmup", "0", "--json", str(out), "--residual-plot", str(plot)])
    assert code == 0 and plot.stat().st_size > 0
    document = json.loads(out.read_text())
    assert document["device"].startswith("cpu") and document["torch"]
    rows = {row["sampler"]: row for row in document["results"]}
    for row in rows.values():
        for key in ("rounds_median", "model_evals_median", "latency_p50_ms", "latency_p99_ms", "max_abs_dev"):
            assert isinstance(row[key], float)
    assert rows["sequential"]["max_abs_dev"] == 0.0 and rows["sequential"]["rounds_median"] == 100
    assert 0 < rows["paradigms"]["rounds_median"] < 100 and rows["paradigms"]["max_abs_dev"] < 0.05
    assert len(rows["parataa"]["residual_history_first_chunk"]) > 0
    assert "| paradigms" in capsys.readouterr().out


def test_bench_refuses_unknown_samplers_and_missing_checkpoints(tmp_path, capsys):
    assert main(["bench", "--checkpoint", str(tmp_path / "none"), "--chunks", "1"]) == 2
    assert "none: no such file or directory" in capsys.readouterr().err
    assert main(["bench", "--random-model", "shipped", "--samplers", "sequential,picard", "--chunks", "1"]) == 2
    assert "unknown sampler 'picard'" in capsys.readouterr().err


def test_console_script_is_installed():
    executable = shutil.which("paradigms-policy")
    if executable is None:
        pytest.skip("the package is not installed (pip install -e .); the console script is missing")
    result = subprocess.run([executable, "bench", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--samplers" in result.stdout


def test_gpu_suite_runs_eager_on_cpu_against_a_float64_reference(tiny_checkpoint, tmp_path):
    out = tmp_path / "suite.json"
    code = main(["bench", "--checkpoint", str(tiny_checkpoint), "--suite", "gpu", "--reference", "float64",
                 "--chunks", "1", "--warmup", "0", "--json", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert document["reference"] == "float64" and len(document["results"]) == 9
    rows = {row["label"]: row for row in document["results"]}
    assert not any(row["cuda_graphs"] for row in rows.values())  # no CUDA here: every variant eager
    assert rows["sequential"]["max_abs_dev"] < 1e-4  # float32 against float64, same noise
    assert rows["parataa window=16 fixed_shape=True +graphs bfloat16"]["max_abs_dev"] < 0.2
