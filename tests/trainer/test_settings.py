"""Run settings: original flags, recipes, strictness and the cross-field rules; the schedule."""

import pytest

from mindtransformer.errors import UserInputError
from mindtransformer.trainer.schedule import learning_rate
from mindtransformer.trainer.settings import TrainSettings, check, parse_settings

ORIGINAL = ["--train_data_path=/data", "--optimizer=lamb", "--seq_length=128", "--max_position_embeddings=512",
            "--parallel_mode=data_parallel", "--checkpoint_prefix=bert", "--global_batch_size=64",
            "--vocab_size=30522", "--embedding_size=768", "--num_layers=12", "--num_heads=12",
            "--device_target=CPU", "--epoch_size=2", "--device_num=2", "--data_parallel=2", "--model_parallel=1",
            "--full_batch=false"]


def test_original_flags_parse_with_true_false_strings():
    s = parse_settings(ORIGINAL)
    assert (s.optimizer, s.parallel_mode, s.global_batch_size, s.full_batch, s.device_num) == \
        ("lamb", "data_parallel", 64, False, 2)
    check(s, world_size=2)
    assert parse_settings(["--full_batch", "True"]).full_batch is True


def test_misspelled_and_unknown_flags_name_the_nearest(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--learning_rte=1e-4"])
    assert exit_info.value.code == 2 and "--learning_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_settings(["--precision=fp8"])
    assert "fp32" in capsys.readouterr().err


def test_core_binding_is_on_by_default_and_refuses_a_value_that_is_not_true_or_false(capsys):
    assert parse_settings([]).bind_cores_to_rank is True
    assert parse_settings(["--bind_cores_to_rank=false"]).bind_cores_to_rank is False
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--bind_cores_to_rank=maybe"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "--bind_cores_to_rank: 'maybe' is not a boolean; use true or false" in error
    with pytest.raises(SystemExit):
        parse_settings(["--bind_core_to_rank=false"])
    assert "did you mean '--bind_cores_to_rank'" in capsys.readouterr().err


def test_recipe_keys_are_flag_names_and_the_command_line_wins(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("num_layers: 2\nlearning_rate: 5.0e-4\nfull_batch: false\nbackend: mindspore\n")
    s = parse_settings(["--config", str(recipe), "--learning_rate=1e-3"])
    assert (s.num_layers, s.learning_rate, s.backend) == (2, 1e-3, "mindspore")
    (tmp_path / "bad.yaml").write_text("num_layer: 2\n")
    with pytest.raises(UserInputError, match="unknown key 'num_layer'.*num_layers"):
        parse_settings(["--config", str(tmp_path / "bad.yaml")])
    (tmp_path / "typed.yaml").write_text("num_layers: two\n")
    with pytest.raises(UserInputError, match="num_layers='two' is not a valid int"):
        parse_settings(["--config", str(tmp_path / "typed.yaml")])


@pytest.mark.parametrize("changes, world, message", [
    ({"seq_length": 1024}, 1, "exceeds --max_position_embeddings"),
    ({"global_batch_size": 30, "grad_accumulation_steps": 4}, 1, "not divisible by world size 1 x --grad_accumulation_steps=4"),
    ({"parallel_mode": "data_parallel", "data_parallel": 2, "device_num": 2, "global_batch_size": 6}, 4, "world size 4"),
    ({"model_parallel": 2}, 1, "only data parallelism"),
    ({"precision": "fp16"}, 1, "needs --device_target=GPU"),
    ({"embedding_size": 100, "num_heads": 12}, 1, "not divisible by --num_heads"),
    ({}, 2, "stand_alone but the launcher started 2 ranks"),
    ({"auto_model": "bert_squad", "train_data_path": ""}, 1, "--train_data_path is required with --auto_model=bert_squad"),
    ({"auto_model": "bert_squad", "dataset_format": "tsv"}, 1, "--dataset_format=tsv is for bert_glue"),
    ({"auto_model": "bert_squad", "dataset_format": "mindrecord", "eval_data_path": "/data/dev.json"}, 1,
     "pass the evaluation records made by generate_squad_mindrecord.py"),
    ({"auto_model": "bert_squad", "max_answer_length": 0}, 1, "--max_answer_length=0: must be >= 1"),
    ({"adam_epsilon": 0.0}, 1, "--adam_epsilon=0.0: it must be a finite number > 0"),
    ({"adam_epsilon": float("nan")}, 1, "--adam_epsilon=nan: it must be a finite number > 0"),
    ({"learning_rate": float("inf")}, 1, "--learning_rate a finite number > 0"),
    ({"auto_model": "bert_glue", "task_name": "rte", "data_dir": "/d", "dataset_format": "json"}, 1,
     "--dataset_format=json is for bert_squad"),
])
def test_cross_field_rules(changes, world, message):
    settings = TrainSettings(**{"train_data_path": "/data", **changes})
    with pytest.raises(UserInputError, match=message):
        check(settings, world_size=world)


def test_schedule_warmup_then_decay():
    lrs = [learning_rate(step, 1e-3, warmup_steps=10, total_steps=110) for step in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3) and lrs[60] == pytest.approx(5e-4) and lrs[109] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    poly = learning_rate(60, 1e-3, 10, 110, decay="polynomial", end_lr=1e-5, power=2.0)
    assert poly == pytest.approx((1e-3 - 1e-5) * 0.25 + 1e-5)
    assert learning_rate(500, 1e-3, 10, 110) == 0.0 and learning_rate(50, 1e-3, 0, 100, decay="constant") == 1e-3
