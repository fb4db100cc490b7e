"""`paradigms-policy bench`: the table and the JSON other tools read."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from paradigms_policy.commands.cli import main

from conftest import PNG_SIGNATURE


def test_bench_writes_the_documented_json(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bench.json"
    plot = tmp_path / "residuals.png"
    code = main(["bench", "--checkpoint", str(tiny_checkpoint), "--samplers", "sequential,paradigms,parataa",
                 "--chunks", "3", "--warmup", "0", "--json", str(out), "--residual-plot", str(plot)])
    assert code == 0 and plot.read_bytes()[:8] == PNG_SIGNATURE
    document = json.loads(out.read_text())
    assert document["device"].startswith("cpu") and document["torch"] == torch.__version__
    assert (document["reference"], document["scheduler"], document["num_inference_steps"]) == ("sequential", "ddpm", 100)
    rows = {row["sampler"]: row for row in document["results"]}
    assert list(rows) == ["sequential", "paradigms", "parataa"]
    for row in rows.values():
        assert row["chunks"] == 3 and 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
        assert 1 <= row["rounds_median"] <= row["rounds_max"] <= 100 <= row["model_evals_median"]
    assert (rows["sequential"]["max_abs_dev"], rows["sequential"]["rounds_median"]) == (0.0, 100)
    assert rows["sequential"]["residual_history_first_chunk"] == []
    for name in ("paradigms", "parataa"):
        assert rows[name]["rounds_max"] < 100 and 0 < rows[name]["max_abs_dev"] < 0.05
    history = rows["parataa"]["residual_history_first_chunk"]
    assert 1 <= len(history) <= rows["parataa"]["rounds_max"] and history[-1] < history[0]
    table = capsys.readouterr().out
    assert all(f"| {name}" in table for name in rows)


def test_bench_refuses_unknown_samplers_and_missing_checkpoints(tmp_path, capsys):
    assert main(["bench", "--checkpoint", str(tmp_path / "none"), "--chunks", "1"]) == 2
    assert "none: no such file or directory" in capsys.readouterr().err
    assert main(["bench", "--random-model", "shipped", "--samplers", "sequential,picard", "--chunks", "1"]) == 2
    assert "unknown sampler 'picard'" in capsys.readouterr().err


def test_console_script_is_installed():
    # The interpreter's own scripts folder first: a virtual environment's bin/ need not be on PATH.
    beside = Path(sys.executable).with_name("paradigms-policy")
    executable = str(beside) if beside.is_file() else shutil.which("paradigms-policy")
    if executable is None:
        pytest.skip("the package is not installed (pip install -e .); the console script is missing")
    result = subprocess.run([executable, "bench", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--samplers" in result.stdout


def test_bench_measures_against_a_float64_reference(tiny_checkpoint, tmp_path):
    out = tmp_path / "float64.json"
    code = main(["bench", "--checkpoint", str(tiny_checkpoint), "--samplers", "sequential,parataa", "--reference",
                 "float64", "--chunks", "1", "--warmup", "0", "--json", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    rows = {row["sampler"]: row for row in document["results"]}
    assert document["reference"] == "float64" and list(rows) == ["sequential", "parataa"]
    assert 0 < rows["sequential"]["max_abs_dev"] < 1e-4  # float32 against float64, same noise
    assert 0 < rows["parataa"]["max_abs_dev"] < 0.05


def test_real_time_chunking_bench_inpaints_the_previous_chunk(tiny_checkpoint, tmp_path):
    from paradigms_policy.checkpoint import load_policy
    from paradigms_policy.commands.bench import ChunkSource, random_observations

    policy = load_policy(tiny_checkpoint, sampler="parataa", sampler_options={"tolerance": 0.0})
    source = ChunkSource(random_observations(policy, 2), seed=0, episode_starts=np.array([True, False]), delay_steps=2)
    first = source.solve(policy, 0)[0]
    second = source.solve(policy, 1, previous=first)[0]
    # Steps s-1 .. s+1 of the previous chunk (its positions 8, 9, 10) are the new chunk's positions 0, 1, 2.
    torch.testing.assert_close(second[:, 0:3], first[:, 8:11], rtol=0, atol=1e-6)
    out = tmp_path / "rtc.json"
    code = main(["bench", "--checkpoint", str(tiny_checkpoint), "--samplers", "sequential,parataa", "--chunks", "3",
                 "--real-time-chunking", "2", "--json", str(out)])
    document = json.loads(out.read_text())
    assert code == 0 and document["real_time_chunking_delay_steps"] == 2
    assert document["results"][1]["max_abs_dev"] < 1e-2


@pytest.mark.parametrize("overlap", ["soft", "guided"])
def test_real_time_chunking_bench_uses_the_rest_of_the_previous_chunk(tiny_checkpoint, tmp_path, overlap):
    from paradigms_policy.checkpoint import load_policy
    from paradigms_policy.commands.bench import ChunkSource, random_observations

    policy = load_policy(tiny_checkpoint, sampler="parataa", sampler_options={"tolerance": 0.0})
    observations = random_observations(policy, 2)
    hard = ChunkSource(observations, seed=0, episode_starts=np.array([True, False]), delay_steps=2)
    first = hard.solve(policy, 0)[0]
    options = ChunkSource(observations, 0, None, 2, overlap).commitment(policy, first)
    if overlap == "soft":  # positions 0..7 take the previous chunk's 8..15, the first three held
        assert options["committed_positions"] == list(range(8)) and options["committed_weights"][:3] == [1.0] * 3
        torch.testing.assert_close(options["committed_actions"].double(), first[:, 8:], rtol=0, atol=1e-6)
    else:
        assert options["committed_positions"] == [0, 1, 2]
        torch.testing.assert_close(options["guidance"].targets[:, :8].double(), first[:, 8:], rtol=0, atol=1e-6)
    second = ChunkSource(observations, 0, np.array([True, False]), 2, overlap).solve(policy, 1, previous=first)[0]
    torch.testing.assert_close(second[:, 0:3], first[:, 8:11], rtol=0, atol=1e-6)
    assert not torch.allclose(second, hard.solve(policy, 1, previous=first)[0])
    out = tmp_path / "rtc.json"
    code = main(["bench", "--checkpoint", str(tiny_checkpoint), "--samplers", "sequential,parataa", "--chunks", "2",
                 "--warmup", "0", "--real-time-chunking", "2", f"--{overlap}-overlap", "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["real_time_chunking_overlap"] == overlap


def test_an_overlap_without_real_time_chunking_is_refused(tiny_checkpoint, capsys):
    assert main(["bench", "--checkpoint", str(tiny_checkpoint), "--chunks", "1", "--guided-overlap"]) != 0
    assert "--guided-overlap needs --real-time-chunking" in capsys.readouterr().err


def test_an_image_policy_is_benched_on_demonstration_frames_with_the_encoder_timed_apart(pusht_zarr, tmp_path):
    from image_policy import save_image_policy

    checkpoint = save_image_policy(tmp_path / "image")
    out = tmp_path / "bench.json"
    code = main(["bench", "--checkpoint", str(checkpoint), "--data", str(pusht_zarr), "--chunks", "3", "--warmup", "0",
                 "--samplers", "sequential,parataa:tolerance=0:relative_tolerance=0", "--reference", "float64",
                 "--device", "cpu", "--json", str(out)])
    document = json.loads(out.read_text())
    assert code == 0 and document["encoder_parameters"] > 0
    for row in document["results"]:
        assert 0 < row["encoder_p50_ms"] < row["latency_p50_ms"] and row["sampler_p50_ms"] > 0
        assert row["max_abs_dev"] < 1e-4  # float32 against the float64 chain, encoder included
