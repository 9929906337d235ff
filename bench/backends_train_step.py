"""Training-step speed of the one BERT definition on its two backends, in one command:
MindSpore GRAPH, MindSpore PYNATIVE and our torch backend, fp32, plus the mixed precisions each
backend offers on this machine, on the same real batch from the same weights.

One step is the backend's own `TrainStep`: forward of `sequence_classification` with labels ->
cross-entropy -> gradients -> optimizer update (lr 2e-5, weight decay 0.01, dropout on).
Optimizers: torch AdamW; MindSpore AdamWeightDecay (google's and the model zoo's BERT optimizer;
`--ms_optimizer adamw` times MindSpore's bias-corrected AdamW instead).

    GRAPH:    ms.set_context(mode=ms.GRAPH_MODE); TrainStep(model, opt, jit=True)
    PYNATIVE: ms.set_context(mode=ms.PYNATIVE_MODE); TrainStep(model, opt)
    torch:    TrainStep(model, opt), inside torch.autocast("cpu", bfloat16) for bf16
    MindSpore fp16 / bf16: model.to_float(dtype) before the step (what amp level O2/O3 does to a
              BERT, which has no BatchNorm); what this CPU refuses is reported in one line.

Each configuration runs in a worker process of its own (MindSpore's mode and thread pools are
process-wide), one after another, in `--rounds` rounds whose order alternates, so machine drift
hits all alike; the step times of all rounds are pooled. A step during which other processes used
more than --max_other_share of a core (read from /proc) is set apart. Reported: median ms over the
clean steps, samples/s, the first step's extra time (GRAPH: the one-time compile), and each
configuration's throughput relative to torch fp32.

    .venv/bin/python bench/backends_train_step.py --steps 10 --json_out /tmp/bts.json

Shape legend: B batch, T tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common
from common import LR, ROOT, WEIGHT_DECAY, CpuMeter, cpu_model_name, load_average, summarize

# name -> (backend, MindSpore mode or None, precision)
CONFIGS = {
    "ms_graph_fp32": ("mindspore", "graph", "fp32"),
    "ms_pynative_fp32": ("mindspore", "pynative", "fp32"),
    "torch_fp32": ("torch", None, "fp32"),
    "torch_bf16": ("torch", None, "bf16"),
    "ms_graph_fp16": ("mindspore", "graph", "fp16"),
    "ms_graph_bf16": ("mindspore", "graph", "bf16"),
}
BASELINE = "torch_fp32"


def parse_args(argv=None):
    p = common.batch_parser(__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--ms_optimizer", default="adamweightdecay", choices=("adamweightdecay", "adamw"),
                   help="the MindSpore optimizer (torch always uses AdamW)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration and round, first")
    p.add_argument("--rounds", type=int, default=2, help="passes over the configurations, order reversed each time")
    p.add_argument("--max_other_share", type=float, default=0.1,
                   help="a timed step is clean when other processes used at most this share of one core meanwhile")
    p.add_argument("--seed", type=int, default=0, help="picks the batch rows and seeds both frameworks")
    p.add_argument("--json_out", default=None, help="also write the results here as JSON")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one configuration
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad or not args.configs:
        p.error(f"--configs: {bad or 'empty'}; use a comma-separated subset of {','.join(CONFIGS)}")
    for name in ("batch_size", "max_length", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


# ---- worker: one configuration in its own process -----------------------------------------------

def build_step(args, backend, mode, precision, path, batch):
    """(step() -> loss, facts dict) for one configuration; raises what the framework refuses."""
    import mindtransformer as mt

    if backend == "torch":
        import torch
        from mindtransformer.backends import torch as T

        torch.manual_seed(args.seed)
        model = mt.from_pretrained(path, task="sequence_classification", backend="torch", num_labels=2)
        train_step = T.TrainStep(model, T.make_optimizer(model, "adamw", LR, WEIGHT_DECAY))

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                return train_step(batch)

        return step, {"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                      "optimizer": "adamw"}

    import mindspore as ms
    from mindtransformer.backends import mindspore as M

    ms.set_seed(args.seed)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    model = mt.from_pretrained(path, task="sequence_classification", backend="mindspore", num_labels=2)
    if precision != "fp32":
        # Every cell computes in fp16/bf16 (its float inputs are cast; our Linear and LayerNorm
        # cast their fp32 master weights to the input's dtype); the loss is taken in fp32.
        model.to_float(ms.float16 if precision == "fp16" else ms.bfloat16)
    train_step = M.TrainStep(model, M.make_optimizer(model, args.ms_optimizer, LR, WEIGHT_DECAY), jit=mode == "graph")
    return (lambda: train_step(batch)), {"framework": f"mindspore {ms.__version__}", "optimizer": args.ms_optimizer}


def matmul_gflops(backend: str, rows: int, hidden: int, repeats: int = 20) -> float:
    """GFLOP/s of the feed-forward matmul (rows, H) x (H, 4H) in fp32 in this framework: the op that
    dominates a BERT step, timed on its own to tell framework overhead from kernel speed."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((rows, hidden), dtype=np.float32)
    w = np.random.default_rng(1).standard_normal((hidden, 4 * hidden), dtype=np.float32)
    if backend == "torch":
        import torch

        a, b = torch.from_numpy(x), torch.from_numpy(w)
        run = lambda: torch.matmul(a, b)  # noqa: E731
        sync = lambda out: out  # noqa: E731
    else:
        import mindspore as ms

        a, b = ms.Tensor(x), ms.Tensor(w)
        run = lambda: ms.ops.matmul(a, b)  # noqa: E731
        sync = lambda out: out.asnumpy()  # noqa: E731
    for _ in range(3):
        sync(run())
    start = time.perf_counter()
    for _ in range(repeats):
        sync(run())
    return 2 * rows * hidden * 4 * hidden * repeats / (time.perf_counter() - start) / 1e9


def worker_main(args):
    """Print one JSON line: the first step's seconds, then [(seconds, others' CPU seconds)] per step."""
    import numpy as np

    import mindtransformer as mt
    from common import load_batch
    from mindtransformer.utils import bundled

    backend, mode, precision = CONFIGS[args.worker]
    path = args.model_path or bundled.minilm_path()
    inputs, labels, source = load_batch(mt.load_tokenizer(path), args.data, args.batch_size, args.max_length,
                                        args.pad_to_max_length, args.seed)
    batch = dict(inputs, labels=np.asarray(labels, np.int64))
    result = {"config": args.worker, "source": source, "shape": list(inputs["input_ids"].shape),
              "real_tokens": int(inputs["attention_mask"].sum())}
    try:
        start = time.perf_counter()
        step, facts = build_step(args, backend, mode, precision, path, batch)
        result.update(facts, build_s=time.perf_counter() - start)
        start = time.perf_counter()
        result["first_loss"] = step()
        result["first_step_s"] = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001  the framework's refusal is the result
        # MindSpore's messages open with rulers and headings: keep the first line that says something.
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip().strip("-") and "failed:" not in ln]
        result["error"] = f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]
        print(json.dumps(result), flush=True)
        return
    for _ in range(args.warmup):
        step()
    meter, records = CpuMeter(), []
    for _ in range(args.steps):
        before = meter.snapshot()
        start = time.perf_counter()
        loss = step()
        elapsed = time.perf_counter() - start
        records.append((elapsed, meter.others_seconds(before, meter.snapshot())))
    result.update(records=records, last_loss=loss,
                  matmul_gflops=matmul_gflops(backend, int(inputs["input_ids"].size),
                                              mt.BertConfig.from_pretrained(path).hidden_size))
    print(json.dumps(result), flush=True)


def run_worker(args, name):
    """Run one configuration's worker; its JSON result (the last stdout line that parses)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--data", args.data,
               "--batch_size", str(args.batch_size), "--max_length", str(args.max_length),
               "--ms_optimizer", args.ms_optimizer, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--seed", str(args.seed)]
    command += ["--model_path", args.model_path] if args.model_path else []
    command += ["--pad_to_max_length"] if args.pad_to_max_length else []
    env = dict(os.environ, GLOG_v="3")  # MindSpore's INFO/WARNING chatter off
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"config": name, "error": f"worker exited {done.returncode}: {tail}"[:300]}


# ---- parent: rounds, pooling, the table ---------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    pooled = {}
    for round_index in range(args.rounds):
        order = args.configs if round_index % 2 == 0 else args.configs[::-1]
        for name in order:
            result = run_worker(args, name)
            seen = pooled.setdefault(name, dict(result, records=[], first_step_s_all=[]))
            seen["records"] += result.get("records", [])
            if "first_step_s" in result:
                seen["first_step_s_all"].append(result["first_step_s"])
            print(f"round {round_index + 1}: {name}: " + (result.get("error") or
                  f"first step {result['first_step_s']:.1f} s, loss {result['first_loss']:.4f} -> {result['last_loss']:.4f}"),
                  flush=True)

    rows = []
    for name in args.configs:
        r = pooled[name]
        row = {"config": name, "optimizer": r.get("optimizer"), "framework": r.get("framework"),
               "matmul_gflops": r.get("matmul_gflops")}
        if r["records"]:
            s = summarize(r["records"], args.max_other_share)
            first = min(r["first_step_s_all"])
            row.update(s, samples_per_s=1000 * args.batch_size / s["median_ms"],
                       first_step_extra_s=first - s["median_ms"] / 1000)
        else:
            row["error"] = r.get("error")
        rows.append(row)
    base = next((r for r in rows if r["config"] == BASELINE and "median_ms" in r), None)

    shape = next((pooled[n]["shape"] for n in args.configs if "shape" in pooled[n]), None)
    some = next(iter(pooled.values()))
    print(f"\ncpu: {cpu_model_name()}, os.cpu_count() {os.cpu_count()}, load average at the end {load_average()}")
    print(f"data: {some.get('source')}; batch B, T = {shape}, {some.get('real_tokens')} real tokens")
    header = (f"{'config':<17} | {'optimizer':<15} | {'ms/step':>8} | {'samples/s':>9} | {'vs torch fp32':>13} | "
              f"{'first-step extra s':>18} | {'fp32 matmul GFLOP/s':>19} | clean")
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if "median_ms" not in r:
            print(f"{r['config']:<17} | {str(r['optimizer']):<15} | not supported here: {r['error']}")
            continue
        ratio = f"{base['median_ms'] / r['median_ms']:.2f}x" if base else "-"
        print(f"{r['config']:<17} | {r['optimizer']:<15} | {r['median_ms']:>8.1f} | {r['samples_per_s']:>9.1f} | "
              f"{ratio:>13} | {r['first_step_extra_s']:>18.1f} | {r['matmul_gflops']:>19.0f} | "
              f"{r['clean_steps']}/{r['all_steps']}")
    print("vs torch fp32 = torch fp32 ms / this ms (above 1: faster than torch fp32); "
          "first-step extra = first step minus the median (GRAPH: compile); fp32 matmul = the feed-forward "
          "matmul (B*T, H) x (H, 4H) alone in that framework")
    if args.json_out:
        payload = {"command": " ".join(["bench/backends_train_step.py"] + (argv if argv is not None else sys.argv[1:])),
                   "cpu": cpu_model_name(), "shape": shape, "data": some.get("source"),
                   "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "rows": rows}
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
