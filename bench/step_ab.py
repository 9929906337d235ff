"""A/B of one change inside the torch engine's BERT-base bf16 step, in one process.

The machine's speed drifts by 10-20 % within minutes, so two runs at different times cannot
resolve a change of a few percent. Here A and B alternate step by step (ABBAAB...) in one process
on one core and the medians are compared. A variant module defines `setup(engine)` returning two
functions that switch the code to A and to B, e.g. a C kernel off and on:

    from mindtransformer.backends.torch import ops
    kernels = ops._attention
    def setup(engine):
        def a(): ops._attention = None
        def b(): ops._attention = kernels
        return a, b

    taskset -c 0 .venv/bin/python bench/step_ab.py variant.py [--batch 32] [--steps 10] [--block 1]
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bf16_step_parts import make_engine, random_batches  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("variant", help="a Python file defining setup(engine) -> (switch_to_a, switch_to_b)")
    parser.add_argument("--batch", type=int, default=32, help="samples per step (one micro-batch)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each of A and B")
    parser.add_argument("--block", type=int, default=1,
                        help="steps of A, then of B, in a row, the first of each block untimed: for a change "
                             "whose step leaves work for the next (an update that writes the next forward "
                             "pass's weight casts), where alternating step by step would mix A's and B's costs")
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or args.block < 1:
        parser.error("--batch, --steps and --block must be >= 1")
    spec = importlib.util.spec_from_file_location("variant", args.variant)
    if spec is None or not os.path.isfile(args.variant):
        parser.error(f"variant: no Python file at {args.variant}")
    variant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variant)

    engine = make_engine()
    batches = random_batches(args.batch)
    switch_to_a, switch_to_b = variant.setup(engine)

    def step(index: int) -> float:
        start = time.perf_counter()
        engine.forward_backward(next(batches), 1.0)
        engine.step(1e-4, 0.0, index)
        return 1000 * (time.perf_counter() - start)

    for switch in (switch_to_a, switch_to_b):  # caches, oneDNN kernels, the heap's reuse of blocks
        switch()
        step(0)
    times = {"A": [], "B": []}
    for index in range(-(-args.steps // args.block)):
        order = (("A", switch_to_a), ("B", switch_to_b)) if index % 2 == 0 else (("B", switch_to_b), ("A", switch_to_a))
        for name, switch in order:
            switch()
            if args.block > 1:
                step(index)  # the step after the switch pays for the other variant's last one
            times[name].extend(step(index) for _ in range(min(args.block, args.steps - len(times[name]))))
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    for name, values in times.items():
        print(f"{name} step ms {[round(v) for v in values]} median {statistics.median(values):.0f}")
    print(f"B / A {b / a:.3f}")


if __name__ == "__main__":
    main()
