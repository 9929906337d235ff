"""The main job, end to end on bundled real data and weights.

Today: (1) convert the real pretrained MiniLM BERT (HF folder) to a MindSpore checkpoint;
(2) encode the bundled SQuAD v1.1 dev question/sentence pairs with our tokenizer, run every head
through `transformers`, our torch model and our MindSpore model (from the converted checkpoint)
and print the parity table (exit 1 beyond tolerance); (3) extract the bundled Wikipedia excerpt,
make MLM/NSP pretraining records from it as TFRecord and as MindRecord, validate them and print
one decoded record; (4) pretrain a tiny BERT on those records for a few hundred steps with the
trainer and write its loss curve; (5) fine-tune the real MiniLM checkpoint on the bundled real
GLUE RTE data (both backends' trainer; torch here) and print its dev metrics; (6) fine-tune it on
the bundled SQuAD v1.1 article, answer the questions of another article and print the scores.
"""

import os
import subprocess
import sys

from mindtransformer import convert, verify
from mindtransformer.utils.bundled import RESOURCES, minilm_path
from mindtransformer.utils.cli import StrictParser, run_main
from mindtransformer.utils.env import child_environment


def main(argv=None) -> int:
    parser = StrictParser(prog="python -m mindtransformer.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="HF BERT folder; default: the bundled MiniLM")
    parser.add_argument("--output_dir", default="outputs/demo", help="where the converted checkpoint is written")
    parser.add_argument("--pretrain_steps", type=int, default=300, help="optimizer steps of the tiny pretraining run")
    parser.add_argument("--finetune_epochs", type=int, default=3, help="epochs of the RTE fine-tuning (0: skip it)")
    parser.add_argument("--squad_epochs", type=int, default=2, help="epochs of the SQuAD fine-tuning (0: skip it)")
    args = parser.parse_args(argv)
    model_path = args.model_path or minilm_path()
    ckpt = os.path.join(args.output_dir, "model.ckpt")
    print("== 1. convert the HF checkpoint to MindSpore")
    convert.main(["--torch_path", model_path, "--mindspore_path", ckpt])
    print("\n== 2. the same real batch through transformers, our torch model and our MindSpore model")
    status = verify.main(["--model_path", model_path, "--mindspore_path", ckpt])
    print("\n== 3. pretraining records from the bundled Wikipedia excerpt")
    status = status or pretraining_data(os.path.join(model_path, "vocab.txt"), args.output_dir)
    if status:
        return status
    print(f"\n== 4. pretrain a tiny BERT on those records ({args.pretrain_steps} steps)")
    status = pretraining_run(args.output_dir, args.pretrain_steps)
    if status or not args.finetune_epochs:
        return status
    print(f"\n== 5. fine-tune the real MiniLM on the bundled GLUE RTE ({args.finetune_epochs} epochs), evaluate its dev set")
    status = finetuning_run(model_path, args.output_dir, args.finetune_epochs)
    if status or not args.squad_epochs:
        return status
    print(f"\n== 6. fine-tune the real MiniLM on one SQuAD v1.1 article ({args.squad_epochs} epochs), answer another")
    return squad_run(model_path, args.output_dir, args.squad_epochs)


def pretraining_data(vocab_file: str, output_dir: str) -> int:
    """Extraction, records in both containers, validation and one decoded record, each tool run as
    users run it (a process of its own: TensorFlow and MindSpore never share one)."""
    tools = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
    text_dir, records_dir = os.path.join(output_dir, "wiki"), os.path.join(output_dir, "records")
    steps = [["extract_wiki.py", "--input_file", os.path.join(RESOURCES, "enwiki-excerpt-6-articles.xml.bz2"),
              "--output_dir", text_dir, "--quiet"]]
    for fmt in ("tfrecord", "mindrecord"):
        steps.append(["create_pretraining_data.py", "--input_file", os.path.join(text_dir, "wiki_*.txt"),
                      "--output_file", os.path.join(records_dir, f"wiki.{fmt}"), "--vocab_file", vocab_file,
                      "--output_format", fmt, "--max_seq_length", "128", "--max_predictions_per_seq", "20",
                      "--dupe_factor", "5", "--quiet"])
    steps.append(["vis_tfrecord_or_mindrecord.py", "--file_name", os.path.join(records_dir, "wiki.mindrecord"),
                  "--vis_option", "vis_mindrecord", "--num_records", "1", "--validate"])
    env = dict(child_environment(), TF_CPP_MIN_LOG_LEVEL="3", GLOG_v="3")  # the frameworks' start-up chatter off
    for step in steps:
        done = subprocess.run([sys.executable, os.path.join(tools, step[0]), *step[1:]], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
        print("\n".join(lines))
        if done.returncode != 0:
            print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"{step[0]} failed", file=sys.stderr)
            return done.returncode
    return 0


def pretraining_run(output_dir: str, steps: int) -> int:
    """The trainer as users run it: BERT-tiny (L=2, H=128) from scratch on the TFRecords of step 3."""
    from mindtransformer.trainer.reporting import read_metrics

    run_dir = os.path.join(output_dir, "pretrain")
    command = [sys.executable, "-m", "mindtransformer.models.bert.bert_trainer",
               f"--train_data_path={os.path.join(output_dir, 'records', 'wiki.tfrecord')}",
               "--num_layers=2", "--num_heads=2", "--embedding_size=128", "--global_batch_size=16",
               "--learning_rate=1e-3", f"--warmup_steps={max(1, steps // 10)}", f"--train_steps={steps}",
               f"--save_checkpoint_steps={max(1, steps // 3)}", "--keep_checkpoint_max=1", "--log_steps=25",
               f"--save_checkpoint_path={run_dir}"]
    print("$ python -m mindtransformer.models.bert.bert_trainer " + " ".join(command[3:]))
    done = subprocess.run(command, env=child_environment())  # step 2 imported MindSpore
    if done.returncode != 0:
        return done.returncode
    losses = [r["loss"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "loss" in r]
    window = max(1, min(20, len(losses) // 5))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(f"MLM + NSP loss: {first:.2f} (mean of the first {window} steps) -> {last:.2f} (last {window}); "
          f"curve: {os.path.join(run_dir, 'loss_curve.png')}; HF export: {os.path.join(run_dir, 'final')}")
    return 0


def train_then_evaluate(train_args: list, module: str, evaluate_args: list) -> int:
    """The trainer with `train_args`, then `python -m module evaluate_args`, each command shown."""
    for command in (["mindtransformer.trainer.trainer", *train_args], [module, *evaluate_args]):
        print("$ python -m " + " ".join(command))
        done = subprocess.run([sys.executable, "-m", *command], env=child_environment())
        if done.returncode != 0:
            return done.returncode
    return 0


def finetuning_run(model_path: str, output_dir: str, epochs: int) -> int:
    """examples/finetune/run_classifier.sh's recipe (max_seq 128, batch 32, lr 3e-5, weight decay
    0.01, bf16 where the CPU has it), then the evaluation entry point on the exported HF folder."""
    run_dir = os.path.join(output_dir, "rte")
    data_dir = os.path.join(RESOURCES, "glue", "RTE")
    status = train_then_evaluate(
        ["--auto_model=bert_glue", "--task_name=RTE", f"--data_dir={data_dir}", f"--init_from={model_path}",
         "--seq_length=128", "--global_batch_size=32", "--start_lr=3e-5", "--weight_decay=0.01",
         f"--epoch_size={epochs}", "--precision=auto", "--eval_steps=78", "--log_steps=10", "--keep_checkpoint_max=1",
         "--save_checkpoint_steps=78", f"--save_checkpoint_path={run_dir}"],
        "mindtransformer.tasks.text_classification",
        [f"--load_checkpoint_path={os.path.join(run_dir, 'final')}", "--task_name=RTE", f"--data_dir={data_dir}"])
    print(f"(RTE dev: 277 pairs, 52.7 % of them 'entailment'; curve: {os.path.join(run_dir, 'loss_curve.png')}; "
          f"HF export: {os.path.join(run_dir, 'final')})")
    return status


def squad_run(model_path: str, output_dir: str, epochs: int) -> int:
    """examples/finetune/run_squad.sh's recipe (max_seq 384, doc_stride 128, batch 32, lr 5e-5)
    on the bundled Super_Bowl_50 article (810 questions), then the evaluation entry point on the
    exported HF folder answering the 206 questions of the bundled Force article."""
    run_dir = os.path.join(output_dir, "squad")
    train, dev = (os.path.join(RESOURCES, "squad", name) for name in ("train.json", "dev.json"))
    status = train_then_evaluate(
        ["--auto_model=bert_squad", f"--train_data_path={train}", f"--init_from={model_path}", "--seq_length=384",
         "--doc_stride=128", "--global_batch_size=32", "--start_lr=5e-5", "--weight_decay=0.01",
         f"--epoch_size={epochs}", "--precision=auto", "--log_steps=10", "--keep_checkpoint_max=1",
         "--save_checkpoint_steps=1000", f"--save_checkpoint_path={run_dir}"],
        "mindtransformer.tasks.question_answering",
        [f"--eval_data_path={dev}", f"--load_checkpoint_path={os.path.join(run_dir, 'final')}"])
    print(f"(answers: {os.path.join(run_dir, 'final', 'predictions.json')}; curve: "
          f"{os.path.join(run_dir, 'loss_curve.png')})")
    return status


if __name__ == "__main__":
    sys.exit(run_main(main))
