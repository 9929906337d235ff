import csv
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
