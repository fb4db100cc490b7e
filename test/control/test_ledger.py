"""control/ledger.py: the policy node's counters, latency statistics and chunk records."""
from types import SimpleNamespace

import numpy as np
import pytest

from paradigms_policy.control.ledger import ChunkLedger
from paradigms_policy.control.observations import Verdict
from paradigms_policy.control.timing import NS_PER_MS, plan_chunk

P = 100 * NS_PER_MS
S = 1_700_000_000 * 10**9


def sampler_stats(rounds=4, model_evals=40, converged=True):
    return SimpleNamespace(rounds=rounds, model_evals=model_evals, converged=converged)


def test_observations_are_counted_by_verdict():
    ledger = ChunkLedger()
    ledger.observation(Verdict(True))
    ledger.observation(Verdict(False, "stale"))
    ledger.observation(Verdict(False, "stale"))
    ledger.observation(Verdict(False, "non_finite"))
    stats = ledger.statistics()
    assert (stats["observations_received"], stats["observations_accepted"], stats["observations_rejected"]) == (4, 1, 3)
    assert (stats["rejected_stale"], stats["rejected_non_finite"], stats["rejected_future"]) == (2, 1, 0)


def test_published_chunks_and_misses_are_recorded_and_summed_up():
    ledger = ChunkLedger()
    record = ledger.inference(S, S + 150 * NS_PER_MS, 0.12, sampler_stats(), round_cap=6)
    actions = np.array([[600.0, 1.0]] * 8)  # one value above the bound in every action
    chunk = plan_chunk(actions, S, S + 150 * NS_PER_MS, P, low=[0, 0], high=[512, 512])
    ledger.published(record, chunk)
    late = ledger.inference(S + P, S + 900 * NS_PER_MS, 0.7, sampler_stats(rounds=9, converged=False), round_cap=None)
    ledger.missed("late", S + P, late)
    ledger.missed("no_time", S + 2 * P)
    ledger.count("inference_errors")
    first, second, third = ledger.records()
    assert first == {"stamp_ns": S, "latency_s": 0.12, "ready_age_s": pytest.approx(0.15), "rounds": 4,
                     "model_evals": 40, "converged": True, "round_cap": 6, "published": True, "first_index": 2,
                     "points": 6}
    assert second["miss"] == "late" and not second["published"] and second["rounds"] == 9
    assert third == {"stamp_ns": S + 2 * P, "latency_s": None, "ready_age_s": None, "rounds": 0, "model_evals": 0,
                     "converged": False, "round_cap": None, "published": False, "miss": "no_time"}
    stats = ledger.statistics()
    assert (stats["inferences"], stats["chunks_published"], stats["deadline_misses"]) == (2, 1, 2)
    assert (stats["miss_late"], stats["miss_no_time"], stats["miss_outdated"]) == (1, 1, 0)
    assert (stats["actions_dropped_outdated"], stats["actions_clipped"], stats["chunks_not_converged"]) == (2, 6, 1)
    assert stats["inference_errors"] == 1
    assert stats["latency_max_ms"] == pytest.approx(700.0) and stats["rounds_max"] == 9
    assert stats["latency_p50_ms"] == pytest.approx(410.0) and stats["rounds_mean"] == pytest.approx(6.5)
    assert ledger.chunk_count == 3


def test_records_since_follows_a_bounded_log():
    ledger = ChunkLedger(log_length=3)
    for k in range(2):
        ledger.missed("no_time", S + k * P)
    records, logged = ledger.records_since(0)
    assert [r["stamp_ns"] for r in records] == [S, S + P] and logged == 2
    for k in range(2, 7):
        ledger.missed("no_time", S + k * P)
    records, logged = ledger.records_since(logged)  # five newer ones, of which the log holds three
    assert [r["stamp_ns"] for r in records] == [S + k * P for k in (4, 5, 6)] and logged == 7
    assert ledger.records_since(logged) == ([], 7)
    assert len(ledger.records()) == 3 and ledger.chunk_count == 7
