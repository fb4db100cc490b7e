"""The Push-T evaluation: a short episode gives a well-formed result, through the API and the CLI."""
import json

import numpy as np
import torch

import pytest

from paradigms_policy.checkpoint import load_policy
from paradigms_policy.commands.evaluate import run_episode, summarize
from paradigms_policy.pusht.env import episode_score

from conftest import PNG_SIGNATURE

pytest.importorskip("gym_pusht", reason="the simulation harness needs gym-pusht (pip install .[sim])")



def test_short_episode_is_well_formed(tiny_checkpoint):
    policy = load_policy(tiny_checkpoint, sampler="paradigms", sampler_options={"window": 8})
    episode = run_episode(policy, seed=100000, max_steps=12)
    assert episode["steps"] == 12 and episode["chunks"] == 2  # 8 actions per chunk
    assert (episode["score"], episode["success"]) == episode_score([episode["max_coverage"]])
    assert 1 <= episode["rounds_median"] < 100 and 0 < episode["latency_p50_ms"] <= episode["latency_max_ms"]
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
    assert code == 0 and plot.read_bytes()[:8] == PNG_SIGNATURE
    results = json.loads(out.read_text())
    assert [row["sampler"] for row in results] == ["sequential", "paradigms"]
    for row in results:
        [episode] = row["per_episode"]
        assert (row["episodes"], episode["seed"], episode["steps"]) == (1, 100000, 8)
        assert (row["mean_score"], row["success_rate"]) == (episode["score"], float(episode["success"]))
        assert (row["rounds_median"], row["latency_p50_ms"]) == (episode["rounds_median"], episode["latency_p50_ms"])
    assert results[0]["rounds_median"] == 100 and 1 <= results[1]["rounds_median"] < 100


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


def test_scheduler_override_is_used_recorded_and_kept_apart_in_the_episode_log(tiny_checkpoint, tmp_path,
                                                                                policy_config):
    from paradigms_policy.commands import evaluate as evaluation

    log = tmp_path / "episodes.jsonl"
    checkpoint_own = evaluation.evaluate(tiny_checkpoint, [("sequential", {})], [100000], workers=1, max_steps=8,
                                         episode_log=log, progress=False)[0]
    ddim = evaluation.evaluate(tiny_checkpoint, [("sequential", {})], [100000], workers=1, max_steps=8,
                               episode_log=log, scheduler={"name": "ddim", "num_inference_steps": 4},
                               progress=False)[0]
    assert len(log.read_text().splitlines()) == 2  # the DDIM episode did not reuse the logged one
    assert (ddim["scheduler"], ddim["num_inference_steps"], ddim["rounds_median"]) == ("ddim", 4, 4)
    scheduler = policy_config.scheduler  # the checkpoint's own
    assert (checkpoint_own["scheduler"], checkpoint_own["rounds_median"]) == (scheduler.name,
                                                                              scheduler.num_inference_steps)


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


@pytest.mark.parametrize("flags, message", [
    (["--guided-overlap"], "need --real-time-chunking"),
    (["--real-time-chunking", "--soft-overlap", "--guided-overlap"], "choose one of --soft-overlap and --guided-overlap"),
])
def test_overlap_options_need_real_time_chunking_and_exclude_each_other(tiny_checkpoint, capsys, flags, message):
    from paradigms_policy.commands.cli import main

    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--episodes", "1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_chunk_player_commits_what_will_run_and_records_switches():
    from paradigms_policy.commands.evaluate import ChunkPlayer

    player = ChunkPlayer(delay_steps=2, replan_every=3, hold=np.array([5.0, 5.0]))
    np.testing.assert_array_equal(player.committed(0), [[5, 5], [5, 5]])  # nothing executed yet: the hold runs
    player.receive(0, np.array([[float(k), 0.0] for k in range(10)]))  # actions 2, 3, 4 run at steps 2, 3, 4
    executed = [player.next_action(step).copy() for step in range(3)]
    np.testing.assert_array_equal(executed, [[5, 5], [5, 5], [2, 0]])
    # Planned at step 3: the action executed at step 2, then those of steps 3 and 4 (the old chunk's 3 and 4).
    np.testing.assert_array_equal(player.committed(3), [[2, 0], [3, 0], [4, 0]])
    player.receive(3, np.array([[10.0 + k, 0.0] for k in range(10)]))  # its actions 2.. run from step 5
    executed += [player.next_action(step).copy() for step in range(3, 7)]
    np.testing.assert_array_equal(executed[3:], [[3, 0], [4, 0], [12, 0], [13, 0]])
    smooth = player.smoothness()
    # Switches at steps 2 (hold -> 2) and 5 (4 -> 12); the other steps move 0, 1, 1, 1.
    assert smooth["switch_jump_max"] == pytest.approx(8.0)
    assert smooth["switch_jump_mean"] == pytest.approx((np.hypot(3, 5) + 8.0) / 2)
    assert smooth["step_mean"] == pytest.approx(0.75)


def test_real_time_chunking_continues_the_committed_actions(tiny_checkpoint):
    from paradigms_policy.commands.evaluate import ChunkPlayer, commitment_options

    policy = load_policy(tiny_checkpoint, sampler="parataa")
    player = ChunkPlayer(delay_steps=3, replan_every=5, hold=np.array([100.0, 100.0]))
    player.receive(0, np.linspace([100.0, 100.0], [300.0, 200.0], 15))
    for step in range(5):
        player.next_action(step)
    committed = np.stack(player.committed(5))
    options = commitment_options(policy, player, 5)
    assert options["committed_positions"] == [0, 1, 2, 3]  # step 4 (executed), then steps 5, 6, 7
    output = policy.predict(np.full((2, 20), 256.0, np.float32), generator=torch.Generator().manual_seed(0), **options)
    np.testing.assert_allclose(output.action_horizon[:4], committed, atol=1e-3)  # pixels, after unnormalising


def test_soft_overlap_pulls_the_rest_of_the_running_chunk_with_decaying_weights(tiny_checkpoint):
    from paradigms_policy.commands.evaluate import ChunkPlayer, commitment_options
    from paradigms_policy.samplers.inpainting import soft_weights

    policy = load_policy(tiny_checkpoint, sampler="parataa")
    player = ChunkPlayer(delay_steps=2, replan_every=5, hold=np.array([100.0, 100.0]))
    chunk = np.linspace([100.0, 100.0], [300.0, 200.0], 15)  # the actions of steps 0..14
    player.receive(0, chunk)
    for step in range(5):
        player.next_action(step)
    np.testing.assert_array_equal(player.overlap(5), chunk[7:])  # after steps 5, 6 (committed): 7..14
    options = commitment_options(policy, player, 5, "soft")
    # Step 4 at position 0, then 5..14 at 1..10: the chunk's 10 last actions, the first 3 held.
    assert options["committed_positions"] == list(range(11))
    assert options["committed_weights"] == soft_weights(3, 11)
    np.testing.assert_allclose(policy.action_normalizer.unnormalize(options["committed_actions"])[0].numpy(),
                               chunk[4:], atol=1e-4)
    output = policy.predict(np.full((2, 20), 256.0, np.float32), generator=torch.Generator().manual_seed(0), **options)
    np.testing.assert_allclose(output.action_horizon[:3], chunk[4:7], atol=1e-3)  # the held prefix


def test_guided_overlap_holds_the_committed_actions_and_guides_towards_the_whole_overlap(tiny_checkpoint):
    from paradigms_policy.commands.evaluate import ChunkPlayer, commitment_options
    from paradigms_policy.samplers.inpainting import soft_weights

    policy = load_policy(tiny_checkpoint, sampler="parataa")
    player = ChunkPlayer(delay_steps=2, replan_every=5, hold=np.array([100.0, 100.0]))
    chunk = np.linspace([100.0, 100.0], [300.0, 200.0], 15)
    player.receive(0, chunk)
    for step in range(5):
        player.next_action(step)
    options = commitment_options(policy, player, 5, "guided")
    assert options["committed_positions"] == [0, 1, 2]  # held: step 4 (executed), then 5 and 6
    guidance = options["guidance"]
    np.testing.assert_allclose(policy.action_normalizer.unnormalize(guidance.targets[0, :11]).numpy(), chunk[4:],
                               atol=1e-4)
    np.testing.assert_allclose(guidance.weights[0, :, 0].numpy(), soft_weights(3, 11) + [0.0] * 5, atol=1e-7)
    output = policy.predict(np.full((2, 20), 256.0, np.float32), generator=torch.Generator().manual_seed(0), **options)
    np.testing.assert_allclose(output.action_horizon[:3], chunk[4:7], atol=1e-3)


def test_real_time_chunking_episode_records_smoothness(tiny_checkpoint):
    policy = load_policy(tiny_checkpoint)
    episode = run_episode(policy, seed=100000, max_steps=12, delay_steps=2, replan_every=5, real_time_chunking=True)
    assert episode["chunks"] == 3
    assert episode["switch_jump_max"] >= episode["switch_jump_mean"] >= 0 and episode["step_mean"] > 0


def test_delay_study_pairs_every_row_with_the_undelayed_plain_row(tiny_checkpoint, tmp_path):
    from paradigms_policy.commands.cli import main

    out, plot = tmp_path / "delays.json", tmp_path / "delays.png"
    code = main(["delays", "--checkpoint", str(tiny_checkpoint), "--delays", "0,2", "--episodes", "2", "--max-steps", "10",
                 "--workers", "1", "--json", str(out), "--plot", str(plot), "--replan-every", "5",
                 "--executions", "plain,soft"])
    rows = json.loads(out.read_text())
    assert code == 0 and plot.read_bytes()[:8] == PNG_SIGNATURE
    assert [(row["delay_steps"], row["mode"]) for row in rows] == [(0, "plain"), (0, "soft"), (2, "plain"),
                                                                    (2, "soft")]
    assert rows[-1]["execution"] == {"delay_steps": 2, "replan_every": 5, "real_time_chunking": True,
                                     "soft_overlap": True}
    assert rows[0]["paired_vs_baseline"] == {"mean": 0.0, "half_width_95": 0.0}
    for row in rows[1:]:
        expected = np.mean([mine["score"] - base["score"] for mine, base in zip(row["per_episode"], rows[0]["per_episode"])])
        assert row["paired_vs_baseline"]["mean"] == pytest.approx(expected)
        assert row["execution"]["replan_every"] == 5 and row["execution"].get("real_time_chunking", False) == row["real_time_chunking"]


def test_an_image_policy_sees_the_drawn_frame_and_the_agent_position(tmp_path):
    from image_policy import image_policy_config, save_image_policy

    from paradigms_policy.commands.evaluate import observation_window, step_observation
    from paradigms_policy.pusht.env import PushTKeypointsEnv
    from paradigms_policy.vision import image_input

    config = image_policy_config()
    env = PushTKeypointsEnv()
    try:
        observation = env.reset(seed=100000)
        step = step_observation(config, env, observation)
        assert np.array_equal(step["image"], image_input(env.frame()))
        assert step["agent_pos"].dtype == np.float32 and np.array_equal(step["agent_pos"], observation[-2:])
        window = observation_window([step, step])
        assert window["image"].shape == (2, 3, 96, 96) and window["agent_pos"].shape == (2, 2)
        two_cameras = image_policy_config(cameras=(("left", (3, 96, 96)), ("right", (3, 96, 96))))
        with pytest.raises(ValueError, match="one square camera and the agent position"):
            step_observation(two_cameras, env, observation)
    finally:
        env.close()
    episode = run_episode(load_policy(save_image_policy(tmp_path / "image")), seed=100000, max_steps=9)
    assert episode["chunks"] == 2 and episode["steps"] == 9
