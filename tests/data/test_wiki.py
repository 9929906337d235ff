"""Wikipedia extraction: the sentence splitter, the cleaner of WikiExtractor's <doc> output, and
extract_dump / tools/extract_wiki.py on the real enwiki excerpt and on bad dumps."""

import bz2
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from mindtransformer.data.wiki import clean_extracted, extract_dump, split_sentences
from mindtransformer.errors import UserInputError
from tests.conftest import REPO_ROOT, shared_file

ENWIKI = ("wiki_dump", "enwiki", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
TABLE_MARKUP = ("wiki_dump", "enwiki", "enwiki-table-markup.xml.bz2")

# A paragraph of the Anarchism article as WikiExtractor 3.1.0 extracts it, and its sentences:
# four "i.e." and a "cf." inside, one real boundary before a digit-free capital each time.
ANARCHISM_PARAGRAPH = (
    'The term "anarchism" is a compound word composed from the word "anarchy" and the suffix "-ism", '
    'themselves derived respectively from the Greek, i.e. "anarchy" (from, "anarchos", meaning "one '
    'without rulers"; from the privative prefix ἀν- ("an-", i.e. "without") and, "archos", i.e. '
    '"leader", "ruler"; (cf. "archon" or, "arkhē", i.e. "authority", "sovereignty", "realm", '
    '"magistracy")) and the suffix or ("-ismos", "-isma", from the verbal infinitive suffix -ίζειν, '
    '"-izein"). The first known use of this word was in 1539. Various factions within the French '
    'Revolution labelled opponents as anarchists (as Robespierre did the Hébertists) although few '
    'shared many views of later anarchists. There would be many revolutionaries of the early '
    'nineteenth century who contributed to the anarchist doctrines of the next generation, such as '
    'William Godwin and Wilhelm Weitling, but they did not use the word "anarchist" or "anarchism" '
    'in describing themselves or their beliefs.')
ANARCHISM_SENTENCES = [
    ANARCHISM_PARAGRAPH[:ANARCHISM_PARAGRAPH.index(" The first known")],
    "The first known use of this word was in 1539.",
    "Various factions within the French Revolution labelled opponents as anarchists (as Robespierre "
    "did the Hébertists) although few shared many views of later anarchists.",
    ANARCHISM_PARAGRAPH[ANARCHISM_PARAGRAPH.index("There would be"):],
]


def documents_of(path):
    """The documents of one output file, checking the layout: exactly one blank line between
    documents, none at the start or end, no whitespace around a sentence."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n") and not text.endswith("\n\n") and not text.startswith("\n")
    assert "\n\n\n" not in text
    lines = text[:-1].split("\n")
    assert all(line == line.strip() for line in lines)
    return [block.split("\n") for block in text[:-1].split("\n\n")]


def output_names(out_dir):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "wiki_*.txt"))
                  + glob.glob(os.path.join(out_dir, "manifest.json")))


# ---------------------------------------------------------------------------- split_sentences


def test_split_sentences_english_abbreviations_initials_decimals():
    assert split_sentences(ANARCHISM_PARAGRAPH) == ANARCHISM_SENTENCES
    assert split_sentences(
        "J. R. R. Tolkien wrote it. Mr. Smith paid $3.14 for it, e.g. in the U.S. store. "
        "Dr. Who? Yes! It was c. 1500 (cf. Fig. 3). \"Quoted.\" St. Paul is 2.5 km away.\n"
        "Brown v. Board of Education was decided in 1954. 1954 was a year.") == [
        "J. R. R. Tolkien wrote it.",
        "Mr. Smith paid $3.14 for it, e.g. in the U.S. store.",
        "Dr. Who?", "Yes!", "It was c. 1500 (cf. Fig. 3).", '"Quoted."',
        "St. Paul is 2.5 km away.",
        "Brown v. Board of Education was decided in 1954.", "1954 was a year."]
    # No split before a lower-case word, nor without whitespace after the stop.
    assert split_sentences("The value is approx. three. version 2.0.1 works.") == [
        "The value is approx. three. version 2.0.1 works."]
    assert split_sentences("  ") == [] and split_sentences("No stop at the end") == ["No stop at the end"]


def test_split_sentences_chinese():
    # Reviews from chinese_sentiment/waimai_10k (SophonPlus/ChineseNlpCorpus), rows 49, 1772, 9383.
    assert split_sentences("快递小哥很快就送到了！赞！水煮牛肉肉质鲜嫩，辣的恰到好处，也很入味。不错，挺好吃的！") == [
        "快递小哥很快就送到了！", "赞！", "水煮牛肉肉质鲜嫩，辣的恰到好处，也很入味。", "不错，挺好吃的！"]
    assert split_sentences("首次尝试，挺好的。味道不错，包装新颖；不过量有点少，一个卷好像吃不饱啊……") == [
        "首次尝试，挺好的。", "味道不错，包装新颖；", "不过量有点少，一个卷好像吃不饱啊……"]
    # The closing quote stays with its sentence.
    assert split_sentences("可是电话里的语气：“餐到了！到楼下取！”没有半点礼貌") == [
        "可是电话里的语气：“餐到了！", "到楼下取！”", "没有半点礼貌"]
    assert split_sentences("他说：「今天下雨。」我们没去。。。") == ["他说：「今天下雨。」", "我们没去。。。"]


# ---------------------------------------------------------------------------- clean_extracted


def test_clean_extracted_layout_and_markup():
    extracted = [
        '<doc id="1" url="https://en.wikipedia.org/wiki?curid=1" title="AT&T">\n', "AT&T\n", "\n",
        "AT&amp;T is a company. It is in the U.S.\n", "&lt;onlyinclude&gt;\n", "formula_1\n",
        "History.\n", "Its &lt;doc id=\"9\"&gt; tag is text. The <10 ppm level stays.\n", "\n", "</doc>\n",
        '<doc id="2" url="u" title="List of things">\n', "List of things\n", "\n", "</doc>\n",
        '<doc id="3" url="u" title=""Weird Al" Yankovic">\n', '"Weird Al" Yankovic\n', "\n",
        "Yankovic is a musician.\n", "</doc>\n",
    ]
    assert list(clean_extracted(extracted)) == [
        "AT&T is a company.", "It is in the U.S.", "History.", "Its tag is text.",
        "The <10 ppm level stays.",
        "",                       # the title-only document 2 is dropped: one blank line, not two
        "Yankovic is a musician."]
    assert list(clean_extracted(['<doc id="2" url="u" title="X">\n', "X\n", "</doc>\n"])) == []


# ---------------------------------------------------------------------------- the real excerpt


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    dump = shared_file(*ENWIKI)
    out = str(tmp_path_factory.mktemp("wiki"))
    counts = extract_dump(dump, out)
    return dump, out, counts


def test_extract_real_excerpt(extracted):
    dump, out, counts = extracted
    files = sorted(glob.glob(os.path.join(out, "wiki_*.txt")))
    # WikiExtractor writes 3 files of ~1M from this dump (wikiextractor_check.txt); one output each.
    assert [os.path.basename(p) for p in files] == ["wiki_00.txt", "wiki_01.txt", "wiki_02.txt"]
    assert sorted(os.listdir(out)) == ["manifest.json", "wiki_00.txt", "wiki_01.txt", "wiki_02.txt"]
    documents = [doc for path in files for doc in documents_of(path)]
    sentences = [s for doc in documents for s in doc]

    # 206 pages, 100 of them redirects: WikiExtractor's own count is 106 articles.
    assert counts["articles"] == 106
    # One of them, "List of anthropologists", extracts to its title alone (the list is made of
    # templates and tables that WikiExtractor drops), so 105 documents have text.
    assert counts["documents"] == len(documents) == 105 == counts["articles"] - 1
    assert counts["sentences"] == len(sentences) == 20267
    assert counts["files"] == 3
    assert not any("<doc" in s or "</doc" in s for s in sentences)
    assert not any("&amp;" in s or "&lt;" in s for s in sentences)
    assert "Telecommunications provider AT&T, formerly BellSouth, has a major presence in Alabama " \
           "with several large offices in Birmingham." in sentences

    # The first document is Anarchism, without its title line; the paragraph splits as above.
    anarchism = documents[0]
    assert anarchism[0].startswith("Anarchism is a political philosophy that advocates")
    at = anarchism.index(ANARCHISM_SENTENCES[0])
    assert anarchism[at:at + 4] == ANARCHISM_SENTENCES

    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["dump"] == os.path.basename(dump)
    assert manifest["dump_bytes"] == os.path.getsize(dump)
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["dump_sha256"])
    assert manifest["wikiextractor_version"] == "3.1.0"
    assert {k: manifest[k] for k in counts} == counts
    assert [o["name"] for o in manifest["outputs"]] == ["wiki_00.txt", "wiki_01.txt", "wiki_02.txt"]
    assert sum(o["sentences"] for o in manifest["outputs"]) == counts["sentences"]


def run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "extract_wiki.py"), *args],
                          capture_output=True, text=True, cwd=REPO_ROOT)


def test_cli_matches_library_and_replaces_stale_outputs(extracted, tmp_path):
    dump, out, counts = extracted
    (tmp_path / "wiki_07.txt").write_text("stale\n")        # from an earlier, longer run
    (tmp_path / "manifest.json").write_text("{}")
    done = run_tool("--input_file", dump, "--output_dir", str(tmp_path), "--processes", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"extracted 106 articles, {counts['sentences']} sentences -> {tmp_path}")
    assert "INFO" not in done.stdout + done.stderr          # WikiExtractor's log stays hidden
    assert output_names(tmp_path) == ["manifest.json", "wiki_00.txt", "wiki_01.txt", "wiki_02.txt"]
    for name in ["wiki_00.txt", "wiki_01.txt", "wiki_02.txt"]:
        with open(os.path.join(out, name), "rb") as a, open(tmp_path / name, "rb") as b:
            assert a.read() == b.read(), name
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]   # no work folder left


def test_cli_bad_input_is_one_line(tmp_path):
    missing = str(tmp_path / "enwiki-missing.xml.bz2")
    done = run_tool("--input_file", missing, "--output_dir", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and missing in done.stderr
    assert done.stdout == "" and not os.path.exists(tmp_path / "out")


# ---------------------------------------------------------------------------- bad input


def truncated(tmp_path):
    path = tmp_path / "enwiki-truncated.xml.bz2"
    with open(shared_file(*ENWIKI), "rb") as f:
        path.write_bytes(f.read(100000))
    return str(path)


def not_bz2(tmp_path):
    path = tmp_path / "enwiki-plain-text.xml.bz2"
    path.write_text("<mediawiki>not compressed</mediawiki>\n")
    return str(path)


def redirects_only(tmp_path):
    """The real excerpt's header and three of its redirect pages: a valid dump with no article.
    Named without .bz2, so WikiExtractor is also given it under a name it decompresses."""
    with bz2.open(shared_file(*ENWIKI), "rt", encoding="utf-8") as f:
        xml = f.read()
    header = xml[:xml.index("</siteinfo>") + len("</siteinfo>")]
    redirects = [p for p in re.findall(r"  <page>.*?</page>\n", xml, re.S) if "<redirect" in p][:3]
    path = tmp_path / "enwiki-redirects-only.dump"
    path.write_bytes(bz2.compress((header + "\n" + "".join(redirects) + "</mediawiki>\n").encode()))
    return str(path)


@pytest.mark.parametrize("make, says", [
    (lambda tmp: str(tmp / "enwiki-missing.xml.bz2"), "no such file"),
    (truncated, "truncated bz2"),
    (not_bz2, "not a bz2 file"),
    (lambda tmp: shared_file(*TABLE_MARKUP), "no <siteinfo> header"),
    (redirects_only, "extracted 0 articles"),
], ids=["missing", "truncated", "not-bz2", "table-markup", "redirects-only"])
def test_bad_dump_raises_one_line_and_writes_nothing(tmp_path, make, says):
    dump = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(UserInputError) as err:
        extract_dump(dump, str(out))
    message = str(err.value)
    assert dump in message and says in message and "\n" not in message
    assert not os.path.exists(out) or output_names(out) == [] and os.listdir(out) == []


def test_bad_settings_and_unwritable_out_dir(tmp_path):
    dump = not_bz2(tmp_path)     # settings are checked before the dump is read
    with pytest.raises(UserInputError, match="bytes_per_file '100'"):
        extract_dump(dump, str(tmp_path / "out"), bytes_per_file="100")
    with pytest.raises(UserInputError, match="processes must be"):
        extract_dump(dump, str(tmp_path / "out"), processes=0)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserInputError, match=f"cannot write to the output directory {blocker}/out"):
        extract_dump(truncated(tmp_path), str(blocker / "out"))
