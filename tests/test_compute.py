"""The process-wide compute settings: malloc's thresholds (keep_freed_memory)."""
import os
import subprocess
import sys

PROBE = """
import resource, sys, torch
from zspace.core.compute import keep_freed_memory
print(keep_freed_memory(), keep_freed_memory())
for _ in range(2):   # the first round grows the heap; the second shows whether freed pages are reused
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        (torch.ones(1 << 20) * 2).sum()           # two fresh 4 MB temporaries a round
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults)
"""


def _probe(env):
    p = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    flags, faults = p.stdout.split("\n")[:2]
    return flags, int(faults)


def test_freed_memory_is_kept_once_per_process_unless_the_user_set_malloc():
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    flags, faults = _probe(base)
    assert flags == "True True"
    # glibc's defaults fault in ~100,000 pages here (each temporary mmapped and zeroed afresh)
    assert faults < 256, faults
    flags, _ = _probe({**base, "MALLOC_ARENA_MAX": "2"})   # the user's own malloc settings stand
    assert flags == "False False"
