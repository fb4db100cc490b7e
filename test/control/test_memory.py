"""control/memory.py: RSS and heap samples of the running process, and the growth slope."""
import pytest

from paradigms_policy.control.memory import (MemorySampler, read_memory_details, read_peak_rss_kib, read_rss_kib,
                                             slope_per_1000)


def test_slope_per_1000():
    assert slope_per_1000([0, 1000, 2000], [10.0, 20.0, 30.0]) == pytest.approx(10.0)
    assert slope_per_1000([0, 500, 1000], [5.0, 5.0, 5.0]) == 0.0
    assert slope_per_1000([5], [1.0]) is None
    assert slope_per_1000([5, 5], [1.0, 2.0]) is None


def test_rss_readings_are_positive_and_consistent():
    rss, source = read_rss_kib()
    assert rss > 1024 and source in ("VmRSS", "ru_maxrss (peak)")
    details = read_memory_details()
    if source == "VmRSS":  # Linux: the parts add up to the whole, the peak is at least the current size
        assert details["rss_anon_kib"] + details["rss_file_kib"] + details["rss_shmem_kib"] == pytest.approx(rss, rel=0.05)
        assert read_peak_rss_kib() >= rss * 0.95 and details["threads"] >= 1


def test_memory_sampler_traces_the_heap_growth_after_the_warm_up():
    sampler = MemorySampler(traced=True, warmup_cycles=1)
    kept = []
    sampler.sample(0, note="start")
    sampler.sample(1)  # the warm-up's end: the heap snapshot
    kept.append(bytearray(4 * 1024 * 1024))  # 4 MiB allocated on this line after the warm-up
    sampler.sample(2)
    sites = sampler.finish()
    assert [s["cycle"] for s in sampler.samples] == [0, 1, 2] and sampler.samples[0]["note"] == "start"
    assert sampler.samples[2]["heap_kib"] - sampler.samples[1]["heap_kib"] > 4000
    assert "test_memory.py:" in sites[0]["site"] and sites[0]["growth_kib"] >= 4096
    untraced = MemorySampler(traced=False, warmup_cycles=0)
    untraced.sample(0)
    assert "heap_kib" not in untraced.samples[0] and untraced.finish() is None
