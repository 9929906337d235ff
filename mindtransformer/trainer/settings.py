"""One typed settings object for a training run: the original MindSpore BERT flags plus ours.

Every field is a flag (`--name value` or `--name=value`, booleans as true/false) and a key of the
`--config recipe.yaml` file; precedence: defaults < recipe < command line. An unknown flag or
recipe key is an error naming the nearest valid one. `check(settings, world_size)` applies the
cross-field rules before anything heavy starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Optional

from mindtransformer.errors import UserInputError, closest_name
from mindtransformer.utils.cli import StrictParser, boolean
from mindtransformer.models.bert.distill import check_loss_weights


def _field(default, help: str, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    # -- the original MindSpore BERT pretraining flags
    train_data_path: str = _field("", "record files: a directory, a glob or a comma-separated list")
    optimizer: str = _field("adamw", "adamw or lamb on torch; adamweightdecay, lamb or adamw on MindSpore",
                            ("adamw", "lamb", "adamweightdecay"))
    seq_length: int = _field(128, "tokens per instance; must equal the records' max_seq_length")
    max_position_embeddings: int = _field(512, "position table size of the model")
    parallel_mode: str = _field("stand_alone", "stand_alone or data_parallel", ("stand_alone", "data_parallel"))
    checkpoint_prefix: str = _field("bert", "file name prefix of saved checkpoints")
    global_batch_size: int = _field(32, "instances per optimizer step over all ranks and accumulation steps")
    vocab_size: int = _field(30522, "vocabulary size of a model built from scratch")
    embedding_size: int = _field(768, "hidden size of a model built from scratch")
    num_layers: int = _field(12, "transformer layers of a model built from scratch")
    num_heads: int = _field(12, "attention heads of a model built from scratch")
    device_target: str = _field("CPU", "CPU, GPU or Ascend", ("CPU", "GPU", "Ascend"))
    epoch_size: int = _field(1, "passes over the records (ignored when --train_steps > 0)")
    device_num: int = _field(1, "devices (ranks) of a data-parallel run; checked against the launcher's world size")
    data_parallel: int = _field(1, "data-parallel ranks; data_parallel x model_parallel must equal the world size")
    model_parallel: int = _field(1, "model-parallel ranks (only 1 is supported)")
    full_batch: bool = _field(False, "MindSpore's flag: every rank reads the full batch (not supported: ranks shard the data)")
    # -- what to train (the original fine-tuning scripts' flags)
    auto_model: str = _field("bert", "bert: MLM+NSP pretraining on records; bert_glue: text classification "
                             "(GLUE or --task_name=csv); bert_squad: extractive question answering (SQuAD "
                             "format: SQuAD v1.1/v2.0, CMRC 2018, DRCD); bert_multiple_choice: multiple-choice "
                             "questions (TMMLU, MMLU/C-Eval CSV layouts)",
                             ("bert", "bert_glue", "bert_squad", "bert_multiple_choice"))
    task_name: str = _field("", "bert_glue: a GLUE task (cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, rte, wnli) "
                            "or csv (any CSV/TSV, see --text_column)")
    data_dir: str = _field("", "bert_glue: directory of the task's GLUE files (train.tsv, dev.tsv; MNLI: "
                           "dev_matched.tsv and dev_mismatched.tsv); bert_multiple_choice: a CSV, a folder of subject CSVs or TMMLU's folder")
    dataset_format: str = _field("", "fine-tuning data: empty for the task's own files (bert_glue: TSV/CSV, "
                                 "bert_squad: SQuAD JSON; tokenized at start), or records made by "
                                 "generate_glue_mindrecord.py / generate_squad_mindrecord.py in --train_data_path and "
                                 "--eval_data_path", ("", "tsv", "json", "tfrecord", "mindrecord"))
    num_labels: int = _field(0, "bert_glue: classes of the task (0: the task's own; checked against it)")
    assessment_method: str = _field("", "bert_glue: the metric that picks the best checkpoint (default: the "
                                    "task's first)", ("", "accuracy", "f1", "mcc", "spearman_correlation",
                                                      "pearson", "f1_weighted"))
    text_column: str = _field("", "--task_name=csv: column of the text (e.g. review)")
    text_b_column: str = _field("", "--task_name=csv: column of an optional second text")
    label_column: str = _field("label", "--task_name=csv: column of the label")
    dev_fraction: float = _field(0.1, "--task_name=csv without --eval_data_path: share of the file held out "
                                 "(seeded by --seed) for evaluation")
    max_train_examples: int = _field(0, "fine-tuning: train on the first N examples only (SQuAD JSON: questions, "
                                     "SQuAD records: windows; 0: all; for quick runs)")
    vocab_file_path: str = _field("", "vocab.txt of the tokenizer (default: the --init_from folder's)")
    eval_batch_size: int = _field(64, "examples per evaluation batch on each rank")
    group_by_length: bool = _field(True, "fine-tuning: batch examples of similar length (less padding)")
    pad_to_multiple_of: int = _field(0, "fine-tuning: pad each batch to a multiple of this (0: 1 on torch, 64 on "
                                     "MindSpore, whose compiled graph is built once per shape)")
    pad_to_max_length: bool = _field(False, "fine-tuning: pad every batch to --seq_length (slower; for comparisons)")
    # -- bert_squad (the names and defaults of google's run_squad.py)
    doc_stride: int = _field(128, "bert_squad: tokens between window starts (step semantics) or shared by "
                             "consecutive windows (overlap semantics)")
    doc_stride_semantics: str = _field("step", "bert_squad: step (google, MindSpore) or overlap (HF)",
                                       ("step", "overlap"))
    max_query_length: int = _field(64, "bert_squad: question tokens kept")
    n_best_size: int = _field(20, "bert_squad: start and end candidates per window, and answers in nbest_predictions.json")
    max_answer_length: int = _field(30, "bert_squad: longest answer in tokens")
    version_2_with_negative: bool = _field(False, "bert_squad: SQuAD v2.0 data with unanswerable questions")
    null_score_diff_threshold: float = _field(0.0, "bert_squad v2.0: predict no answer when the null score "
                                              "exceeds the best span's by more than this")
    # -- bert_multiple_choice
    subjects: str = _field("", "bert_multiple_choice: comma-separated subjects (file or folder names) to use (empty: all)")
    num_choices: int = _field(4, "bert_multiple_choice: options per question; questions with another count are "
                              "skipped and counted")
    split_seed: int = _field(0, "bert_multiple_choice with --data_dir: seed of the per-subject 70/25/5 "
                             "train/validation/test split")
    # -- ours
    backend: str = _field("torch", "torch or mindspore", ("torch", "mindspore"))
    max_predictions_per_seq: int = _field(20, "masked positions per instance; must equal the records'")
    intermediate_size: int = _field(0, "feed-forward size of a model built from scratch (0: 4 x embedding_size)")
    init_from: str = _field("", "start from an HF folder or a converted .ckpt instead of random weights")
    load_checkpoint_path: str = _field("", "resume exactly from this training checkpoint (or a directory of them: the newest)")
    save_checkpoint_path: str = _field("", "directory for checkpoints, logs, pictures and the final export "
                                       "(default: outputs/pretrain, or outputs/<task_name>)")
    save_checkpoint_steps: int = _field(1000, "optimizer steps between checkpoints")
    keep_checkpoint_max: int = _field(3, "checkpoints kept (the best is kept as well)")
    train_steps: int = _field(0, "optimizer steps to run (0: --epoch_size passes)")
    warmup_steps: int = _field(0, "linear warmup steps")
    warmup_ratio: float = _field(0.0, "warmup as a share of all steps (used when --warmup_steps is 0)")
    learning_rate: float = _field(1e-4, "peak learning rate")
    end_learning_rate: float = _field(0.0, "learning rate reached at the last step")
    lr_decay: str = _field("linear", "decay after warmup", ("linear", "polynomial", "constant"))
    lr_power: float = _field(1.0, "exponent of polynomial decay")
    weight_decay: float = _field(0.01, "decoupled weight decay (not on biases and LayerNorm)")
    adam_epsilon: float = _field(1e-6, "epsilon of AdamW/LAMB/AdamWeightDecay (google's BERT and MindSpore use 1e-6, "
                                 "HF Trainer 1e-8)")
    clip_grad_norm: float = _field(1.0, "clip the global gradient norm to this (0: off)")
    grad_accumulation_steps: int = _field(1, "micro-batches per optimizer step")
    precision: str = _field("fp32", "fp32; bf16 (autocast, CPU and GPU); fp16 (dynamic loss scaling, GPU); auto "
                            "(bf16 on torch where the GPU or CPU has bf16 units, else fp32)", ("fp32", "bf16", "fp16", "auto"))
    num_threads: int = _field(0, "CPU threads per rank for the framework's kernels (0: its default)")
    mindspore_mode: str = _field("graph", "MindSpore execution: graph (compiled, faster) or pynative (eager; with "
                                 "dropout, a resumed run continues bit for bit)", ("graph", "pynative"))
    dropout: Optional[float] = _field(None, "override the model's dropout probabilities (0 for exact comparisons)")
    eval_data_path: str = _field("", "data to evaluate on every --eval_steps steps: pretraining or classifier "
                                 "records, or a --task_name=csv dev file (empty: none, or the task's dev files)")
    eval_steps: int = _field(0, "optimizer steps between evaluations (0: only at the end)")
    log_steps: int = _field(10, "optimizer steps between metric log lines")
    seed: int = _field(0, "seed of the model initialisation, dropout and data order")
    do_shuffle: bool = _field(True, "shuffle file order and records (a seeded buffer) each epoch")
    shuffle_buffer: int = _field(10000, "records in the shuffle buffer")
    # -- parameter-efficient fine-tuning
    peft: str = _field("", "train a few parameters instead of every weight, the base frozen: lora (the adapter is "
                       "saved apart in peft's layout and merged into final/) or prefix (Prefix-Tuning; the folded "
                       "prefixes are saved apart and kept in final/) or svd_lora (AdaLoRA-style: P diag(E) Q "
                       "updates whose least important singular values are pruned to a budget; merged into final/; torch backend)",
                       ("", "lora", "prefix", "svd_lora"))
    svd_init_rank: int = _field(12, "--peft=svd_lora: singular values per adapted layer at the start")
    svd_target_rank: int = _field(4, "--peft=svd_lora: average singular values per layer kept at the end (the budget "
                                  "falls from the start's over 10-70 %% of the steps, cubically)")
    orthogonality_weight: float = _field(0.1, "--peft=svd_lora: weight of the P, Q orthogonality penalty in the loss")
    prefix_length: int = _field(10, "--peft=prefix: learned key/value positions per layer")
    prefix_mlp_hidden: int = _field(512, "--peft=prefix: hidden size of the reparameterisation MLP (training only)")
    lora_rank: int = _field(8, "--peft=lora: rank r of each adapter")
    lora_alpha: float = _field(16.0, "--peft=lora/svd_lora: the adapter's output is scaled by alpha / r")
    lora_dropout: float = _field(0.1, "--peft=lora/svd_lora: dropout on the adapter's input")
    lora_target_modules: str = _field("query,value", "--peft=lora/svd_lora: comma-separated Linear layers to adapt, by name or "
                                      "dotted suffix (query, key, value, attention.output.dense, intermediate.dense, "
                                      "output.dense)")
    # -- knowledge distillation
    distill_from: str = _field("", "train a student on this fine-tuned teacher's outputs (an HF folder or .ckpt of the "
                               "same task); the student is --init_from, else the teacher's config with "
                               "--student_layers/--student_hidden_size, initialised from the teacher where shapes allow")
    student_layers: int = _field(0, "--distill_from: the student's layers (0: the teacher's)")
    student_hidden_size: int = _field(0, "--distill_from: the student's hidden size (0: the teacher's; a multiple of 64)")
    temperature: float = _field(2.0, "--distill_from: softmax temperature of the distillation loss")
    distill_alpha: float = _field(0.5, "--distill_from: loss = alpha x KL(teacher || student) x T^2 + (1 - alpha) x "
                                  "the task loss")
    distill_hidden_weight: float = _field(0.0, "--distill_from: add this weight x the mean squared distance between "
                                          "student hidden state k and the teacher's k x L_t / L_s (embeddings "
                                          "included; a learned projection when the hidden sizes differ); 0: off")
    # -- DeepSpeed (torch backend)
    deepspeed: str = _field("", "a DeepSpeed JSON config: train on DeepSpeed (ZeRO stage 0-3; its batch, clipping, "
                            "precision, optimizer and scheduler blocks set the matching flags); without DeepSpeed "
                            "installed, or if it fails to start, the plain trainer runs the same settings (one warning)")
    ckpt_id: str = _field("", "with --load_dir: the checkpoint to resume (its directory name, e.g. bert-step00000100, "
                          "or a step number; empty: the newest)")
    local_rank: int = _field(-1, "passed by the deepspeed launcher and not used: the ranks are read from the "
                             "launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK)")
    # -- data parallel: where rank 0 listens; the launcher (mpirun, torchrun, msrun) sets ranks
    master_addr: str = _field("", "address of rank 0 (default: $MASTER_ADDR, else 127.0.0.1)")
    master_port: int = _field(0, "port of rank 0 (default: $MASTER_PORT, else 29500)")
    network_interface: str = _field("", "network interface for collectives, e.g. eth0 (default: the system's choice)")
    collective_timeout: int = _field(45, "seconds a collective waits for a silent rank before the run stops")
    allreduce: str = _field("auto", "data parallel: how gradients are averaged over the ranks: framework (the "
                            "backend's own collectives, torch.distributed's gloo/NCCL or mindspore.communication: any "
                            "launcher and device; on CPU through TCP), mpi (MPI_Allreduce through mpi4py, which Open MPI "
                            "does in shared memory on one host: CPU under mpirun only, 10-30x faster there), auto (mpi "
                            "where it applies and mpi4py loads, else framework)", ("auto", "mpi", "framework"))
    bind_cores_to_rank: bool = _field(True, "CPU data parallel: pin each rank of a host to its own equal share of the "
                                      "physical cores it may use, with their hardware threads (DeepSpeed's flag), so "
                                      "that a rank's framework threads do not compete with the other ranks'; nothing "
                                      "is pinned when ranks outnumber CPUs or mpirun already bound the ranks")


FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}
# The original scripts' other names for the same settings (flags and recipe keys).
ALIASES = {"start_lr": "learning_rate", "dropout_prob": "dropout", "train_data_shuffle": "do_shuffle",
           # DeepSpeed users' names
           "save_dir": "save_checkpoint_path", "load_dir": "load_checkpoint_path"}
METRIC_OF_METHOD = {"accuracy": "accuracy", "f1": "f1", "mcc": "matthews_corrcoef",
                    "spearman_correlation": "spearman", "pearson": "pearson", "f1_weighted": "f1_weighted"}


def effective_precision(settings: TrainSettings) -> str:
    """--precision with auto resolved: bf16 on torch where the hardware does bf16 (GPU, or a CPU
    with AVX512-BF16 / AMX), else fp32 (MindSpore 2.10 has no bf16 LayerNorm on CPU)."""
    if settings.precision != "auto":
        return settings.precision
    if settings.backend != "torch":
        return "fp32"
    if settings.device_target == "GPU":
        return "bf16"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def run_dir(settings: TrainSettings) -> str:
    """Where a run writes: --save_checkpoint_path, or outputs/pretrain, outputs/squad or outputs/<task_name>."""
    if settings.save_checkpoint_path:
        return settings.save_checkpoint_path
    named = {"bert": "pretrain", "bert_squad": "squad", "bert_multiple_choice": "multiple_choice"}
    return os.path.join("outputs", named.get(settings.auto_model) or settings.task_name.lower() or "glue")


def reads_records(settings: TrainSettings) -> bool:
    """Whether a fine-tuning run reads record files rather than the task's own files."""
    return settings.dataset_format in ("tfrecord", "mindrecord")


def _flag_type(name: str):
    return {"bool": boolean, "int": int, "float": float, "Optional[float]": float}.get(str(FIELDS[name].type), str)


def build_parser(prog: str, description: str) -> StrictParser:
    """A parser whose defaults are SUPPRESSed, so that what the user typed can be told apart."""
    p = StrictParser(prog=prog, description=description, argument_default=argparse.SUPPRESS,
                     formatter_class=argparse.HelpFormatter)
    p.add_argument("--config", help="a YAML recipe whose keys are these flag names (the command line wins)")
    for name, f in FIELDS.items():
        choices = f.metadata["choices"]
        p.add_argument(f"--{name}", type=_flag_type(name), choices=choices, metavar=name.upper() if not choices else None,
                       help=f"{f.metadata['help']} (default: {f.default})")
    for alias, name in ALIASES.items():
        p.add_argument(f"--{alias}", dest=name, type=_flag_type(name), metavar=alias.upper(),
                       help=f"the original scripts' name of --{name}")
    return p


def add_setting_flags(parser, names, **defaults) -> None:
    """The training settings `names` as flags of another entry point (same type, choices and help;
    `defaults` overrides a default), so that evaluation takes what training took."""
    for name in names:
        f = FIELDS[name]
        default = defaults.get(name, f.default)
        parser.add_argument(f"--{name}", type=_flag_type(name), choices=f.metadata["choices"], default=default,
                            help=f.metadata["help"])


def read_recipe(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            recipe = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise UserInputError(f"--config={path}: no such recipe file") from None
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise UserInputError(f"{path}: a recipe is a mapping of flag names to values")
    for key in recipe:
        if key not in FIELDS and key not in ALIASES:
            raise UserInputError(f"{path}: unknown key {key!r}{closest_name(str(key), [*FIELDS, *ALIASES])}")
    return {ALIASES.get(key, key): value for key, value in recipe.items()}


def _coerce(name: str, value, source: str):
    f = FIELDS[name]
    kind = str(f.type)
    try:
        if value is None and kind.startswith("Optional"):
            return None
        if kind == "bool":
            return value if isinstance(value, bool) else boolean(str(value))
        if kind in ("int",):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind in ("float", "Optional[float]"):
            return float(value)
        value = str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise UserInputError(f"{source}: {name}={value!r} is not a valid {kind}") from None
    choices = f.metadata["choices"]
    if choices and value not in choices:
        raise UserInputError(f"{source}: {name}={value!r}; use one of {', '.join(choices)}")
    return value


def parse_settings(argv=None, prog: str = "bert_trainer", description: str = __doc__.split("\n\n")[0]) -> TrainSettings:
    given = vars(build_parser(prog, description).parse_args(argv))
    values = {}
    recipe_path = given.pop("config", None)
    if recipe_path:
        values.update({k: _coerce(k, v, recipe_path) for k, v in read_recipe(recipe_path).items()})
    values.update(given)  # already typed and checked by argparse
    return TrainSettings(**values)


def check(settings: TrainSettings, world_size: int = 1) -> None:
    """Cross-field rules; each failure is one line naming the flags and the fix."""
    s = settings
    for name in ("seq_length", "global_batch_size", "grad_accumulation_steps", "num_layers", "num_heads",
                 "embedding_size", "vocab_size", "max_predictions_per_seq", "epoch_size", "device_num",
                 "data_parallel", "model_parallel", "save_checkpoint_steps", "keep_checkpoint_max",
                 "log_steps", "shuffle_buffer", "collective_timeout", "eval_batch_size"):
        if getattr(s, name) < 1:
            raise UserInputError(f"--{name}={getattr(s, name)}: must be >= 1")
    if s.num_labels < 0 or s.pad_to_multiple_of < 0 or s.max_train_examples < 0 or not 0 <= s.warmup_ratio < 1 or not 0 < s.dev_fraction < 1:
        raise UserInputError("--num_labels, --pad_to_multiple_of and --max_train_examples must be >= 0, --warmup_ratio in [0, 1) "
                             "and --dev_fraction in (0, 1)")
    if s.seq_length > s.max_position_embeddings:
        raise UserInputError(f"--seq_length={s.seq_length} exceeds --max_position_embeddings={s.max_position_embeddings}; "
                             "lower the first or raise the second")
    if s.embedding_size % s.num_heads:
        raise UserInputError(f"--embedding_size={s.embedding_size} is not divisible by --num_heads={s.num_heads}")
    if s.model_parallel != 1:
        raise UserInputError(f"--model_parallel={s.model_parallel}: only data parallelism is supported; use 1")
    if s.full_batch:
        raise UserInputError("--full_batch=true: every rank reads its own shard here; use false")
    if s.parallel_mode == "stand_alone" and world_size > 1:
        raise UserInputError(f"--parallel_mode=stand_alone but the launcher started {world_size} ranks; "
                             "use --parallel_mode=data_parallel")
    if s.parallel_mode == "data_parallel":
        if s.data_parallel * s.model_parallel != world_size:
            raise UserInputError(f"--data_parallel={s.data_parallel} x --model_parallel={s.model_parallel} "
                                 f"!= world size {world_size}; set --data_parallel={world_size}")
        if s.device_num != world_size:
            raise UserInputError(f"--device_num={s.device_num} but the launcher started {world_size} ranks; "
                                 f"set --device_num={world_size}")
    per_step = world_size * s.grad_accumulation_steps
    if s.global_batch_size % per_step:
        raise UserInputError(f"--global_batch_size={s.global_batch_size} is not divisible by world size {world_size} "
                             f"x --grad_accumulation_steps={s.grad_accumulation_steps}; use a multiple of {per_step}")
    if s.precision == "fp16" and s.device_target == "CPU":
        raise UserInputError("--precision=fp16 needs --device_target=GPU (dynamic loss scaling); use bf16 or fp32 on CPU")
    if s.warmup_steps < 0 or s.train_steps < 0 or not 0 < s.learning_rate < math.inf:
        raise UserInputError("--warmup_steps and --train_steps must be >= 0 and --learning_rate a finite number > 0")
    if not 0 < s.adam_epsilon < math.inf:
        raise UserInputError(f"--adam_epsilon={s.adam_epsilon}: it must be a finite number > 0 "
                             "(1e-6 as in google's BERT, 1e-8 as in HF)")
    if s.backend == "torch" and s.optimizer == "adamweightdecay":
        raise UserInputError("--optimizer=adamweightdecay is MindSpore's; on torch use adamw or lamb")
    if s.auto_model == "bert" and not s.train_data_path:
        raise UserInputError("--train_data_path is required: the record files to train on")
    if s.auto_model == "bert_glue":
        _check_glue(s)
    if s.auto_model == "bert_squad":
        _check_squad(s)
    if s.auto_model == "bert_multiple_choice":
        _check_multiple_choice(s)
    if s.peft == "svd_lora" and s.backend != "torch":
        raise UserInputError("--peft=svd_lora runs on --backend=torch (its rank budget reads the singular values' "
                             "gradients through torch hooks); lora and prefix run on both backends")
    if s.peft and not s.init_from and not s.load_checkpoint_path:
        raise UserInputError(f"--peft={s.peft} adapts a trained model: pass --init_from (an HF folder or a .ckpt)")
    if s.distill_from:
        check_loss_weights(s.temperature, s.distill_alpha, s.distill_hidden_weight)
    if s.distill_from and s.auto_model not in ("bert_glue", "bert_multiple_choice"):
        raise UserInputError(f"--distill_from works with bert_glue and bert_multiple_choice, not {s.auto_model}")
    if s.distill_from and s.peft:
        raise UserInputError("--distill_from trains the whole student; leave --peft out")
    if s.deepspeed and s.backend != "torch":
        raise UserInputError("--deepspeed is for --backend=torch; MindSpore runs its own data parallelism")
    if s.ckpt_id and not s.load_checkpoint_path:
        raise UserInputError("--ckpt_id names a checkpoint under --load_dir; pass --load_dir too")
    if s.load_checkpoint_path and not os.path.exists(s.load_checkpoint_path):
        raise UserInputError(f"--load_checkpoint_path={s.load_checkpoint_path}: no such checkpoint")


def _check_glue(s: TrainSettings) -> None:
    if not s.task_name:
        raise UserInputError("--task_name is required with --auto_model=bert_glue (a GLUE task, or csv)")
    if s.dataset_format == "json":
        raise UserInputError("--dataset_format=json is for bert_squad; GLUE reads its TSV files (leave it empty)")
    if reads_records(s):
        if not s.train_data_path or not s.eval_data_path:
            raise UserInputError(f"--dataset_format={s.dataset_format}: pass the records made by "
                                 "generate_glue_mindrecord.py as --train_data_path and --eval_data_path")
    elif s.task_name.lower() == "csv":
        if not s.train_data_path or not s.text_column:
            raise UserInputError("--task_name=csv needs --train_data_path (a CSV/TSV file with a header) and "
                                 "--text_column (and --label_column if it is not 'label')")
    elif not s.data_dir:
        raise UserInputError(f"--task_name={s.task_name} needs --data_dir, the directory of its GLUE files")


def _check_squad(s: TrainSettings) -> None:
    if not s.train_data_path:
        raise UserInputError("--train_data_path is required with --auto_model=bert_squad: a SQuAD-format JSON file "
                             "(or records with --dataset_format)")
    if s.dataset_format == "tsv":
        raise UserInputError("--dataset_format=tsv is for bert_glue; SQuAD reads JSON (leave it empty)")
    if reads_records(s) and s.eval_data_path and not os.path.isfile(s.eval_data_path + ".maps.json"):
        raise UserInputError(f"--eval_data_path={s.eval_data_path}: with --dataset_format={s.dataset_format} pass the "
                             "evaluation records made by generate_squad_mindrecord.py (with their .maps.json)")
    for name in ("doc_stride", "max_query_length", "n_best_size", "max_answer_length"):
        if getattr(s, name) < 1:
            raise UserInputError(f"--{name}={getattr(s, name)}: must be >= 1")


def _check_multiple_choice(s: TrainSettings) -> None:
    if not s.data_dir and not (s.train_data_path and s.eval_data_path):
        raise UserInputError("--auto_model=bert_multiple_choice needs --data_dir (questions to split 70/25/5) or "
                             "--train_data_path and --eval_data_path")
    if s.dataset_format:
        raise UserInputError(f"--dataset_format={s.dataset_format}: bert_multiple_choice reads CSV or JSON questions; "
                             "leave it empty")
    if not 2 <= s.num_choices <= 10:
        raise UserInputError(f"--num_choices={s.num_choices}: must be between 2 and 10")
