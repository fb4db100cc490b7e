"""The Push-T evaluation: a short episode gives a well-formed result, through the API and the CLI."""
import json

import numpy as np

import pytest

from paradigms_policy.checkpoint import load_policy, save_policy
from paradigms_policy.commands.evaluate import run_episode, summarize

from conftest import pixel_normalizers, small_config, small_model

pytest.importorskip("gym_pusht", reason="the simulation harness needs gym-pusht (pip install .[sim])")


@pytest.fixture
def tiny_checkpoint(tmp_path):
    config = small_config()
    return save_policy(tmp_path / "tiny", config, small_model(config=config), *pixel_normalizers())


def test_short_episode_is_well_formed(tiny_checkpoint):
    policy = load_policy(tiny_checkpoint, sampler="paradigms", sampler_options={"window": 8})
    episode = run_episode(policy, seed=100000, max_steps=12)
    assert episode["steps"] == 12 and episode["chunks"] == 2  # 8 actions per chunk
    assert 0.0 <= episode["score"] <= 1.0 and isinstance(episode["success"], bool)
    assert episode["rounds_median"] >= 1 and episode["latency_p50_ms"] > 0
    summary = summarize("paradigms", {"window": 8}, [episode, {**episode, "seed": 100001, "score": 0.5}])
    assert summary["episodes"] == 2 and summary["mean_score"] == pytest.approx((episode["score"] + 0.5) / 2)
    low, high = summary["score_ci95"]
    assert low <= summary["mean_score"] <= high


def test_eval_command_writes_json_and_plot(tiny_checkpoint, tmp_path):
    from paradigms_policy.commands.cli import main

    out = tmp_path / "eval.json"
    plot = tmp_path / "eval.png"
    code = main(["eval", "--checkpoint", str(tiny_checkpoint), "--sampler", "sequential,paradigms", "--episodes", "1",
                 "--max-steps", "8", "--workers", "1", "--json", str(out), "--plot", str(plot), "--window", "8"])
    assert code == 0 and plot.stat().st_size > 0
    results = json.loads(out.read_text())
    assert [row["sampler"] for row in results] == ["sequential", "paradigms"]
    for row in results:
        for key in ("episodes", "mean_score", "success_rate", "rounds_median", "latency_p50_ms", "per_episode"):
            assert key in row
        assert row["per_episode"][0]["seed"] == 100000


def test_eval_refuses_a_missing_checkpoint(tmp_path, capsys):
    from paradigms_policy.commands.cli import main

    assert main(["eval", "--checkpoint", str(tmp_path / "absent"), "--episodes", "1"]) == 2
    assert "absent: no such file or directory" in capsys.readouterr().err


def test_episode_log_resumes_without_running_finished_episodes(tiny_checkpoint, tmp_path, monkeypatch):
    from paradigms_policy.commands import evaluate as evaluation

    log = tmp_path / "episodes.jsonl"
    first = evaluation.evaluate(tiny_checkpoint, [("sequential", {})], [100000], workers=1, max_steps=8,
                                episode_log=log, progress=False)
    assert len(log.read_text().splitlines()) == 1

    def no_new_episodes(*args, **kwargs):
        raise AssertionError("a finished episode was run again")

    monkeypatch.setattr(evaluation, "_worker_episode", no_new_episodes)
    again = evaluation.evaluate(tiny_checkpoint, [("sequential", {})], [100000], workers=1, max_steps=8,
                                episode_log=log, progress=False)
    assert again[0]["per_episode"] == first[0]["per_episode"]


def test_scheduler_override_is_used_recorded_and_kept_apart_in_the_episode_log(tiny_checkpoint, tmp_path):
    from paradigms_policy.commands import evaluate as evaluation

    log = tmp_path / "episodes.jsonl"
    checkpoint_own = evaluation.evaluate(tiny_checkpoint, [("sequential", {})], [100000], workers=1, max_steps=8,
                                         episode_log=log, progress=False)[0]
    ddim = evaluation.evaluate(tiny_checkpoint, [("sequential", {})], [100000], workers=1, max_steps=8,
                               episode_log=log, scheduler={"name": "ddim", "num_inference_steps": 4},
                               progress=False)[0]
    assert len(log.read_text().splitlines()) == 2  # the DDIM episode did not reuse the logged one
    assert (ddim["scheduler"], ddim["num_inference_steps"], ddim["rounds_median"]) == ("ddim", 4, 4)
    assert checkpoint_own["scheduler"] == small_config().scheduler.name
    assert checkpoint_own["rounds_median"] == small_config().scheduler.num_inference_steps


def test_real_time_execution_plans_every_replan_steps_and_fills_the_delay(tiny_checkpoint, monkeypatch):
    from paradigms_policy.pusht import env as pusht_env

    policy = load_policy(tiny_checkpoint)
    def untimed(episode):
        return {key: value for key, value in episode.items() if not key.startswith("latency")}

    paper = run_episode(policy, seed=100000, max_steps=12)
    assert untimed(run_episode(policy, seed=100000, max_steps=12, delay_steps=0, replan_every=8)) == untimed(paper)

    applied = []
    original_step = pusht_env.PushTKeypointsEnv.step

    def recording_step(self, action):
        applied.append(np.array(action, dtype=np.float64))
        return original_step(self, action)

    monkeypatch.setattr(pusht_env.PushTKeypointsEnv, "step", recording_step)
    delayed = run_episode(policy, seed=100000, max_steps=12, delay_steps=2, replan_every=5)
    assert delayed["chunks"] == 3 and delayed["steps"] == 12  # plans at steps 0, 5 and 10
    start = pusht_env.PushTKeypointsEnv().reset(seed=100000)[-2:]
    np.testing.assert_allclose(applied[0], start)  # nothing has arrived yet: the agent holds still
    np.testing.assert_allclose(applied[1], start)
    assert not np.allclose(applied[2], start)  # the first chunk's action 2 arrives at step 2


def test_impossible_real_time_execution_is_refused(tiny_checkpoint, capsys):
    from paradigms_policy.commands.cli import main

    code = main(["eval", "--checkpoint", str(tiny_checkpoint), "--episodes", "1", "--delay-steps", "10",
                 "--replan-every", "8"])
    assert code == 2 and "delay_steps + replan_every <= 15" in capsys.readouterr().err
