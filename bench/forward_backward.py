"""Training-step speed: our torch BERT vs `transformers.BertForSequenceClassification`.

One step = zero_grad, forward, cross-entropy on the logits, backward, AdamW step. Both models
start from the same weights (HF's random classifier copied into ours), see the same real batch
(GLUE SST-2 train sentences, or the bundled SQuAD pairs when SST-2 is absent), run in train mode
(dropout on) with the same optimizer settings, in one process. Timed steps alternate between the
two models in small blocks, ours-first then HF-first, so machine noise hits both. Steps during
which other processes took a real share of the CPU (read from /proc) are set apart, since on a
2-core machine one such step can take 10x longer; the median ms/step over the clean steps is
reported, beside the median over all steps. Ratio = HF ms / ours ms: above 1 means we are faster.

    .venv/bin/python bench/forward_backward.py --steps 20 --warmup 3 --json_out bench_fb.json

Shape legend: B batch, T tokens, L labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

import common  # noqa: E402  (bench/common.py; puts the checkout on sys.path)
from common import LR, ROOT, WEIGHT_DECAY, CpuMeter, cpu_model_name, load_average, summarize  # noqa: E402

import mindtransformer as mt  # noqa: E402
from mindtransformer.utils import bundled  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def parse_args(argv=None):
    p = common.batch_parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per model and precision")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model and precision first")
    p.add_argument("--block", type=int, default=2, help="consecutive timed steps of one model before switching")
    p.add_argument("--max_other_share", type=float, default=0.1,
                   help="a timed step is clean when other processes used at most this share of one core meanwhile")
    p.add_argument("--max_steps", type=int, default=0,
                   help="stop waiting for clean steps after this many steps per model (0: 3 x --steps)")
    p.add_argument("--precisions", default="fp32,bf16", help=f"comma-separated subset of {','.join(PRECISIONS)}")
    p.add_argument("--seed", type=int, default=0, help="picks the batch rows and the torch rng")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile N steps of each model and print the top ops (0: off)")
    p.add_argument("--json_out", default=None, help="also write the results here as JSON")
    args = p.parse_args(argv)
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    bad = [s for s in precisions if s not in PRECISIONS]
    if bad or not precisions:
        p.error(f"--precisions: {bad or 'empty'}; use a comma-separated subset of {','.join(PRECISIONS)}")
    args.precisions = precisions
    for name in ("batch_size", "max_length", "steps", "block"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0 or args.profile < 0 or args.max_steps < 0 or args.max_other_share < 0:
        p.error("--warmup, --profile, --max_steps and --max_other_share must be >= 0")
    return args


# ---- data and models -----------------------------------------------------------------------

def load_batch(args, tokenizer):
    """(inputs dict of int64 tensors (B, T), labels (B,), description) from real sentences."""
    inputs, labels, source = common.load_batch(tokenizer, args.data, args.batch_size, args.max_length,
                                               args.pad_to_max_length, args.seed)
    return {k: torch.from_numpy(v) for k, v in inputs.items()}, torch.tensor(labels, dtype=torch.long), source


def load_models(path):
    """(ours, hf), both in train mode with identical weights: HF's random head is copied into ours."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    hf = transformers.BertForSequenceClassification.from_pretrained(path, num_labels=2)
    ours = mt.from_pretrained(path, task="sequence_classification", backend="torch", num_labels=2)
    hf_state, our_state = hf.state_dict(), ours.state_dict()
    missing = sorted(set(our_state) - set(hf_state))
    if missing:
        raise SystemExit(f"HF model lacks {len(missing)} of our weights (first: {missing[0]})")
    ours.load_state_dict({k: hf_state[k] for k in our_state}, strict=True)
    for k, v in ours.state_dict().items():
        if not torch.equal(v, hf_state[k]):
            raise SystemExit(f"weights differ after copying: {k}")
    ours.train()
    hf.train()
    return ours, hf


@contextlib.contextmanager
def autocast(precision):
    if precision == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def make_step(name, model, inputs, labels, precision):
    """A closure running one full training step; returns the loss as a float."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]

    def forward():
        if name == "ours":
            return model(ids, mask, types)["logits"]
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            logits = forward()  # (B, L)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


# ---- checks and measurements ---------------------------------------------------------------

def sdpa_calls(model_call):
    """What scaled_dot_product_attention received during one forward: a list of short strings."""
    seen, original = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *rest, **kw):
        m = "none" if attn_mask is None else f"{attn_mask.dtype} {tuple(attn_mask.shape)}".replace("torch.", "")
        seen.append(f"q {tuple(q.shape)} k {tuple(k.shape)} mask {m} dropout {dropout_p} causal {is_causal}")
        return original(q, k, v, attn_mask, dropout_p, is_causal, *rest, **kw)

    F.scaled_dot_product_attention = spy  # both models look it up at call time
    try:
        with torch.no_grad():
            model_call()
    finally:
        F.scaled_dot_product_attention = original
    return seen


def check_same_logits(ours, hf, inputs):
    """Max |ours - HF| of the logits in eval mode (dropout off): the models compute the same thing."""
    ours.eval()
    hf.eval()
    with torch.no_grad():
        a = ours(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])["logits"]
        b = hf(**inputs).logits
    ours.train()
    hf.train()
    return float((a - b).abs().max())


def time_interleaved(steps, n_steps, warmup, block, max_other_share, max_steps):
    """{name: [(seconds, other processes' CPU seconds)]} per step.

    Blocks alternate A,B then B,A so drift and noise hit both. A step is clean when other
    processes used at most `max_other_share` of one core during it; each model runs until it has
    `n_steps` clean steps or `max_steps` steps in all.
    """
    meter = CpuMeter()
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    records = {name: [] for name in names}

    def clean(name):
        return sum(1 for t, other in records[name] if other <= max_other_share * t)

    def wanted(name):
        return clean(name) < n_steps and len(records[name]) < max_steps

    round_index = 0
    while any(wanted(name) for name in names):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            for _ in range(block):
                if not wanted(name):
                    break
                before = meter.snapshot()
                start = time.perf_counter()
                steps[name]()
                elapsed = time.perf_counter() - start
                records[name].append((elapsed, meter.others_seconds(before, meter.snapshot())))
        round_index += 1
    return records


def profile_steps(step, n, top=15):
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main(argv=None):
    args = parse_args(argv)
    import transformers

    torch.manual_seed(args.seed)
    path = args.model_path or bundled.minilm_path()
    tokenizer = mt.load_tokenizer(path)
    inputs, labels, source = load_batch(args, tokenizer)
    batch, length = inputs["input_ids"].shape
    real_tokens = int(inputs["attention_mask"].sum())
    ours, hf = load_models(path)
    attn_impl = hf.config._attn_implementation

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"cpu: {cpu_model_name()}, os.cpu_count() {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"load average {load_average()}")
    print(f"model: {path}")
    print(f"  {ours.config.num_hidden_layers} layers, hidden {ours.config.hidden_size}, "
          f"{sum(p.numel() for p in ours.parameters()) / 1e6:.1f}M params (ours), "
          f"{sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M params (HF)")
    print(f"data: {source}")
    print(f"batch: B={batch} T={length} ({'padded to max_length' if args.pad_to_max_length else 'padded to longest'}), "
          f"{real_tokens}/{batch * length} real tokens ({100 * real_tokens / (batch * length):.0f}%)")
    print(f"HF attention implementation: {attn_impl}")
    print(f"eval-mode logits max |ours - HF|: {check_same_logits(ours, hf, inputs):.2e}")
    spy = {"ours": sdpa_calls(lambda: ours(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])),
           "HF": sdpa_calls(lambda: hf(**inputs))}
    for name, calls in spy.items():
        described = sorted(set(calls))
        print(f"SDPA calls per forward, {name}: {len(calls)}" + "".join(f"\n    {c}" for c in described))
    print(f"optimizer: AdamW lr {LR} weight_decay {WEIGHT_DECAY}; train mode (dropout on) for both; "
          f"{args.warmup} warmup + {args.steps} timed steps per model and precision, blocks of {args.block}")

    results = []
    for precision in args.precisions:
        # Each precision starts from the same weights: fresh copies, fresh optimizers.
        state_ours, state_hf = ({k: v.clone() for k, v in m.state_dict().items()} for m in (ours, hf))
        steps = {"ours": make_step("ours", ours, inputs, labels, precision),
                 "HF": make_step("HF", hf, inputs, labels, precision)}
        records = time_interleaved(steps, args.steps, args.warmup, args.block, args.max_other_share,
                                   args.max_steps or 3 * args.steps)
        ours_s, hf_s = (summarize(records[name], args.max_other_share) for name in ("ours", "HF"))
        results.append({"precision": precision, "ours_ms": ours_s["median_ms"], "hf_ms": hf_s["median_ms"],
                        "ours_samples_per_s": 1000 * batch / ours_s["median_ms"],
                        "hf_samples_per_s": 1000 * batch / hf_s["median_ms"],
                        "ratio_hf_over_ours": hf_s["median_ms"] / ours_s["median_ms"],
                        "ratio_all_steps": hf_s["median_all_ms"] / ours_s["median_all_ms"],
                        "ours": ours_s, "hf": hf_s})
        if args.profile:
            for name, step in steps.items():
                print(f"\n== profile: {name}, {precision}, {args.profile} steps (self CPU time) ==")
                print(profile_steps(step, args.profile))
        ours.load_state_dict(state_ours)
        hf.load_state_dict(state_hf)

    print(f"\nload average at the end: {load_average()}")
    header = (f"{'precision':<9} | {'ours ms/step':>12} | {'HF ms/step':>10} | {'ours samples/s':>14} | "
              f"{'HF samples/s':>12} | {'ratio HF/ours':>13} | {'clean steps ours/HF':>19}")
    print(header)
    print("-" * len(header))
    for r in results:
        counts = f"{r['ours']['clean_steps']}/{r['ours']['all_steps']}, {r['hf']['clean_steps']}/{r['hf']['all_steps']}"
        print(f"{r['precision']:<9} | {r['ours_ms']:>12.1f} | {r['hf_ms']:>10.1f} | {r['ours_samples_per_s']:>14.1f} | "
              f"{r['hf_samples_per_s']:>12.1f} | {r['ratio_hf_over_ours']:>12.2f}x | {counts:>19}")
    print(f"median over clean steps (other processes used <= {args.max_other_share:.0%} of a core meanwhile); "
          "ratio > 1 means ours is faster")
    for r in results:
        print(f"  {r['precision']}: clean min-max ms ours {r['ours']['min_ms']:.0f}-{r['ours']['max_ms']:.0f}, "
              f"HF {r['hf']['min_ms']:.0f}-{r['hf']['max_ms']:.0f}; median over all steps ours "
              f"{r['ours']['median_all_ms']:.0f}, HF {r['hf']['median_all_ms']:.0f} (ratio {r['ratio_all_steps']:.2f})")
    for r in results:
        print(f"{r['precision']}: ours {r['ours_ms']:.1f} ms/step, HF {r['hf_ms']:.1f} ms/step, "
              f"ratio {r['ratio_hf_over_ours']:.2f}")

    if args.json_out:
        payload = {"command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + (argv if argv is not None else sys.argv[1:])),
                   "torch": torch.__version__, "transformers": transformers.__version__,
                   "cpu": cpu_model_name(), "torch_threads": torch.get_num_threads(),
                   "load_average_end": load_average(), "model_path": path,
                   "data": source, "batch_size": batch, "seq_length": length, "real_tokens": real_tokens,
                   "pad_to_max_length": args.pad_to_max_length, "hf_attn_implementation": attn_impl,
                   "sdpa_calls": spy, "steps": args.steps, "warmup": args.warmup, "block": args.block,
                   "max_other_share": args.max_other_share, "results": results}
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
