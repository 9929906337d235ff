"""Pretraining throughput of the real trainer: samples/s and model FLOPs utilisation (MFU).

Each configuration runs `python -m mindtransformer.models.bert.bert_trainer` (one rank, pinned
to one core with taskset) or `examples/pretrain/pretrain_bert_distributed.sh 2 ...` (two ranks
under mpirun on the two cores) with one kernel thread per rank, on records made from the bundled Wikipedia excerpt, and reads the per-step
samples/s from metrics.jsonl (the first --warmup steps, which compile and fill caches, are
left out; the median of the rest is reported). MFU = samples/s x model FLOPs per sample / peak,
where the peak is a one-thread torch matmul measured in this same run, before and after the
configurations, the higher of the two (x ranks for two ranks).

    .venv/bin/python bench/pretrain_throughput.py [--only tiny] [--rounds N] [--json_out F]

Targets (issue 5): bf16 >= 2.5x fp32; two ranks >= 1.8x one rank; torch bf16 MFU >= 40 %.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, cpu_model_name, load_average  # noqa: E402

# name -> (layers, hidden, heads, intermediate, micro-batch, micro-batches per step). BERT-base
# takes 32 samples per rank and step, google's run_pretraining.py default train_batch_size, in
# one micro-batch, as a user whose memory holds it would run (here it does, in fp32 too): the
# all-reduce of its 110M gradients and the per-step passes over them (optimizer, casts: ~0.4 s in
# bf16) are paid once per 32 samples, as in real pretraining. --base_micro_batch 8 gives the
# bench's setting before 2026-12-03 (a further session); --base_micro_batch 2
# --base_micro_batches 4 the one before 2026-12-03.
SHAPES = {"tiny": (2, 128, 2, 512, 16, 1), "base": (12, 768, 12, 3072, 32, 1)}
T, P, V = 128, 20, 30522  # the records' max_seq_length, max_predictions_per_seq; MiniLM's vocabulary


def flops_per_sample(layers: int, hidden: int, intermediate: int) -> float:
    """Training FLOPs of one sample: 3 x forward (backward = 2 x forward), matmuls only.
    Forward per layer: QKV and output projections 2*T*4H^2, feed-forward 2*T*2HI, attention
    scores and context 2*2*T^2*H; MLM head at P positions: transform 2PH^2 + decoder 2PHV;
    pooler 2H^2."""
    per_layer = 2 * T * 4 * hidden ** 2 + 2 * T * 2 * hidden * intermediate + 4 * T ** 2 * hidden
    heads = 2 * P * hidden ** 2 + 2 * P * hidden * V + 2 * hidden ** 2
    return 3.0 * (layers * per_layer + heads)


def matmul_peak(dtype_name: str, size: int = 1024, seconds: float = 2.0, windows: int = 4) -> float:
    """GFLOP/s of a (size x size) @ (size x size) matmul on one thread in torch: the best of
    `windows` timings of seconds / windows each. The best, as a peak is: this machine's rate moved
    by 10-20 % within seconds (1,010-1,281 GFLOP/s in bf16 on one day), and a slow moment would
    flatter the MFU."""
    import torch

    torch.set_num_threads(1)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    rates = []
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows:
            a @ b
            count += 1
        rates.append(2 * size ** 3 * count / (time.perf_counter() - start) / 1e9)
    return max(rates)


def make_records(directory: str) -> str:
    sys.path.insert(0, ROOT)
    from tests.conftest import make_pretraining_records

    return make_pretraining_records(directory, "tfrecord", dupe_factor=2)


def run_config(records: str, work: str, backend: str, shape: str, precision: str, ranks: int,
               steps: int, warmup: int, base_micro_batch: int = 0, base_micro_batches: int = 0,
               allreduce: str = "auto") -> dict:
    layers, hidden, heads, intermediate, micro_batch, accumulation = SHAPES[shape]
    if shape == "base":
        micro_batch, accumulation = base_micro_batch or micro_batch, base_micro_batches or accumulation
    per_rank = micro_batch * accumulation
    run_dir = os.path.join(work, f"{backend}-{shape}-{precision}-{ranks}")
    flags = [f"--backend={backend}", f"--num_layers={layers}", f"--embedding_size={hidden}", f"--num_heads={heads}",
             f"--intermediate_size={intermediate}", f"--global_batch_size={per_rank * ranks}",
             f"--grad_accumulation_steps={accumulation}",
             f"--precision={precision}", f"--train_steps={warmup + steps}", f"--save_checkpoint_steps={10 ** 6}",
             "--num_threads=1", "--dropout=0.1", f"--save_checkpoint_path={run_dir}", f"--allreduce={allreduce}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if ranks == 1:
        # One core, as each of the two ranks gets: a framework's helper threads (MindSpore's actor
        # and kernel threads, tf.data's reader) would otherwise borrow the idle second core.
        command = ["taskset", "-c", "0", sys.executable, "-m", "mindtransformer.models.bert.bert_trainer",
                   f"--train_data_path={records}", *flags]
    else:
        hostfile = os.path.join(work, "hostfile")
        with open(hostfile, "w") as f:
            f.write(f"localhost slots={ranks}\n")
        command = ["bash", os.path.join(ROOT, "examples", "pretrain", "pretrain_bert_distributed.sh"), str(ranks),
                   hostfile, records, *flags]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    result = {"backend": backend, "shape": shape, "precision": precision, "ranks": ranks, "batch": per_rank * ranks,
              "micro_batch": micro_batch, "micro_batches": accumulation}
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()]
        return {**result, "error": (last[-1] if last else f"exit {done.returncode}")[:160]}
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rates = [json.loads(line)["samples_per_s"] for line in f if '"loss"' in line][warmup:]
    return {**result, "samples_per_s": statistics.median(rates), "steps_timed": len(rates)}


def report(r: dict, peaks: dict | None = None) -> None:
    """Adds GFLOP/s (and MFU, given the peaks) to a run's result and prints its line."""
    backend, shape, precision, ranks = r["backend"], r["shape"], r["precision"], r["ranks"]
    if "samples_per_s" not in r:
        print(f"{backend:9} {shape:4} {precision} ranks={ranks}: failed: {r['error']}", flush=True)
        return
    layers, hidden, _, intermediate, _, _ = SHAPES[shape]
    r["gflops"] = r["samples_per_s"] * flops_per_sample(layers, hidden, intermediate) / 1e9
    line = (f"{backend:9} {shape:4} {precision} ranks={ranks} batch={r['batch']:>3}: "
            f"{r['samples_per_s']:8.2f} samples/s  {r['gflops']:7.1f} GFLOP/s")
    if peaks:
        r["mfu"] = r["gflops"] / (peaks[precision] * ranks)
        line += f"  MFU {100 * r['mfu']:5.1f} %"
    print(line, flush=True)


def ratio_summary(results: list, a: tuple, b: tuple) -> str:
    """Rate of configuration a over b, taken within each round (a process's rate here moves by
    +-10 % from run to run, so a ratio of runs far apart in time says little): the median over
    the rounds, with the range when there are several."""
    def rates(key):
        return {r["round"]: r["samples_per_s"] for r in results
                if (r["backend"], r["shape"], r["precision"], r["ranks"]) == key and "samples_per_s" in r}

    x, y = rates(a), rates(b)
    ratios = sorted(x[k] / y[k] for k in x if k in y)
    if not ratios:
        return "  n/a"
    if len(ratios) == 1:
        return f"{ratios[0]:5.2f}x"
    return f"{statistics.median(ratios):5.2f}x (median of {len(ratios)} rounds; {ratios[0]:.2f}x-{ratios[-1]:.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--only", choices=sorted(SHAPES), help="one model shape only")
    parser.add_argument("--backends", default="torch,mindspore", help="comma-separated backends to run")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation, caches)")
    parser.add_argument("--base_micro_batch", type=int, default=0,
                        help="BERT-base: samples per micro-batch (0: the default 32)")
    parser.add_argument("--base_micro_batches", type=int, default=0,
                        help="BERT-base: micro-batches per rank and step, accumulated (0: the default 1)")
    parser.add_argument("--allreduce", default="auto", choices=("auto", "mpi", "framework"),
                        help="the trainer's flag for the two-rank runs: how gradients are averaged")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every configuration this many times, round by round; ratios are taken "
                             "within a round and their median printed")
    parser.add_argument("--json_out", help="also write the results here")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}: must be >= 1")
    if args.base_micro_batch < 0 or args.base_micro_batches < 0:
        parser.error("--base_micro_batch and --base_micro_batches must be >= 0 (0: the default)")
    peaks = {dtype: matmul_peak(dtype) for dtype in ("fp32", "bf16")}
    print(f"cpu: {cpu_model_name()}, {os.cpu_count()} cores, load average {load_average()}")
    print(f"one-thread torch matmul peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s")
    shapes = [args.only] if args.only else list(SHAPES)
    configs = [(backend, shape, precision, ranks) for shape in shapes
               for backend, precision, ranks in (("torch", "fp32", 1), ("torch", "bf16", 1), ("torch", "fp32", 2),
                                                 ("mindspore", "fp32", 1), ("mindspore", "fp32", 2))
               if backend in args.backends.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_pt_") as work:
        records = make_records(work)
        for round_index in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_index + 1} of {args.rounds}", flush=True)
            for backend, shape, precision, ranks in configs:
                r = run_config(records, work, backend, shape, precision, ranks, args.steps, args.warmup,
                               args.base_micro_batch, args.base_micro_batches, args.allreduce)
                r["round"] = round_index
                report(r)
                results.append(r)

    # The peak again, and the higher of the two: this machine's matmul rate moved by 10 % from one
    # measurement to the next, and a low one would flatter the MFU.
    after = {dtype: matmul_peak(dtype) for dtype in ("fp32", "bf16")}
    print(f"matmul peak after the runs: fp32 {after['fp32']:.1f} GFLOP/s, bf16 {after['bf16']:.1f} GFLOP/s; "
          "MFU against the higher of the two measurements:")
    measured = {"before": peaks, "after": after}
    peaks = {dtype: max(peaks[dtype], after[dtype]) for dtype in peaks}
    for r in results:
        if args.rounds > 1:
            print(f"round {r['round'] + 1}: ", end="")
        report(r, peaks)

    print()
    print(f"{'matmul peak bf16 / fp32':36} {peaks['bf16'] / peaks['fp32']:5.2f}x")
    for shape in shapes:
        for label, a, b in ((f"torch {shape} bf16 / fp32", ("torch", shape, "bf16", 1), ("torch", shape, "fp32", 1)),
                            (f"torch {shape} 2 ranks / 1 rank", ("torch", shape, "fp32", 2), ("torch", shape, "fp32", 1)),
                            (f"mindspore {shape} 2 ranks / 1 rank", ("mindspore", shape, "fp32", 2),
                             ("mindspore", shape, "fp32", 1)),
                            (f"mindspore / torch {shape} fp32", ("mindspore", shape, "fp32", 1), ("torch", shape, "fp32", 1))):
            print(f"{label:36} {ratio_summary(results, a, b)}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"peaks_gflops": peaks, "peak_measurements_gflops": measured, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
