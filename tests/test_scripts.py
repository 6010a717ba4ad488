"""scripts/em_at_step.py pools emergent-misalignment runs: values pair up by (base, fine-tune seed)."""
import json
import subprocess
import sys

from conftest import ROOT


def fake_run(path, seeds, arms):
    """A results.json with only what the script reads: seeds, the base and each arm at step 20."""
    path.mkdir()
    st = lambda v: {"offdomain_misaligned": {"per_seed": v}}
    res = {"seeds": seeds, "base": {"plain": st([0.01] * len(seeds))},
           "trajectory": {a: {"20": st(v)} for a, v in arms.items()}}
    (path / "results.json").write_text(json.dumps(res))
    return str(path)


def run_script(*dirs):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "em_at_step.py"), "20", *dirs],
                          capture_output=True, text=True)


def test_pooling_runs_with_different_arms_pairs_by_seed(tmp_path):
    a = fake_run(tmp_path / "a", [[0, 0], [0, 1]], {"insecure": [0.11, 0.21], "secure": [0.01, 0.03]})
    b = fake_run(tmp_path / "b", [[1, 0], [1, 1]], {"insecure": [0.51, 0.61]})  # no secure arm here
    out = run_script(b, a)  # the run without secure first: pairing by position would mismatch
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert "insecure: n = 4 seeds over 2 bases" in out.stdout
    # secure exists for base 0 only: insecure - secure = (0.10 - 0.00, 0.20 - 0.02), mean +14.0 points
    assert rows["secure"].split("|")[2].strip() == "2" and "+14.0" in out.stdout.split("insecure minus")[1]
    # the same fine-tune in two runs would be counted twice: refused
    dup = run_script(a, fake_run(tmp_path / "c", [[0, 0]], {"insecure": [0.11]}))
    assert dup.returncode != 0 and "two of the runs" in dup.stderr
