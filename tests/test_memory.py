"""statcell.memory: freed memory kept for reuse, so a block asked for again costs no page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from statcell.memory import OPT_OUT_VARIABLE

ON_GLIBC = platform.libc_ver()[0] == "glibc"

# In a fresh process: keep_freed_memory's answer, then the page faults taken by asking again for a 64 MiB block just
# freed (each 4 KiB page mapped afresh would fault; one reused, already mapped, does not).
REALLOCATION = """
import resource
import numpy as np
from statcell.memory import keep_freed_memory
kept = keep_freed_memory()
block = np.ones(2**24, np.float32)
del block
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(2**24, np.float32)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


def _reallocate(opt_out: str | None) -> tuple[bool, int]:
    environment = {key: value for key, value in os.environ.items() if key != OPT_OUT_VARIABLE}
    if opt_out is not None:
        environment[OPT_OUT_VARIABLE] = opt_out
    run = subprocess.run([sys.executable, "-c", REALLOCATION], capture_output=True, text=True, check=True,
                         env=environment)
    kept, faults = run.stdout.split()
    return kept == "True", int(faults)


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's malloc only")
def test_a_freed_block_is_reused_without_page_faults():
    kept, faults = _reallocate(None)
    assert kept
    assert faults < 16  # 64 MiB mapped afresh is 16,384 pages (or 32 huge pages)


@pytest.mark.skipif(not ON_GLIBC, reason="glibc's malloc only")
def test_the_environment_opts_out():
    kept, faults = _reallocate("0")
    assert not kept
    assert faults >= 16  # glibc's defaults hand the block back to the kernel, which maps it again


def test_the_command_keeps_freed_memory_before_anything_else(monkeypatch, capsys):
    from statcell import cli

    calls = []
    monkeypatch.setattr(cli.memory, "keep_freed_memory", lambda: calls.append("kept") or True)
    with pytest.raises(SystemExit):
        cli.main(["--help"])  # argparse exits after printing: the setting came before
    assert calls == ["kept"]
    assert "usage: statcell" in capsys.readouterr().out
