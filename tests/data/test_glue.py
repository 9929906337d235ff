"""GLUE task table: reading the real MRPC, RTE and SST-2 files, the other tasks' published
layouts, metrics against known baselines, bad files."""

import numpy as np
import pytest

from mindtransformer.data import glue
from mindtransformer.errors import UserInputError
from tests.conftest import shared_file


@pytest.mark.parametrize("task, count, counts", [
    ("mrpc", 408, {"1": 279, "0": 129}),
    ("rte", 277, {"entailment": 146, "not_entailment": 131}),
    ("sst-2", 872, {"1": 444, "0": 428}),
])
def test_real_dev_files(task, count, counts):
    spec = glue.get_task(task)
    examples = glue.read_examples(spec, shared_file("glue", spec.name.upper(), "dev.tsv"))
    assert len(examples) == count
    assert {label: sum(e.label == label for e in examples) for label in counts} == counts
    assert all(e.text_a and (e.text_b is None) == (spec.text_b is None) for e in examples)


def test_mrpc_majority_baseline_is_the_published_one():
    # Predicting "paraphrase" for every MRPC dev pair: 68.4 accuracy and 81.2 F1 (GLUE's baseline).
    spec = glue.get_task("MRPC")
    references = glue.label_ids(spec, glue.read_examples(spec, shared_file("glue", "MRPC", "dev.tsv")))
    metrics = glue.score(spec, np.ones_like(references), references)
    assert round(100 * metrics["accuracy"], 1) == 68.4 and round(100 * metrics["f1"], 1) == 81.2


def test_test_files_read_without_labels():
    spec = glue.get_task("rte")
    examples = glue.read_examples(spec, shared_file("glue", "RTE", "test.tsv"), with_labels=False)
    assert len(examples) == 3000 and all(e.label is None for e in examples)


LAYOUTS = {
    "cola": "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
            "gj04\t0\t*\tThey drank the pub.\n",
    "mnli": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
            "0\t31193\t31193n\tgovernment\t(x)\t(y)\t(X)\t(Y)\tConceptually cream skimming has two dimensions.\t"
            "Product and geography are what make cream skimming work.\tneutral\tneutral\n",
    "sts-b": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
             "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n",
    "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
           "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is enough?\t0\n",
    "qnli": "index\tquestion\tsentence\tlabel\n0\tWhat came into force after the new constitution?\t"
            "As of that day, the new constitution came into force.\tentailment\n",
    "wnli": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n",
}


@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_published_layouts_of_the_other_tasks(task, tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text(LAYOUTS[task], encoding="utf-8")
    spec = glue.get_task(task)
    examples = glue.read_examples(spec, str(path))
    first = examples[0]
    expected_a = {"cola": "Our friends won't buy this analysis, let alone the next one we propose.",
                  "mnli": "Conceptually cream skimming has two dimensions.", "sts-b": "A plane is taking off.",
                  "qqp": "How is the life of a math student?",
                  "qnli": "What came into force after the new constitution?",
                  "wnli": "I stuck a pin through a carrot."}[task]
    assert first.text_a == expected_a
    assert first.label == {"cola": "1", "mnli": "neutral", "sts-b": 5.0, "qqp": "0", "qnli": "entailment",
                           "wnli": "1"}[task]
    assert (first.text_b is None) == (task == "cola")
    assert spec.num_labels == {"mnli": 3, "sts-b": 1}.get(task, 2)


def test_metrics_of_each_kind():
    cola, stsb = glue.get_task("CoLA"), glue.get_task("STS-B")
    assert glue.score(cola, np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0])) == {"matthews_corrcoef": 1.0}
    assert glue.score(cola, np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0]))["matthews_corrcoef"] == -1.0
    scores = glue.score(stsb, np.array([0.0, 1.0, 2.0, 4.0]), np.array([0.0, 1.0, 2.0, 3.0]))
    assert scores["spearman"] == pytest.approx(1.0) and 0.95 < scores["pearson"] < 1.0
    assert glue.get_task("mnli").dev_files == ("dev_matched.tsv", "dev_mismatched.tsv")
    assert glue.get_task("sts-b").is_regression and glue.get_task("SST2").name == "sst-2"


def test_bad_files_and_names(tmp_path):
    spec = glue.get_task("rte")
    bad_label = tmp_path / "bad_label.tsv"
    bad_label.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tyes\n")
    with pytest.raises(UserInputError, match=r"bad_label.tsv:2: label 'yes' is not one of entailment, not_entailment"):
        glue.read_examples(spec, str(bad_label))
    short = tmp_path / "short.tsv"
    short.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\n")
    with pytest.raises(UserInputError, match=r"short.tsv:2: 2 fields, the RTE layout needs 4"):
        glue.read_examples(spec, str(short))
    other = tmp_path / "other.tsv"
    other.write_text("sentence\tlabel\nfine\t1\n")
    with pytest.raises(UserInputError, match=r"no 'sentence1' column"):
        glue.read_examples(spec, str(other))
    with pytest.raises(UserInputError, match=r"not a known task \(did you mean 'mrpc'\?\)"):
        glue.get_task("mrcp")
    with pytest.raises(UserInputError, match="no such file"):
        glue.read_examples(spec, str(tmp_path / "missing.tsv"))
