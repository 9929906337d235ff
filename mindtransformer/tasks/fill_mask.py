"""Fill in [MASK]s with a masked language model, or rank the options of a question.

    python -m mindtransformer.tasks.fill_mask --model_path=MLM_FOLDER --prompt "今天天氣很[MASK]" --top_k 5
    python -m mindtransformer.tasks.fill_mask --model_path=MLM_FOLDER          # interactive

Interactive mode reads one text per line and answers each [MASK] in it; `qa` switches to
question mode (a question line, then its options on one line separated by `|`; the options are
ranked by the model's masked-LM likelihood), `mask` switches back, `quit` or `exit` (or the end of
the input) leaves. --model_path is an HF folder with the masked-LM head's weights (a pretraining
or masked-LM checkpoint), a MindSpore .ckpt beside its config.json, or a trainer checkpoint.
"""

from __future__ import annotations

import json

from mindtransformer.errors import UserInputError
from mindtransformer.tasks.masked_lm import MaskedLanguageModel
from mindtransformer.utils.cli import StrictParser, run_main

HELP = ("type a text with [MASK] where a word should be (qa: rank the options of a question; "
        "quit or exit: leave)")
LEAVE = ("quit", "exit")


def build_parser() -> StrictParser:
    p = StrictParser(prog="python -m mindtransformer.tasks.fill_mask", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_path", required=True,
                   help="HF folder with masked-LM head weights, a MindSpore .ckpt beside its config.json, or a "
                        "trainer checkpoint directory")
    p.add_argument("--prompt", default="", help="the text to fill in (with one or more [MASK]); without it: interactive")
    p.add_argument("--top_k", type=int, default=5, help="candidates shown per [MASK]")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is there (default: detect)")
    p.add_argument("--backend", default="torch", choices=("torch", "mindspore"), help="framework that runs the model")
    p.add_argument("--vocab_file_path", default="", help="vocab.txt (default: the checkpoint folder's)")
    p.add_argument("--json", action="store_true", help="print the answers as JSON (HF fill-mask pipeline layout)")
    return p


def show_fill(answers: list, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answers[0] if len(answers) == 1 else answers, ensure_ascii=False), flush=True)
        return
    for k, proposals in enumerate(answers, 1):
        label = f"[MASK] {k}" if len(answers) > 1 else "[MASK]"
        print(f"{label}: " + "  ".join(f"{p['token_str']} ({p['score']:.4f})" for p in proposals), flush=True)
    if len(answers) == 1:
        print(f"  -> {answers[0][0]['sequence']}", flush=True)


def show_ranking(options: list, scores, as_json: bool) -> None:
    order = sorted(range(len(options)), key=lambda i: -scores[i])
    if as_json:
        print(json.dumps([{"option": options[i], "score": float(scores[i])} for i in order], ensure_ascii=False),
              flush=True)
        return
    for rank, i in enumerate(order, 1):
        print(f"  {rank}. {options[i]}  (mean log-probability {scores[i]:.4f})", flush=True)


def read_line(prompt: str):
    """A stripped line, or None at the end of the input."""
    try:
        return input(prompt).strip()
    except EOFError:
        print(flush=True)
        return None


def interactive(mlm: MaskedLanguageModel, top_k: int, as_json: bool) -> int:
    print(HELP, flush=True)
    mode = "mask"
    while True:
        line = read_line("question> " if mode == "qa" else "> ")
        if line is None or line.lower() in LEAVE:
            return 0
        if line.lower() in ("qa", "mask"):
            mode = line.lower()
            print("question mode: a question, then its options separated by |  (mask: back)" if mode == "qa"
                  else "fill-mask mode", flush=True)
            continue
        if not line:
            continue
        try:
            if mode == "mask":
                show_fill(mlm.fill(line, top_k), as_json)
                continue
            options_line = read_line("options> ")
            if options_line is None or options_line.lower() in LEAVE:
                return 0
            options = [o.strip() for o in options_line.split("|") if o.strip()]
            if len(options) < 2:
                print("give at least two options separated by |", flush=True)
                continue
            show_ranking(options, mlm.option_scores([line], [options])[0], as_json)
        except UserInputError as err:  # a prompt without [MASK]: say so and carry on
            print(f"error: {err}", flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        raise UserInputError(f"--top_k={args.top_k}: must be >= 1")
    mlm = MaskedLanguageModel.load(args.model_path, args.backend, args.cpu, args.vocab_file_path)
    if args.prompt:
        show_fill(mlm.fill(args.prompt, args.top_k), args.json)
        return 0
    return interactive(mlm, args.top_k, args.json)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
