"""The benchmarks' shared --seeds parsing: a list of integers, or argparse's one-line error."""

import os
import subprocess
import sys

import pytest

from bench.common import seed_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_seed_list_parses_comma_separated_integers():
    assert seed_list("0,1,2") == [0, 1, 2]
    assert seed_list("7") == [7]


@pytest.mark.parametrize("script", ["squad", "glue", "peft"])
def test_a_malformed_seed_list_is_a_one_line_usage_error(script):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", f"{script}.py"), "--seeds", "0,x"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "--seeds" in last and "'0,x' is not a comma-separated list of integers" in last


def test_throughput_ratios_are_taken_within_each_round():
    """bench/pretrain_throughput.py: a ratio pairs the two configurations' runs of one round (a
    process's rate moves from run to run here), and a failed run leaves its round out."""
    from bench.pretrain_throughput import ratio_summary

    one, two = ("torch", "tiny", "fp32", 1), ("torch", "tiny", "fp32", 2)

    def run(key, round_index, rate=None):
        r = dict(zip(("backend", "shape", "precision", "ranks"), key), round=round_index)
        return {**r, "samples_per_s": rate} if rate is not None else {**r, "error": "exit 1"}

    results = [run(one, 0, 50.0), run(two, 0, 75.0), run(one, 1, 60.0), run(two, 1, 120.0),
               run(one, 2, 40.0), run(two, 2, 72.0), run(one, 3, 55.0), run(two, 3)]
    assert ratio_summary(results, two, one) == " 1.80x (median of 3 rounds; 1.50x-2.00x)"
    assert ratio_summary(results[:2], two, one) == " 1.50x"
    assert ratio_summary(results, ("mindspore", "tiny", "fp32", 2), one) == "  n/a"


def test_an_unknown_glue_configuration_is_a_one_line_usage_error():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "glue.py"), "--configs", "ours_torch,ours_trch"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert "--configs: no configuration ours_trch; choose from" in done.stderr.strip().splitlines()[-1]


def test_glue_summary_reads_several_files_once_per_run_and_tests_the_gap(tmp_path):
    """bench/glue.py --summarize a.jsonl,b.jsonl: a run in both files counts once (its last line);
    the last column is Welch's t-test of the accuracies against hf_best's, scipy's own value."""
    import json

    from scipy import stats

    from bench.glue import read_results, summarize

    def run(config, seed, accuracy, rate=100.0):
        return {"task": "rte", "config": config, "seed": seed, "epochs": 3, "accuracy": accuracy, "f1": None,
                "examples_per_s": rate}

    hf = [0.563, 0.592, 0.567, 0.574]
    ours = [0.549, 0.560, 0.570, 0.542]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(run("hf_best", s, a, 60.0)) + "\n" for s, a in enumerate(hf)))
    # seed 0 of ours appears in both files: the second line (0.549) is the one that counts
    second.write_text("".join(json.dumps(run("ours_torch", s, a)) + "\n" for s, a in [(0, 0.9)] + list(enumerate(ours))))
    results = read_results(f"{first},{second}")
    assert len(results) == 8
    rows = {line.split(" | ")[1]: line for line in summarize(results)[2:]}
    expected_p = stats.ttest_ind(ours, hf, equal_var=False).pvalue
    assert rows["ours_torch"].endswith(f"| {expected_p:.3f} |") and 0.01 < expected_p < 0.2
    assert "| 4 | 55.5 ± 1.2 |" in rows["ours_torch"] and "| 1.67x |" in rows["ours_torch"]
    assert rows["hf_best"].endswith("| - |")  # not tested against itself


def test_a_missing_or_foreign_glue_summary_file_is_a_one_line_usage_error(tmp_path):
    foreign = tmp_path / "metrics.jsonl"
    foreign.write_text('{"step": 1, "loss": 0.7}\n')
    for path, message in ((tmp_path / "nothing.jsonl", "nothing.jsonl: no such file"),
                          (foreign, "metrics.jsonl:1: not a run of bench/glue.py --json_out")):
        done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "glue.py"), "--summarize", str(path)],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2
        assert message in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("script, flag", [("bf16_step_parts", "--batc=3"), ("pretrain_throughput", "--round=2")])
def test_the_trainer_benches_refuse_an_abbreviated_or_misspelled_flag(script, flag):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", f"{script}.py"), flag],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert f"unrecognized arguments: {flag}" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("arguments, message", [(["no_such_variant.py"], "variant: no Python file at no_such_variant.py"),
                                                (["v.py", "--step", "3"], "unrecognized arguments: --step"),
                                                (["v.py", "--block", "0"], "--batch, --steps and --block must be >= 1")])
def test_step_ab_refuses_a_missing_variant_and_a_misspelled_flag_in_one_line(arguments, message):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "step_ab.py"), *arguments],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert message in done.stderr.strip().splitlines()[-1]
