"""Pretraining-data speed and memory: our create_pretraining_data (1 and 2 workers) against
google-research/bert's create_pretraining_data.py on the same real text, in one command; peak
memory as the input grows 10x; the record loaders' samples per second.

Input: the real shortened enwiki dump in ../shared/data, extracted by our tools/extract_wiki.py
into one sentence per line (the peer reads the same file). Settings: max_seq_length 128,
max_predictions_per_seq 20, masked_lm_prob 0.15, dupe_factor 5, the bundled MiniLM's uncased
vocab. Every run is a process of its own, timed by wall clock from start to exit (start-up and
imports included, as a user sees it); peak memory is the largest resident set of any process
of the run (getrusage of the waited-for children). Google's script is the unmodified peer from
the `bert-tensorflow` package (pip install 'mindtransformer[bench]'). Ours runs `tokenizers`
single-threaded (it sets TOKENIZERS_PARALLELISM=false): one worker is one core.

    .venv/bin/python bench/pretraining_data.py --json_out /tmp/pd.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from common import ROOT, cpu_model_name, load_average

DUMP = os.path.join(os.path.dirname(ROOT), "shared", "data", "wiki_dump", "enwiki",
                    "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
# google-research/bert's script as Google published it on PyPI (bert-tensorflow 1.0.4, already on
# tensorflow.compat.v1): pip install 'mindtransformer[bench]'.
PEER_MODULE = "bert.create_pretraining_data"
SETTINGS = ["--max_seq_length=128", "--max_predictions_per_seq=20", "--masked_lm_prob=0.15",
            "--dupe_factor=5", "--random_seed=12345", "--do_lower_case=True"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dump", default=DUMP, help="the Wikipedia dump to extract and use")
    p.add_argument("--repeats", type=int, default=2, help="runs per configuration (the median is reported)")
    p.add_argument("--skip_peer", action="store_true", help="do not run google's script")
    p.add_argument("--grow", type=int, default=10, help="input growth factor for the memory check")
    p.add_argument("--json_out", default=None, help="also write the results here as JSON")
    return p.parse_args(argv)


def timed(command, env=None):
    """(wall seconds, stdout + stderr) of one run."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                               env=dict(os.environ, **(env or {})))
    output = process.communicate()[0]
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{command[1]} exited {process.returncode}:\n{output[-3000:]}")
    return seconds, output


def peak_of(command, env=None):
    """Peak RSS (MB) of the largest process of one run: RUSAGE_CHILDREN's ru_maxrss, read in a fresh
    helper process (in this one it would be a running maximum over every earlier run)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL, check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    if done.returncode != 0:
        raise SystemExit(f"{command[1]} failed: {done.stderr[-2000:]}")
    return int(done.stdout.split()[-1]) / 1024


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def main(argv=None):
    args = parse_args(argv)
    from mindtransformer.utils.bundled import minilm_path

    vocab = os.path.join(minilm_path(), "vocab.txt")
    work = tempfile.mkdtemp(prefix="bench_pd_")
    text_dir = os.path.join(work, "text")
    subprocess.run([sys.executable, "tools/extract_wiki.py", "--input_file", args.dump, "--output_dir", text_dir,
                    "--quiet"], check=True, cwd=ROOT)
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as out:
        for name in sorted(os.listdir(text_dir)):
            if name.startswith("wiki_"):
                with open(os.path.join(text_dir, name), encoding="utf-8") as f:
                    out.write(f.read().rstrip("\n") + "\n\n")
    with open(corpus, encoding="utf-8") as f:
        text = f.read()
    sentences = sum(1 for line in text.splitlines() if line.strip())
    documents = text.count("\n\n")
    print(f"cpu: {cpu_model_name()}, {os.cpu_count()} cores, load average {load_average()}")
    print(f"input: {args.dump} -> {documents} documents, {sentences} sentences, {len(text.encode()) / 1e6:.1f} MB")

    python = sys.executable
    ours = lambda out, workers, inp=corpus, extra=(): [  # noqa: E731
        python, "tools/create_pretraining_data.py", "--input_file", inp, "--output_file", out, "--vocab_file", vocab,
        "--num_workers", str(workers), "--quiet", *SETTINGS, *extra]
    peer = [python, "-m", PEER_MODULE, f"--input_file={corpus}", f"--output_file={os.path.join(work, 'peer.tfrecord')}",
            f"--vocab_file={vocab}", *SETTINGS]
    results = {}

    def run(name, command, count_pattern):
        times, counts = [], []
        for _ in range(args.repeats):
            seconds, output = timed(command, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
            times.append(seconds)
            match = re.search(count_pattern, output)
            counts.append(int(match.group(1)) if match else None)
        peak = peak_of(command, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
        seconds = median(times)
        results[name] = {"seconds": seconds, "times": times, "instances": counts[0],
                         "instances_per_s": counts[0] / seconds if counts[0] else None, "peak_rss_mb": peak}
        print(f"{name:<22} {counts[0]:>7} instances  {seconds:7.2f} s (runs {', '.join(f'{t:.2f}' for t in times)})  "
              f"{counts[0] / seconds:8.0f} instances/s  peak RSS {peak:6.0f} MB", flush=True)

    ours_count = r"wrote (\d+) instances"
    run("ours, 1 worker", ours(os.path.join(work, "o1.tfrecord"), 1), ours_count)
    run("ours, 2 workers", ours(os.path.join(work, "o2.tfrecord"), 2), ours_count)
    if not args.skip_peer:
        import importlib.util

        if importlib.util.find_spec("bert") is None:
            raise SystemExit("google's create_pretraining_data is not installed: pip install 'mindtransformer[bench]' "
                             "(or pass --skip_peer)")
        run("google, 1 process", peer, r"Wrote (\d+) total instances")

    # Memory as the input grows: the same text --grow times over (documents repeated), one worker.
    grown = os.path.join(work, "grown.txt")
    with open(grown, "w", encoding="utf-8") as f:
        for _ in range(args.grow):
            f.write(text.rstrip("\n") + "\n\n")
    small_peak = peak_of(ours(os.path.join(work, "m1.tfrecord"), 1, extra=["--dupe_factor=1"]))
    grown_peak = peak_of(ours(os.path.join(work, "m10.tfrecord"), 1, grown, extra=["--dupe_factor=1"]))
    results["memory"] = {"input_x1_peak_mb": small_peak, f"input_x{args.grow}_peak_mb": grown_peak}
    print(f"peak RSS, one worker, dupe_factor 1: input x1 {small_peak:.0f} MB, input x{args.grow} {grown_peak:.0f} MB")
    # Worker scaling where start-up (interpreter, imports, vocab: ~0.3 s, serial) weighs less:
    # the grown input, dupe_factor 1 (twice the work of the runs above), one run each.
    scaling = {}
    for workers in (1, 2):
        seconds, output = timed(ours(os.path.join(work, f"s{workers}.tfrecord"), workers, grown, ["--dupe_factor=1"]))
        scaling[workers] = {"seconds": seconds, "instances": int(re.search(ours_count, output).group(1))}
    results[f"scaling_input_x{args.grow}"] = scaling
    print(f"input x{args.grow}, dupe_factor 1: 1 worker {scaling[1]['seconds']:.2f} s, 2 workers "
          f"{scaling[2]['seconds']:.2f} s ({scaling[1]['seconds'] / scaling[2]['seconds']:.2f}x)")

    # Loaders: batches of 32 from our records through the shared stream, in a fresh process each.
    loader_code = """
import sys, time
from mindtransformer.data import loaders
stream = loaders.PretrainingStream([sys.argv[1]], batch_size=32, seed=0)
next(iter(stream.batches(0)))  # imports and first read out of the timing
start = time.perf_counter(); n = sum(len(b["input_ids"]) for b in stream.batches(0))
print(n, n / (time.perf_counter() - start))
"""
    subprocess.run([*ours(os.path.join(work, "o1.mindrecord"), 1, extra=["--output_format=mindrecord"])],
                   check=True, cwd=ROOT, capture_output=True)
    for fmt, path in (("tfrecord", os.path.join(work, "o1.tfrecord")), ("mindrecord", os.path.join(work, "o1.mindrecord"))):
        done = subprocess.run([python, "-c", loader_code, path], capture_output=True, text=True, cwd=ROOT,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GLOG_v="3"))
        if done.returncode != 0:
            raise SystemExit(f"loader on {fmt} failed: {done.stderr[-2000:]}")
        n, rate = done.stdout.split()[-2:]
        results[f"loader_{fmt}"] = {"samples": int(n), "samples_per_s": float(rate)}
        print(f"loader ({fmt}, batch 32, shuffle buffer 10000): {float(rate):.0f} samples/s over {n} samples")

    one, two = results["ours, 1 worker"], results["ours, 2 workers"]
    print(f"\n2 workers / 1 worker: {two['instances_per_s'] / one['instances_per_s']:.2f}x")
    if "google, 1 process" in results:
        g = results["google, 1 process"]
        print(f"ours 1 worker / google: {one['instances_per_s'] / g['instances_per_s']:.1f}x; "
              f"ours 2 workers / google: {two['instances_per_s'] / g['instances_per_s']:.1f}x")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"command": "bench/pretraining_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                       "documents": documents, "sentences": sentences, "results": results}, f, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
