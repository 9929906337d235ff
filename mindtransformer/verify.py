"""Check a checkpoint: the same real batch through `transformers` and our backends, max |diff| per output.

    python -m mindtransformer.verify --model_path DIR [--mindspore_path CKPT] [--text_file F] [--tasks base,masked_lm]

Every head runs with the same weights on each side: the checkpoint's, and for heads the
checkpoint lacks, the reference's freshly initialised head copied into ours. Exits 1 when a
difference is beyond tolerance.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from mindtransformer.errors import UserInputError
from mindtransformer.models.bert import TASK_NAMES, check_task
from mindtransformer.utils.cli import StrictParser, run_main

HF_CLASSES = {
    "base": "BertModel", "pretraining": "BertForPreTraining", "masked_lm": "BertForMaskedLM",
    "sequence_classification": "BertForSequenceClassification",
    "question_answering": "BertForQuestionAnswering", "multiple_choice": "BertForMultipleChoice",
    "token_classification": "BertForTokenClassification",
}
OUTPUT_NAMES = {
    "base": ("last_hidden_state", "pooler_output"),
    "pretraining": ("prediction_logits", "seq_relationship_logits"),
    "masked_lm": ("logits",), "sequence_classification": ("logits",),
    "question_answering": ("start_logits", "end_logits"), "multiple_choice": ("logits",),
    "token_classification": ("logits",),
}
TOLERANCE = {"torch": 1e-5, "mindspore": 1e-4}  # fp32, against transformers


def max_abs_diff(reference, ours, attention_mask) -> float:
    """max |ours - reference|; per-token outputs (B, T, ...) only at real tokens (mask 1).

    The hidden state at a [PAD] position is never read by any head and is ill-conditioned there
    (its LayerNorm input can have tiny variance), so it is left out of the comparison.
    """
    diff = np.abs(np.asarray(ours, np.float64) - np.asarray(reference, np.float64))
    if diff.shape[:attention_mask.ndim] == attention_mask.shape:
        diff = diff[attention_mask.astype(bool)]
    return float(diff.max())


def task_inputs(batch: dict, task: str) -> dict:
    """Multiple choice takes (B, C, T): pair consecutive rows as the two choices of a question."""
    if task != "multiple_choice":
        return batch
    rows = len(batch["input_ids"]) // 2 * 2
    return {k: v[:rows].reshape(rows // 2, 2, -1) for k, v in batch.items()}


def reference_run(model_path: str, task: str, batch: dict):
    """(outputs, weights) of the `transformers` model; head weights it initialises come back too."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # its load report repeats what our own report says
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    model = getattr(transformers, HF_CLASSES[task]).from_pretrained(model_path).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    outputs = {name: getattr(out, name).float().numpy() for name in OUTPUT_NAMES[task]}
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    return outputs, weights


def our_run(model_path: str, task: str, backend: str, batch: dict, head_weights: dict | None,
            weights_path: str | None = None) -> dict:
    from mindtransformer.backends import get_backend
    from mindtransformer.pretrained import from_pretrained, match_weights

    # weights_path: a converted checkpoint of the same model (e.g. a .ckpt), read with model_path's config.
    model = from_pretrained(weights_path or model_path, task=task, backend=backend,
                            config=os.path.join(model_path, "config.json"))
    bound = get_backend(backend)
    if head_weights is not None and model.load_report.initialized:
        # Give our new head the reference's initial values, through the same strict matcher.
        arrays, _ = match_weights(head_weights, bound.parameter_shapes(model), "reference weights", "config")
        bound.load_arrays(model, {k: arrays[k] for k in model.load_report.initialized})
    return bound.infer(model, batch)


def parity_rows(model_path: str, texts, pairs, tasks, backends, max_length: int = 128,
                mindspore_path: str | None = None) -> list:
    """[(task, output, shape, {backend: max |diff| vs transformers})] on one encoded batch."""
    from mindtransformer.data.tokenization import load_tokenizer

    encoded = load_tokenizer(model_path).encode_batch(texts, pairs, max_length=max_length)
    rows = []
    for task in tasks:
        batch = task_inputs(encoded, task)
        reference, weights = reference_run(model_path, task, batch)
        ours = {b: our_run(model_path, task, b, batch, weights, mindspore_path if b == "mindspore" else None)
                for b in backends}
        for name in OUTPUT_NAMES[task]:
            diffs = {b: max_abs_diff(reference[name], ours[b][name], batch["attention_mask"]) for b in backends}
            rows.append((task, name, reference[name].shape, diffs))
    return rows


def format_table(rows, backends) -> str:
    header = f"{'task':<24} {'output':<24} {'shape':<16}" + "".join(f" {'|' + b + ' - HF|':>16}" for b in backends)
    lines = [header, "-" * len(header)]
    for task, name, shape, diffs in rows:
        cells = "".join(f" {diffs[b]:>16.2e}" for b in backends)
        lines.append(f"{task:<24} {name:<24} {str(tuple(shape)):<16}{cells}")
    return "\n".join(lines)


def read_text_file(path: str) -> tuple:
    """One example a line; a tab splits a sentence pair."""
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: no such text file; give one sentence (or a tab-separated pair) a line")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    if not lines:
        raise UserInputError(f"{path}: no text in it; give one sentence (or a tab-separated pair) a line")
    split = [line.split("\t", 1) for line in lines]
    if all(len(s) == 2 for s in split):
        return [s[0] for s in split], [s[1] for s in split]
    return lines, None


def build_parser() -> StrictParser:
    parser = StrictParser(prog="python -m mindtransformer.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True, help="HF model folder (config.json, weights, vocab.txt)")
    parser.add_argument("--text_file", default=None,
                        help="one sentence or tab-separated pair a line; default: the bundled SQuAD dev pairs")
    parser.add_argument("--tasks", default=",".join(TASK_NAMES), help="comma-separated heads to check")
    parser.add_argument("--mindspore_path", default=None,
                        help="a converted .ckpt of the same model for the MindSpore column (default: --model_path's weights)")
    parser.add_argument("--backends", default="torch,mindspore", help="comma-separated backends: torch, mindspore")
    parser.add_argument("--mindspore_mode", choices=("pynative", "graph"), default="pynative",
                        help="MindSpore execution mode (graph compiles each head once, a few seconds)")
    parser.add_argument("--max_length", type=int, default=128, help="tokens per example, truncated longest-first")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mindtransformer.utils.bundled import squad_pairs

    texts, pairs = read_text_file(args.text_file) if args.text_file else squad_pairs()
    tasks = [check_task(t) for t in args.tasks.split(",") if t]
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in TOLERANCE:
            raise UserInputError(f"--backends: unknown backend {backend!r}; use torch and/or mindspore")
    if "mindspore" in backends:
        import mindspore
        mindspore.set_context(mode=mindspore.GRAPH_MODE if args.mindspore_mode == "graph" else mindspore.PYNATIVE_MODE)
    rows = parity_rows(args.model_path, texts, pairs, tasks, backends, args.max_length, args.mindspore_path)
    print(f"{len(texts)} examples{' (pairs)' if pairs else ''} from "
          f"{args.text_file or 'the bundled SQuAD v1.1 dev slice'}, model {args.model_path}"
          + (f", MindSpore weights {args.mindspore_path}" if args.mindspore_path else ""))
    print(format_table(rows, backends))
    print("(per-token outputs are compared at real tokens; padded positions are read by no head)")
    failures = [(t, n, b) for t, n, _, d in rows for b in backends if not d[b] <= TOLERANCE[b]]
    if failures:
        print(f"FAIL: {len(failures)} outputs beyond tolerance {TOLERANCE}: {failures}")
        return 1
    print(f"OK: every output within tolerance ({', '.join(f'{b} {TOLERANCE[b]:g}' for b in backends)})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
