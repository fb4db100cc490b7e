"""The GPU check's CPU dry run (the same script and code, tiny models) and the README's GPU table."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from paradigms_policy.commands.gpu_check import NO_RESULTS, results_table

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def dry_run(output: Path, *options: str) -> tuple[dict, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(["bash", str(SCRIPT), str(output), "--device", "cpu", "--tiny", "--batch-sizes", "1,2",
                             "--compile-backend", "eager", *options], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    [path] = output.glob("*.json")
    return json.loads(path.read_text()), result


@pytest.fixture(scope="module")
def dry_run_document(tmp_path_factory):
    output = tmp_path_factory.mktemp("gpu_check")
    document, result = dry_run(output)
    return document, result, output


def rows_by_label(part: dict) -> dict:
    return {row["label"]: row for row in part["rows"]}


def test_dry_run_measures_every_part_and_variant(dry_run_document):
    document, result, output = dry_run_document
    parts = [(part["model"], part["batch"]) for part in document["parts"]]
    assert parts == [("shipped", 1), ("shipped", 2), ("original", 1), ("original", 2)]
    for part in document["parts"]:
        assert "error" not in part
        assert len(part["rows"]) == 9
        for row in part["rows"]:
            assert "error" not in row and "skipped" not in row, row
            assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
            assert row["chunks"] == 2
    assert (output / f"{Path(next(output.glob('*.json'))).stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert "**original**" in result.stdout and "wrote" in result.stdout


def test_dry_run_rows_agree_with_the_float64_reference(dry_run_document):
    shipped = rows_by_label(dry_run_document[0]["parts"][0])
    # Sequential float32 in every form (eager, per-step graphs, whole loop, compiled) is the float64 chain
    # up to float32 rounding; the parallel samplers stop at their tolerances.
    for label in ("sequential, eager", "sequential, graph per step", "sequential, one graph for the loop",
                  "sequential, torch.compile reduce-overhead"):
        assert shipped[label]["max_abs_dev"] < 1e-4, label
        assert shipped[label]["rounds_median"] == 10  # the tiny chain's steps
    assert shipped["DDIM-4 sequential, graph per step"]["rounds_median"] == 4
    assert shipped["DDIM-4 sequential, graph per step"]["max_abs_dev"] < 1e-4
    assert shipped["ParaTAA whole chain, graphs, fp32"]["max_abs_dev"] < 0.05


def test_original_size_runs_the_shipped_models_rounds(dry_run_document):
    parts = dry_run_document[0]["parts"]
    for batch_index in (0, 1):
        shipped, original = rows_by_label(parts[batch_index]), rows_by_label(parts[2 + batch_index])
        for label, row in original.items():
            if row["sampler"] == "sequential":
                assert "at_shipped_rounds" not in row and "max_abs_dev" not in row
            else:
                assert row["at_shipped_rounds"] == round(shipped[label]["rounds_median"])
                assert row["rounds_median"] == row["at_shipped_rounds"]
        assert original["sequential, graph per step"]["speedup_vs_graph_sequential"] == 1.0


def test_a_spent_budget_skips_rows_and_still_writes_the_file(tmp_path):
    document, _ = dry_run(tmp_path, "--budget-s", "0")
    rows = [row for part in document["parts"] for row in part["rows"]]
    assert rows and all(row["skipped"] == "out of time" for row in rows)


def test_readme_gpu_section_is_the_table_of_the_committed_results():
    text = (REPO / "README.md").read_text()
    section = re.search(r"<!-- gpu-results -->\n(.*?)\n<!-- /gpu-results -->", text, re.S)
    assert section, "README has no <!-- gpu-results --> section"
    expected = results_table(REPO / "benchmarks" / "results")
    assert section.group(1).strip() == expected.strip()


def test_results_table_renders_a_result_file(dry_run_document, tmp_path):
    document = dry_run_document[0]
    (tmp_path / "cpu-x86-64-2026-12-01.json").write_text(json.dumps(document))
    table = results_table(tmp_path)
    assert table != NO_RESULTS
    assert table.count("| sequential, graph per step |") == 4
    assert "1.00x" in table
