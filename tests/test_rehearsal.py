"""The real-size rehearsal's script (benchmarks/rehearsal.py) at toy size: every stage runs and reports its
figures, so the script cannot rot between the runs that fill docs/performance.md."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_rehearsal_stage_runs_at_toy_size(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "rehearsal.py"), "--work", str(tmp_path), "--toy"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "rehearsal.json").read_text())
    assert results["generate"]["sysu"]["files"] > 0 and results["generate"]["regdb"]["files"] > 0
    sysu = results["cache"]["sysu"]
    assert sysu["images"] == results["generate"]["sysu"]["files"] - 4  # the 3 split files and the manifest
    assert sysu["train_ids"] == 10 and set(sysu["query_gallery_by_setting"]) == {"all", "indoor"}
    assert results["preflight"]["driver_rss_mib_after"] > 0
    assert results["protocol"]["sysu"]["probes"] == 2 * 10 * 2  # two modes x 10 trials x single- and 10-shot
    assert len(results["trial"]["step_seconds"]) == 2 and results["trial"]["process_peak_rss_mib"] > 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == list(
        ("generate", "cache", "preflight", "protocol", "trial")
    )
