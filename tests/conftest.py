import csv
import gc
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


def shared_file(*parts) -> str:
    """A file under ../shared/data; the test is skipped where that folder is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (../shared/data is optional outside CI)")
    return path


def read_tsv(path, limit=None) -> list:
    """Rows of a GLUE TSV as dicts (utf-8-sig drops MRPC's BOM)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[:limit] if limit else rows


def pytest_collection_modifyitems(items):
    """The end-to-end training tests first: with the files shared out over workers
    (scripts/test.sh), the long ones start early and the short ones fill in at the end."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/trainer/"))


@pytest.fixture(scope="session")
def minilm_path():
    from mindtransformer.utils.bundled import minilm_path as path
    return path()


@pytest.fixture(scope="session")
def sst2_sentences():
    return [r["sentence"] for r in read_tsv(shared_file("glue", "SST-2", "dev.tsv"))]


@pytest.fixture(scope="session")
def mrpc_pairs():
    rows = read_tsv(shared_file("glue", "MRPC", "dev.tsv"))
    return [r["#1 String"] for r in rows], [r["#2 String"] for r in rows]


@pytest.fixture(scope="session")
def waimai_reviews():
    with open(shared_file("chinese_sentiment", "waimai_10k", "waimai_10k.csv"), encoding="utf-8", newline="") as f:
        return [row["review"] for row in csv.DictReader(f)]


@pytest.fixture(params=["PYNATIVE", "GRAPH"])
def mindspore_mode(request):
    """Run a test in MindSpore's PYNATIVE and in its GRAPH mode; PYNATIVE is restored after."""
    import mindspore as ms

    ms.set_context(mode=getattr(ms, f"{request.param}_MODE"))
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)
    # Each compiled graph keeps its runtime memory in this (pytest's) process: without this the
    # GRAPH-mode tests left it at ~13 GB, which later tests' subprocesses then lack.
    gc.collect()
    ms.ms_memory_recycle()


def make_pretraining_records(out_dir: str, output_format: str = "tfrecord", dupe_factor: int = 2) -> str:
    """MLM/NSP records from the bundled Wikipedia excerpt (MiniLM's vocabulary), through the CLI."""
    import subprocess
    import sys

    from mindtransformer.data.wiki import extract_dump
    from mindtransformer.utils.bundled import RESOURCES, minilm_path

    text = os.path.join(out_dir, "text")
    if not os.path.isdir(text):
        extract_dump(os.path.join(RESOURCES, "enwiki-excerpt-6-articles.xml.bz2"), text)
    records = os.path.join(out_dir, output_format)
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "create_pretraining_data.py"),
                           "--input_file", os.path.join(text, "wiki_*.txt"),
                           "--output_file", os.path.join(records, f"wiki.{output_format}"),
                           "--output_format", output_format, "--vocab_file", os.path.join(minilm_path(), "vocab.txt"),
                           "--dupe_factor", str(dupe_factor), "--num_shards", "2", "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return records


@pytest.fixture(scope="session")
def pretraining_tfrecords(tmp_path_factory):
    return make_pretraining_records(str(tmp_path_factory.mktemp("pretraining")), "tfrecord")
