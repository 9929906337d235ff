"""--deepspeed on the torch backend, on real RTE and the real MiniLM checkpoint: the config's
blocks become settings (one-line errors for bad configs); with DeepSpeed hidden the run falls
back to the plain trainer with one warning and the same losses; with DeepSpeed installed (CPU)
ZeRO stage 2 with accumulation gives the plain trainer's losses, and (slow) stage 3, an exact
resume through --load_dir/--ckpt_id and the deepspeed launcher with two ranks."""

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from mindtransformer.errors import UserInputError
from mindtransformer.trainer import deepspeed_config
from mindtransformer.trainer.settings import parse_settings
from mindtransformer.utils.bundled import RESOURCES
from tests.trainer.cli import ENV, REPO_ROOT, finetune, one_line_error, train_losses

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
needs_deepspeed = pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (pip install deepspeed)")


def rte_args(minilm_path, out, steps=4):
    return ["--auto_model=bert_glue", "--task_name=rte", f"--data_dir={os.path.join(RESOURCES, 'glue', 'RTE')}",
            f"--init_from={minilm_path}", f"--train_steps={steps}", "--global_batch_size=8", "--log_steps=1",
            "--dropout=0", "--max_train_examples=64", "--eval_batch_size=64", "--save_checkpoint_steps=2",
            f"--save_checkpoint_path={out}"]


def write_config(path, stage, **extra):
    config = {"zero_optimization": {"stage": stage}, "train_micro_batch_size_per_gpu": "auto", **extra}
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, minilm_path):
    """4 steps of the plain trainer with two micro-batches of 4 per step."""
    out = str(tmp_path_factory.mktemp("plain") / "run")
    done = finetune(*rte_args(minilm_path, out), "--grad_accumulation_steps=2")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


# ---- the config ---------------------------------------------------------------------------------

def test_config_blocks_become_settings(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({
        "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "train_batch_size": "auto",
        "gradient_clipping": 0.5, "bf16": {"enabled": True}, "zero_optimization": {"stage": 1},
        "optimizer": {"type": "AdamW", "params": {"lr": 5e-5, "weight_decay": "auto", "eps": 1e-8}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 10, "total_num_steps": 100}}}))
    settings = parse_settings([f"--deepspeed={path}", "--weight_decay=0.1"])
    new, config, taken = deepspeed_config.apply_to_settings(settings, world_size=2)
    assert (new.global_batch_size, new.grad_accumulation_steps, new.clip_grad_norm, new.precision) == (16, 2, 0.5, "bf16")
    assert (new.optimizer, new.learning_rate, new.weight_decay) == ("adamw", 5e-5, 0.1)  # "auto": the flag's
    assert new.adam_epsilon == 1e-8
    assert (new.warmup_steps, new.train_steps, new.lr_decay) == (10, 100, "linear")
    assert ("learning_rate", 5e-5) in taken and not any(name == "weight_decay" for name, _ in taken)
    filled = deepspeed_config.filled_config(config, new, world_size=2)
    assert (filled["train_batch_size"], filled["train_micro_batch_size_per_gpu"], filled["gradient_accumulation_steps"]) \
        == (16, 4, 2)
    assert "optimizer" not in filled and "scheduler" not in filled  # the trainer's own, built from those values


@pytest.mark.parametrize("config, message", [
    ('{"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4}', "train_batch_size=10 but"),
    ('{"zero_optimization": {"stage": 4}}', "zero_optimization.stage=4"),
    ('{"optimizer": {"type": "OneBitAdam"}}', "optimizer type 'OneBitAdam'"),
    ('{"zero_optimization": ', "not valid JSON"),
])
def test_bad_configs_are_one_line_errors(tmp_path, config, message):
    path = tmp_path / "ds.json"
    path.write_text(config)
    with pytest.raises(UserInputError, match=message) as err:
        deepspeed_config.apply_to_settings(parse_settings([f"--deepspeed={path}"]), world_size=1)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_deepspeed_flags(tmp_path, minilm_path):
    from mindtransformer.trainer.settings import check

    done = finetune(*rte_args(minilm_path, str(tmp_path)), f"--deepspeed={tmp_path / 'missing.json'}")
    one_line_error(done, "missing.json: no such file", "DeepSpeed JSON config")
    config = write_config(tmp_path / "ds.json", 0)
    with pytest.raises(UserInputError, match="--deepspeed is for --backend=torch"):
        check(parse_settings([f"--deepspeed={config}", "--backend=mindspore", "--train_data_path=x"]))
    with pytest.raises(UserInputError, match="--ckpt_id names a checkpoint under --load_dir"):
        check(parse_settings(["--ckpt_id=3", "--train_data_path=x"]))
    # the deepspeed launcher passes --local_rank; it is accepted (the ranks come from the environment)
    assert parse_settings(["--local_rank=1"]).local_rank == 1


# ---- the fallback and the engine -------------------------------------------------------------

def test_fallback_without_deepspeed(plain, tmp_path, minilm_path):
    hidden = tmp_path / "hide" / "deepspeed"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("No module named \'deepspeed\'")\n')
    config = write_config(tmp_path / "ds.json", 2, gradient_accumulation_steps=2)
    out = str(tmp_path / "run")
    done = subprocess.run([*finetune_command(), *rte_args(minilm_path, out, steps=2), f"--deepspeed={config}"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                          env=dict(ENV, PYTHONPATH=f"{tmp_path / 'hide'}:{REPO_ROOT}"))
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "DeepSpeed is not installed" in warnings[0] and "plain trainer" in warnings[0]
    assert "--grad_accumulation_steps=2" in done.stdout  # taken from the config
    assert train_losses(out) == train_losses(plain)[:2]


def finetune_command():
    import sys

    return [sys.executable, "-m", "mindtransformer.trainer.trainer"]


@needs_deepspeed
def test_zero_stage_2_trains_as_the_plain_trainer(plain, tmp_path, minilm_path):
    out = str(tmp_path / "run")
    config = write_config(tmp_path / "ds.json", 2, gradient_accumulation_steps=2)
    done = finetune(*rte_args(minilm_path, out, steps=2), f"--deepspeed={config}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WARNING" not in done.stderr, done.stderr[-2000:]
    np.testing.assert_allclose(train_losses(out), train_losses(plain)[:2], rtol=1e-6)
    assert os.path.isfile(os.path.join(out, "checkpoints", "bert-step00000002", "mp_rank_00_model_states.pt"))
    import transformers

    transformers.AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "final"))


def assert_export_loads(out, plain):
    """transformers loads the HF export, and its weights are the plain trainer's."""
    import transformers
    from safetensors.numpy import load_file

    transformers.AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "final"))
    ours, theirs = (load_file(os.path.join(run, "final", "model.safetensors")) for run in (out, plain))
    assert ours.keys() == theirs.keys()
    assert max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours) < 1e-5


@needs_deepspeed
@pytest.mark.slow
def test_zero_stage_3_resume_and_launcher(plain, tmp_path, minilm_path):
    out = str(tmp_path / "run")
    config = write_config(tmp_path / "ds.json", 3, gradient_accumulation_steps=2)
    done = finetune(*rte_args(minilm_path, out), f"--deepspeed={config}")
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(train_losses(out), train_losses(plain), rtol=1e-6)
    assert_export_loads(out, plain)  # gathered from the ZeRO-3 partitions
    # resume from the step-2 checkpoint by its id: steps 3 and 4 as in the straight run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(out, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "bert-step00000004"))
    os.remove(os.path.join(resumed, "metrics.jsonl"))
    done = finetune(*rte_args(minilm_path, resumed), f"--deepspeed={config}", f"--load_dir={resumed}",
                    "--ckpt_id=2")
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(train_losses(resumed), train_losses(plain)[2:], rtol=1e-6)
    # the deepspeed launcher, two ranks on the CPU (it passes --local_rank)
    launcher = shutil.which("deepspeed") or os.path.join(os.path.dirname(finetune_command()[0]), "deepspeed")
    two = str(tmp_path / "two")
    done = subprocess.run([launcher, "--num_gpus", "2", "--master_port", "29541", "--module",
                           "mindtransformer.trainer.trainer", *rte_args(minilm_path, two), "--parallel_mode=data_parallel",
                           "--device_num=2", "--data_parallel=2", f"--deepspeed={write_config(tmp_path / 'ds1.json', 1)}"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                          env=dict(ENV, PATH=f"{os.path.dirname(finetune_command()[0])}:{os.environ['PATH']}"))
    assert done.returncode == 0, done.stderr[-3000:]
    # two ranks of 4 see what one process with two micro-batches of 4 sees
    np.testing.assert_allclose(train_losses(two), train_losses(plain), rtol=1e-5)


def test_deepspeed_names_of_the_run_directories():
    settings = parse_settings(["--save_dir=/tmp/x", "--load_dir=/tmp/y"])
    assert dataclasses.is_dataclass(settings)
    assert (settings.save_checkpoint_path, settings.load_checkpoint_path) == ("/tmp/x", "/tmp/y")
