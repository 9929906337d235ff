"""--peft=lora through the trainer on real RTE and the real MiniLM checkpoint: the parameter table
at start, only the adapter and the classifier change, the loss on one batch seen at every step
goes down, the adapter is saved
apart and merged into an HF folder that the evaluation entry point and transformers load, and a
resumed run continues with the same losses."""

import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from mindtransformer.utils.bundled import RESOURCES
from tests.trainer.cli import finetune, one_line_error, run, train_losses


def lora_args(minilm_path, out, steps=6):
    return ["--auto_model=bert_glue", "--task_name=rte", f"--data_dir={os.path.join(RESOURCES, 'glue', 'RTE')}",
            f"--init_from={minilm_path}", f"--train_steps={steps}", "--global_batch_size=16", "--log_steps=1",
            "--max_train_examples=16", "--learning_rate=2e-3", "--dropout=0", "--save_checkpoint_steps=3",
            "--peft=lora", "--lora_rank=4", "--lora_target_modules=query,value,attention.output.dense",
            f"--save_checkpoint_path={out}"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, minilm_path):
    out = str(tmp_path_factory.mktemp("lora") / "run")
    done = finetune(*lora_args(minilm_path, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_only_the_adapter_trains_and_the_export_is_merged(lora_run, minilm_path):
    out, done = lora_run
    # 6 layers x 3 targets x r=4 x (384 + 384), and the classifier (384 x 2 + 2)
    lora, head = 6 * 3 * 4 * (384 + 384), 384 * 2 + 2
    weights = load_file(os.path.join(minilm_path, "model.safetensors")).values()
    base_total = sum(a.size for a in weights if a.dtype.kind == "f") + head  # not the position_ids buffer
    line = next(line for line in done.stdout.splitlines() if line.startswith("parameters:"))
    total, trainable = (base_total + lora), (lora + head)
    assert line == f"parameters: {total:,} total, {trainable:,} trainable ({100 * trainable / total:.2f} %) with lora"
    losses = train_losses(out)
    assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    base = load_file(os.path.join(minilm_path, "model.safetensors"))
    merged = {k[len("bert."):] if k.startswith("bert.") else k: v  # MiniLM's file has no "bert." prefix
              for k, v in load_file(os.path.join(out, "final", "model.safetensors")).items()}
    assert not any("lora" in k or "base_layer" in k for k in merged)
    changed = sorted(k for k in merged if k in base and not np.array_equal(merged[k], base[k]))
    adapted = [k for k in base if k.endswith(("query.weight", "value.weight", "attention.output.dense.weight"))]
    assert changed == sorted(adapted)  # the frozen rest is the base's, bit for bit
    adapter = load_file(os.path.join(out, "final", "adapter", "adapter_model.safetensors"))
    assert len([k for k in adapter if ".lora_" in k]) == 6 * 3 * 2 and "base_model.model.classifier.weight" in adapter
    done = run("mindtransformer.tasks.text_classification", f"--load_checkpoint_path={os.path.join(out, 'final')}",
               "--task_name=RTE", f"--data_dir={os.path.join(RESOURCES, 'glue', 'RTE')}")
    assert done.returncode == 0 and '"examples": 277' in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
def test_resume_continues_with_the_same_losses(lora_run, tmp_path, minilm_path):
    out, _ = lora_run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(out, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "bert-step00000006"))
    os.remove(os.path.join(resumed, "metrics.jsonl"))
    done = finetune(*lora_args(minilm_path, resumed), f"--load_checkpoint_path={resumed}")
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(train_losses(resumed), train_losses(out)[3:], rtol=1e-5)


def test_peft_needs_a_trained_model(tmp_path):
    done = finetune("--auto_model=bert_glue", "--task_name=rte", f"--data_dir={os.path.join(RESOURCES, 'glue', 'RTE')}",
                    "--peft=lora", f"--save_checkpoint_path={tmp_path}")
    one_line_error(done, "--peft=lora adapts a trained model: pass --init_from")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_prefix_tuning_trains_and_exports_folded_prefixes(tmp_path, minilm_path, backend):
    out = str(tmp_path / "run")
    args = [a for a in lora_args(minilm_path, out) if not a.startswith(("--peft", "--lora"))]
    # one batch of 16 seen at every step: the prefixes must fit it
    done = finetune(*args, "--peft=prefix", "--prefix_length=8", "--learning_rate=1e-3", f"--backend={backend}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "with prefix" in done.stdout
    losses = train_losses(out)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    exported = load_file(os.path.join(out, "final", "model.safetensors"))
    tables = [k for k in exported if k.endswith(".attention.self.prefix.key_value.weight")]
    assert len(tables) == 6 and exported[tables[0]].shape == (8, 2 * 384)  # folded: no MLP left
    assert os.path.isfile(os.path.join(out, "final", "prefix", "prefix_model.safetensors"))
    done = run("mindtransformer.tasks.text_classification", f"--load_checkpoint_path={os.path.join(out, 'final')}",
               "--task_name=RTE", f"--data_dir={os.path.join(RESOURCES, 'glue', 'RTE')}")
    assert done.returncode == 0 and '"examples": 277' in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
def test_mindspore_lora_trains_only_the_adapter(tmp_path, minilm_path):
    out = str(tmp_path / "run")
    done = finetune(*lora_args(minilm_path, out), "--backend=mindspore")
    assert done.returncode == 0, done.stderr[-3000:]
    losses = train_losses(out)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    base = load_file(os.path.join(minilm_path, "model.safetensors"))
    merged = {k[len("bert."):] if k.startswith("bert.") else k: v
              for k, v in load_file(os.path.join(out, "final", "model.safetensors")).items()}
    changed = sorted(k for k in merged if k in base and not np.array_equal(merged[k], base[k]))
    assert changed == sorted(k for k in base if k.endswith(("query.weight", "value.weight", "attention.output.dense.weight")))
    assert os.path.isfile(os.path.join(out, "final", "adapter", "adapter_model.safetensors"))


def test_svd_lora_on_mindspore_is_refused_up_front(tmp_path, minilm_path):
    done = finetune(*lora_args(minilm_path, str(tmp_path)), "--peft=svd_lora", "--backend=mindspore")
    one_line_error(done, "--peft=svd_lora runs on --backend=torch")


@pytest.mark.slow
def test_svd_lora_prunes_to_the_budget_and_exports_merged(tmp_path, minilm_path):
    import json

    import transformers

    out = str(tmp_path / "run")
    args = [a for a in lora_args(minilm_path, out, steps=10) if not a.startswith(("--peft", "--lora"))]
    done = finetune(*args, "--peft=svd_lora", "--svd_init_rank=6", "--svd_target_rank=2", "--learning_rate=1e-3")
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    ranks = [r["svd_lora_rank"] for r in records if "svd_lora_rank" in r]  # the total after each step
    assert ranks[0] <= 12 * 6 and ranks[-1] == 12 * 2 and ranks == sorted(ranks, reverse=True)
    final = os.path.join(out, "final")
    assert sum(json.load(open(os.path.join(final, "svd_lora_ranks.json"))).values()) == 12 * 2
    merged = load_file(os.path.join(final, "model.safetensors"))
    assert not any("lora" in k or "rank_mask" in k for k in merged)
    transformers.AutoModelForSequenceClassification.from_pretrained(final)
