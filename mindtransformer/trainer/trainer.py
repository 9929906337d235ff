"""`python -m mindtransformer.trainer.trainer --auto_model=bert|bert_glue|bert_squad|bert_multiple_choice [...]`: the
one training entry point (the original suite's name); --auto_model picks the job, everything
else (flags, loop, precision, accumulation, resume, logs, data parallelism) is shared.

    bert       MLM + NSP pretraining on records (trainer/pretrain.py)
    bert_glue  GLUE or CSV text classification (trainer/classification.py)
    bert_squad SQuAD-format question answering (trainer/question_answering.py)
    bert_multiple_choice  multiple-choice questions (trainer/multiple_choice.py)
"""

from __future__ import annotations

from mindtransformer.trainer.distributed import bind_cores, exit_mindspore_rank, prepare_mindspore, world_from_env
from mindtransformer.trainer.settings import check, parse_settings


def main(argv=None, prog: str = "python -m mindtransformer.trainer.trainer") -> int:
    settings = parse_settings(argv, prog=prog, description=__doc__.split("\n\n")[0])
    world = world_from_env(settings)
    if settings.deepspeed:  # its blocks set the matching flags, before the rules are checked
        from mindtransformer.trainer.deepspeed_config import apply_to_settings

        settings, _, taken = apply_to_settings(settings, world.size)
        if taken and world.is_main:
            print(f"from {settings.deepspeed}: " + ", ".join(f"--{k}={v}" for k, v in taken), flush=True)
    check(settings, world.size)
    if settings.bind_cores_to_rank and settings.device_target == "CPU":
        bind_cores(world)  # first: only threads started after it inherit the binding
    if settings.auto_model == "bert_glue":
        from mindtransformer.trainer.classification import classification_job as make_job
    elif settings.auto_model == "bert_squad":
        from mindtransformer.trainer.question_answering import squad_job as make_job
    elif settings.auto_model == "bert_multiple_choice":
        from mindtransformer.trainer.multiple_choice import multiple_choice_job as make_job
    else:
        from mindtransformer.trainer.pretrain import pretraining_job as make_job
    job = make_job(settings, world)  # reads and checks the data before anything heavy
    if settings.backend == "mindspore":
        prepare_mindspore(world)  # before mindspore is imported
    from mindtransformer.trainer.runner import train

    code = train(settings, world, job)
    if settings.backend == "mindspore" and world.size > 1:
        exit_mindspore_rank(code)
    return code


if __name__ == "__main__":
    from mindtransformer.utils.cli import run_main

    raise SystemExit(run_main(main))
