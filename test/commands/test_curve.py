"""`paradigms-policy curve`: one evaluation per saved checkpoint, cached beside it, with the sampling asked for."""
import json

import pytest

from paradigms_policy.commands.train import TrainConfig, train

from conftest import PNG_SIGNATURE

pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")


def test_curve_scores_every_checkpoint_and_reuses_the_cached_results(pusht_zarr, tmp_path, capsys):
    from paradigms_policy.commands.cli import main

    run = tmp_path / "run"
    train(TrainConfig(zarr_path=str(pusht_zarr), output_dir=str(run), steps=4, checkpoint_every=2, batch_size=8,
                      down_dims=(16, 32), diffusion_step_embed_dim=16, episodes=[0]), progress=False)
    arguments = ["curve", "--run", str(run), "--episodes", "1", "--workers", "1", "--scheduler", "ddim",
                 "--inference-steps", "2", "--json", str(tmp_path / "curve.json"), "--plot", str(tmp_path / "curve.png")]
    assert main(arguments) == 0
    points = json.loads((tmp_path / "curve.json").read_text())
    assert [point["steps"] for point in points] == [2, 4]
    assert all((point["scheduler"], point["num_inference_steps"], point["episodes"]) == ("ddim", 2, 1)
               for point in points)
    cached = run / "checkpoints" / "step_0000002" / "eval_sequential_nameddim_num_inference_steps2_seed100000_n1.json"
    assert json.loads(cached.read_text())["mean_score"] == points[0]["mean_score"]
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG_SIGNATURE
    cached.write_text(json.dumps({**points[0], "mean_score": 0.5}))  # a second run reads the cache
    capsys.readouterr()
    assert main(arguments) == 0
    assert "2 steps: mean score 0.500" in capsys.readouterr().out
