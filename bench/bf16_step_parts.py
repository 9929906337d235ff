"""Where a BERT-base bf16 training step's time goes, and the MFU it could reach if the rest were free.

One process, one thread on one core (run it under `taskset -c 0`): the bf16 matmul peak (as
bench/pretrain_throughput.py measures it), then the torch engine's step (forward, backward,
clipping and fused AdamW; dropout 0.1) on random batches of 128 tokens, timed alone and then
under torch.profiler. It prints the step's matmuls (torch's and MKL's weight gradients) and its optimizer's fixed
passes over the 110M parameters (fused AdamW, the gradient norm), the other passes over
weight-sized tensors (casts of the weights to bf16 and of their gradients to fp32, the word
embeddings' gradient), each with its share of the step, and two MFU figures against the
measured peak: the step's, and the ceiling left if only the matmuls and the optimizer took time.

    taskset -c 0 .venv/bin/python bench/bf16_step_parts.py [--batch 8] [--steps 5]

The trainer's own MFU (issue 5's target, >= 40 %) is bench/pretrain_throughput.py's; this
script explains it.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import cpu_model_name  # noqa: E402
from bench.pretrain_throughput import P, T, V, flops_per_sample, matmul_peak  # noqa: E402
from mindtransformer.backends.torch import bf16_gemm  # noqa: E402

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", bf16_gemm.PROFILER_NAME)
OPTIMIZER = ("aten::_fused_adamw_", "aten::linalg_vector_norm")
WEIGHT_PASSES = ("aten::copy_", "aten::fill_", "aten::add_")  # on weight-shaped tensors: casts, zeros, sums


def make_engine():
    import torch

    from mindtransformer.backends.torch.train import Engine
    from mindtransformer.models.bert import build_model
    from mindtransformer.models.bert.config import BertConfig
    from mindtransformer.trainer.distributed import world_from_env

    torch.manual_seed(0)
    config = BertConfig(vocab_size=V, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072)
    return Engine(build_model(config, "pretraining", "torch"), world_from_env(), precision="bf16", num_threads=1)


def random_batches(batch: int):
    """Endless pretraining batches of random ids (B, T) with P masked positions each."""
    import numpy as np

    rng = np.random.default_rng(0)
    while True:
        yield {"input_ids": rng.integers(1000, V - 500, (batch, T)), "attention_mask": np.ones((batch, T), np.int64),
               "token_type_ids": np.zeros((batch, T), np.int64), "labels": rng.integers(1000, V - 500, (batch, P)),
               "next_sentence_label": rng.integers(0, 2, (batch,)),
               "masked_lm_positions": np.sort(rng.choice(T, (batch, P)), axis=1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--batch", type=int, default=8, help="samples per step, one micro-batch (the trainer bench's 8)")
    parser.add_argument("--steps", type=int, default=5, help="steps timed, after as many untimed ones")
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1:
        parser.error("--batch and --steps must be >= 1")

    from torch.profiler import ProfilerActivity, profile

    peak = matmul_peak("bf16")
    engine = make_engine()
    batches = random_batches(args.batch)

    def step(index: int) -> float:
        start = time.perf_counter()
        engine.forward_backward(next(batches), 1.0)
        engine.step(1e-4, 0.0, index)
        return time.perf_counter() - start

    for index in range(args.steps):  # caches, oneDNN kernels, the heap's reuse of freed blocks
        step(index)
    step_s = statistics.median(step(index) for index in range(args.steps))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for index in range(args.steps):
            step(index)
    self_s = {e.key: e.self_cpu_time_total / 1e6 / args.steps for e in prof.key_averages()}
    matmul_s = sum(self_s.get(name, 0.0) for name in MATMULS)
    optimizer_s = sum(self_s.get(name, 0.0) for name in OPTIMIZER)
    # every 2-D weight's shape, and the stacked query/key/value weights' (3H, H)
    weight_shapes = {tuple(p.shape) for p in engine.model.parameters() if p.dim() == 2} | {(3 * 768, 768)}
    weight_passes_s = sum(e.self_cpu_time_total / 1e6 / args.steps
                          for e in prof.key_averages(group_by_input_shape=True)
                          if e.key in WEIGHT_PASSES and e.input_shapes and tuple(e.input_shapes[0]) in weight_shapes)
    flops = flops_per_sample(12, 768, 3072) * args.batch

    print(f"cpu: {cpu_model_name()}; one-thread bf16 matmul peak {peak:.0f} GFLOP/s")
    print(f"BERT-base bf16, {args.batch} x {T} tokens a step: {1000 * step_s:.0f} ms "
          f"(median of {args.steps}), {flops / step_s / 1e9:.0f} GFLOP/s, MFU {100 * flops / step_s / 1e9 / peak:.1f} %")
    print(f"  matmuls                           {1000 * matmul_s:6.0f} ms  {100 * matmul_s / step_s:4.1f} % of the step, "
          f"{flops / matmul_s / 1e9:.0f} GFLOP/s")
    print(f"  fused AdamW + gradient norm       {1000 * optimizer_s:6.0f} ms  {100 * optimizer_s / step_s:4.1f} %")
    print(f"  weight-sized casts, zeros, sums   {1000 * weight_passes_s:6.0f} ms  {100 * weight_passes_s / step_s:4.1f} % "
          "(weights to bf16, their gradients to fp32, the word-embedding table's gradient)")
    rest_s = step_s - matmul_s - optimizer_s - weight_passes_s
    print(f"  everything else                   {1000 * rest_s:6.0f} ms  {100 * rest_s / step_s:4.1f} % "
          "(activations: casts, GELU, LayerNorm, softmax, dropout, heads' copies; Python)")
    ceiling = flops / (matmul_s + optimizer_s) / 1e9 / peak
    target_s = flops / (0.4 * peak * 1e9)
    left_s = target_s - matmul_s - optimizer_s
    print(f"MFU with only the matmuls and the optimizer: {100 * ceiling:.1f} %. A 40 % MFU step takes "
          f"{1000 * target_s:.0f} ms: " + (
              f"{1000 * left_s:.0f} ms for the weight-sized passes and everything else, which now take "
              f"{1000 * (weight_passes_s + rest_s):.0f} ms" if left_s > 0 else
              f"less than the matmuls and the optimizer alone ({1000 * (matmul_s + optimizer_s):.0f} ms)"))


if __name__ == "__main__":
    main()
