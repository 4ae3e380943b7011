"""The benchmarks' CPU split by part, read from /proc for real processes."""

from __future__ import annotations

import subprocess
import sys

from bench.cpu_use import measured_cpu, part_of

BUSY = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"


def test_parts_are_named_from_command_lines() -> None:
    assert part_of("/work/.venv/bin/python -m agent", 1) == "agent"
    assert part_of("/usr/bin/chromium --type=renderer --lang=en", 1) == "chromium_pages"
    assert part_of("/usr/bin/chromium --type=utility --utility-sub-type=audio.mojom.AudioService", 1) == (
        "chromium_audio_network_gpu"
    )
    assert part_of("/usr/bin/chromium --headless --no-sandbox", 1) == "chromium_browser"
    assert part_of("/usr/bin/turnserver -n --listening-ip=127.0.0.1", 1) == "coturn"
    assert part_of("sshd: root", 1) is None


def test_a_process_that_starts_and_ends_inside_the_block_is_counted() -> None:
    # The child is one of ours by its command line (as a Chromium page is) and ends before the block
    # does, so only the sampling thread can have seen its CPU time.
    with measured_cpu(interval=0.05) as use:
        subprocess.run([sys.executable, "-c", BUSY, "--type=renderer"], check=True, timeout=30)
    report = use.report()
    seconds = report["seconds"]
    assert isinstance(seconds, float)
    assert 0.4 < use.cores["chromium_pages"] * seconds < 0.8  # 0.6 s of CPU, less what the last sample missed
    assert report["machine_cores"] and report["total_cores"] >= use.cores["chromium_pages"]
