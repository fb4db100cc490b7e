"""Child process of test_malformed.py: load checkpoints under an address-space limit, report how each load ends.

    python bounded_load.py HEADROOM_BYTES WARM_UP_CHECKPOINT PATH...

The warm-up checkpoint is loaded first (imports, allocator arenas), then RLIMIT_AS is set to the
address space in use plus HEADROOM_BYTES. One JSON line per PATH, printed as soon as it ends:
{"path", "error": exception class or null, "message", "seconds",
 "peak_growth": bytes by which the peak resident memory during the load exceeds the resident memory
 before it (Linux's VmHWM, reset through /proc/self/clear_refs before each load)}.
"""
import json
import re
import resource
import sys
import time

from paradigms_policy.checkpoint import load_policy


def address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def memory(key: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident since the last reset), in bytes."""
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1)) * 1024


def reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return memory("VmRSS")


def main(headroom: int, warm_up: str, paths: list[str]) -> None:
    load_policy(warm_up)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = address_space() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    for path in paths:
        resident = reset_peak()
        start = time.perf_counter()
        try:
            load_policy(path)
            error, message = None, ""
        except Exception as err:  # the test asserts which class it is
            error, message = type(err).__name__, str(err)
        record = {"path": path, "error": error, "message": message[:2000], "seconds": time.perf_counter() - start,
                  "peak_growth": memory("VmHWM") - resident}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3:])
