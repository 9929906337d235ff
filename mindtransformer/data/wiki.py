"""Wikipedia dump -> pretraining text: one sentence per line, a blank line between documents.

The layout is google's create_pretraining_data input, which `read_documents` reads:

    python tools/extract_wiki.py --input_file enwiki-latest-pages-articles.xml.bz2 --output_dir wiki/
    python tools/create_pretraining_data.py --input_file "wiki/wiki_*.txt" ...

WikiExtractor turns wiki markup into plain text; this module checks the dump first (so a bad
download fails with our one-line error rather than a worker traceback or, worse, a silent empty
output), runs WikiExtractor in a subprocess, and cleans its `<doc>` output into sentences.
"""

import bz2
import contextlib
import hashlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

from mindtransformer.errors import UserInputError
from mindtransformer.utils.files import atomic_path, atomic_write_text

# ----------------------------------------------------------------------------------------------
# Sentence splitting
#
# A small regex splitter rather than nltk's punkt: punkt needs a separate model download
# (nltk.download("punkt")), which the offline training machines cannot do, and for pretraining
# text the rules below get the common cases right. Known trade-offs, both in the safe direction
# (two sentences kept together, never one sentence cut in two): a sentence that ends in an
# initial or a dotted acronym ("... vitamin C. It", "... in the U.S. The") is not split.

# English candidates: a run of terminal punctuation with any closing quotes/brackets, followed by
# whitespace; `_starts_sentence` then checks what follows. "3.14" and "e.g.," never match (no
# whitespace right after the dot, or a comma in between).
# CJK: split right after 。！？； (no space is written between CJK sentences), keeping any closing
# quote or bracket that follows (。」 ？” ！）) with the sentence.
_END = re.compile(r"(?P<cjk>[。！？；]+[」』”’）)】》〉\"']*)|(?P<en>[.!?]+[\"'”’)\]]*)(?=\s)")
_OPENERS = "\"'“‘([«"
# Words that take a period and are usually followed by a capital or a number mid-sentence.
# Dotted forms (e.g., i.e., U.S., a.m.) and single initials (J. R. R. Tolkien) are caught by the
# rules in _is_abbreviation, not listed here. "etc." and "Inc." are left out on purpose: they end
# sentences as often as not.
_ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof st mt jr sr rev hon gen col lt capt sgt gov sen rep pres
    v vs cf ca c approx fig figs vol vols p pp ed eds op no nos
    jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")     # "e.g", "U.S", "a.m": the token before the final dot


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the "." at text[dot] ends an abbreviation or an initial rather than a sentence."""
    token = re.search(r"\S*$", text[:dot]).group().lstrip(_OPENERS)
    if len(token) == 1 and token.isupper():          # an initial: "J. R. R. Tolkien"
        return True
    return token.lower() in _ABBREVIATIONS or bool(_DOTTED.fullmatch(token))


def _starts_sentence(text: str, pos: int) -> bool:
    """Whether the text after the whitespace at `pos` can start a sentence."""
    rest = text[pos:].lstrip()
    return bool(rest) and (rest[0].isupper() or rest[0].isdigit() or rest[0] in _OPENERS)


def split_sentences(paragraph: str) -> List[str]:
    """Split a paragraph into sentences (English . ! ? and CJK 。！？；), punctuation kept."""
    sentences, start = [], 0
    for m in _END.finditer(paragraph):
        if m.group("en"):
            punct = m.group("en").rstrip("\"'”’)]")
            if not _starts_sentence(paragraph, m.end()):
                continue
            if punct == "." and _is_abbreviation(paragraph, m.start()):
                continue
        sentences.append(paragraph[start:m.end()])
        start = m.end()
    sentences.append(paragraph[start:])
    return [s.strip() for s in sentences if s.strip()]


# ----------------------------------------------------------------------------------------------
# Cleaning WikiExtractor's <doc> output

# `<doc id=".." url=".." title="..">`. WikiExtractor does not escape the title, so a title with a
# quote in it ("Weird Al" Yankovic) is matched greedily up to the closing `">`.
_DOC_OPEN = re.compile(r'^\s*<doc\b[^>]*?\btitle="(?P<title>.*)">\s*$')
_DOC_CLOSE = re.compile(r"^\s*</doc>\s*$")
# Leftover tags (WikiExtractor passes some through, HTML-escaped: "&lt;onlyinclude&gt;"), and any
# doc-tag-looking text, closed or not, so that no "<doc" can reach the output and be mistaken
# for a document boundary downstream. "<10 ppm" is not a tag (a tag name starts with a letter).
_TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>|</?doc\b[^>]*", re.IGNORECASE)
# WikiExtractor's placeholders for <math> and <code> spans; alone on a line they are markup only.
_PLACEHOLDER = re.compile(r"\b(?:formula|codice)_\d+\b")
_WORD = re.compile(r"[^\W_]")   # a letter or digit in any script


def _clean_line(line: str) -> str:
    """Plain text of one extracted line, or "" when nothing but markup is left."""
    # WikiExtractor writes & < > as &amp; &lt; &gt; (html.escape); pretraining wants the text.
    text = _TAG.sub(" ", html.unescape(line)).strip()
    if not _WORD.search(_PLACEHOLDER.sub("", text)):
        return ""
    return " ".join(text.split())


def clean_extracted(lines: Iterable[str]) -> Iterator[str]:
    """WikiExtractor `<doc>` output -> one sentence per line, exactly one "" between documents.

    Drops the doc tags, the title line that repeats the doc's title, empty and markup-only lines;
    documents left with no sentence (redirect-like stubs, title-only lists) are dropped whole.
    """
    emitted_any = False      # a document has been written: the next one is preceded by ""
    in_document = False      # the current document has yielded a sentence
    title = None             # the title the first text line may repeat, until that line is seen
    for raw in lines:
        opened = _DOC_OPEN.match(raw)
        if opened or _DOC_CLOSE.match(raw):
            in_document = False
            title = html.unescape(opened.group("title")).strip() if opened else None
            continue
        text = _clean_line(raw)
        if not text:
            continue
        if title is not None:
            repeated, title = text == title, None
            if repeated:
                continue
        for sentence in split_sentences(text):
            if not in_document:
                if emitted_any:
                    yield ""
                in_document = emitted_any = True
            yield sentence


# ----------------------------------------------------------------------------------------------
# Dump extraction

_SIZE = re.compile(r"(?P<n>\d+)(?P<unit>[KMG])", re.IGNORECASE)
_MIN_BYTES = 200 * 1024    # WikiExtractor's minFileSize: below it, it logs an error and exits 0
_CHUNK = 1 << 20


class _HashingReader:
    """A raw file that hashes every byte read through it (one pass: sha256 and bz2 check)."""

    def __init__(self, f):
        self.f, self.sha256, self.bytes_read = f, hashlib.sha256(), 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.sha256.update(data)
        self.bytes_read += len(data)
        return data


def _check_file(path: str) -> None:
    """The cheap checks: the dump exists, is a file and starts like bz2."""
    if not os.path.exists(path):
        raise UserInputError(f"{path}: no such file; pass the path of a Wikipedia pages-articles "
                             ".xml.bz2 dump (from dumps.wikimedia.org)")
    if not os.path.isfile(path):
        raise UserInputError(f"{path} is not a file; pass the path of a pages-articles .xml.bz2 dump")
    with open(path, "rb") as raw:
        magic = raw.read(3)
    if magic != b"BZh":
        # WikiExtractor picks its decompressor by the name, so it would read these bytes as XML.
        raise UserInputError(f"{path} is not a bz2 file (it does not start with 'BZh'); pass the "
                             "pages-articles .xml.bz2 dump as downloaded, or bzip2 an .xml dump first")


def check_dump(path: str, progress: Optional[Callable[[str], None]] = None) -> str:
    """Stream through the bz2 dump; return its sha256. Raise UserInputError when it is missing,
    not bz2, corrupt, truncated, or has no <siteinfo> header."""
    _check_file(path)
    size = os.path.getsize(path)
    if progress:
        progress(f"checking the bz2 stream of {path} ({size / 1e6:.1f} MB)")
    # Without </siteinfo>, WikiExtractor's header scan reads the whole file looking for it and
    # leaves no page to extract: 0 articles, exit status 0. Look for it while streaming.
    marker, tail, has_siteinfo = b"</siteinfo>", b"", False
    with open(path, "rb") as raw:
        reader = _HashingReader(raw)
        try:
            with bz2.open(reader, "rb") as stream:
                for chunk in iter(lambda: stream.read(_CHUNK), b""):
                    if not has_siteinfo:
                        has_siteinfo = marker in tail + chunk
                        tail = chunk[-len(marker):]
        except EOFError:
            raise UserInputError(f"{path} is a truncated bz2 file: its compressed stream ends early "
                                 f"(after {size} bytes); download it again and check its checksum "
                                 "against the one published beside it") from None
        except OSError as err:
            raise UserInputError(f"{path} is a corrupt bz2 file ({err} near compressed byte "
                                 f"{reader.bytes_read}); download it again") from None
        while reader.read(_CHUNK):   # bytes after the last bz2 stream (ignored by bz2, as here)
            pass
    if not has_siteinfo:
        raise UserInputError(f"{path} has no <siteinfo> header, so it is not a complete MediaWiki "
                             "XML dump and WikiExtractor extracts 0 articles from it; pass a whole "
                             "pages-articles .xml.bz2 dump, not a fragment")
    return reader.sha256.hexdigest()


def _check_bytes_per_file(bytes_per_file: str) -> None:
    m = _SIZE.fullmatch(str(bytes_per_file).strip())
    if not m or int(m["n"]) * 1024 ** ("KMG".index(m["unit"].upper()) + 1) < _MIN_BYTES:
        # WikiExtractor reads "100" as 10 bytes and exits 0 without output for sizes below 200K.
        raise UserInputError(f"bytes_per_file {bytes_per_file!r} is not a size of at least 200K; "
                             "give a number with a unit K, M or G, e.g. 1M")


def _writable_dir(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise UserInputError(f"cannot write to the output directory {out_dir} "
                             f"({err.strerror or err}); choose a writable directory") from None


def _wikiextractor_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("wikiextractor")
    except metadata.PackageNotFoundError:
        raise UserInputError("wikiextractor is not installed; pip install wikiextractor==3.1.0") from None


def _run_wikiextractor(dump: str, work: str, processes: int, bytes_per_file: str) -> Tuple[List[str], int]:
    """The extracted files in WikiExtractor's order (AA/wiki_00, ..., AB/wiki_00), and the number
    of articles it reports having written."""
    extracted = os.path.join(work, "extracted")
    if not dump.endswith(".bz2"):
        # WikiExtractor chooses bz2 by the extension; the content was checked to be bz2.
        link = os.path.join(work, "dump.xml.bz2")
        os.symlink(os.path.abspath(dump), link)
        dump = link
    command = [sys.executable, "-m", "wikiextractor.WikiExtractor", "-o", extracted,
               "-b", bytes_per_file, "--processes", str(processes), dump]
    # Its INFO lines go to a log file (a full dump's run is long; no pipe to fill), shown on failure.
    log_path = os.path.join(work, "wikiextractor.log")
    with open(log_path, "w+", encoding="utf-8", errors="replace") as log:
        # Its own session, so that an interrupt here can end its worker processes too (they are
        # forked; killing the parent alone would orphan them).
        with subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True) as process:
            try:
                status = process.wait()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                raise
        log.seek(0)
        text = log.read()
    # The reducer process logs how it ended; the exit status alone is 0 even when it did not.
    clean = re.search(r"REDUCER_EXIT clean: wrote (\d+) article", text)
    if status != 0 or not clean:
        sys.stderr.write(text[-20000:])
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise RuntimeError(f"WikiExtractor failed on {dump} (exit status {status}): {last}; "
                           "its log is above")
    files = []
    for root, dirs, names in os.walk(extracted):
        dirs.sort()
        files += [os.path.join(root, n) for n in sorted(names) if n.startswith("wiki_")]
    return files, int(clean.group(1))


class _Counter:
    """Counts `<doc>` headers in the lines passing through it."""

    def __init__(self):
        self.articles = 0

    def __call__(self, lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            if _DOC_OPEN.match(line):
                self.articles += 1
            yield line


def extract_dump(dump_path: str, out_dir: str, processes: int = 1, bytes_per_file: str = "1M", *,
                 progress: Optional[Callable[[str], None]] = None) -> dict:
    """Extract a Wikipedia .xml.bz2 dump into `out_dir/wiki_NN.txt` (one sentence per line, a
    blank line between documents) and `out_dir/manifest.json`; return the counts
    {"articles", "documents", "sentences", "files"}.

    One output file per WikiExtractor output file (about `bytes_per_file` each): documents never
    span files, and the files are the natural unit for parallel create_pretraining_data runs.
    Every file is written atomically and the manifest last (after the previous one is removed),
    so a directory without a manifest is an unfinished run.
    `progress`, when given, receives a line at each stage.
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise UserInputError(f"processes must be a whole number >= 1, got {processes!r}")
    _check_bytes_per_file(bytes_per_file)
    _check_file(dump_path)           # before out_dir is made; the full stream check comes later
    _writable_dir(out_dir)
    version = _wikiextractor_version()
    sha256 = check_dump(dump_path, progress)
    say = progress or (lambda message: None)

    # WikiExtractor's own output goes beside ours, not to /tmp: a whole enwiki extracts to tens
    # of GB and /tmp is often small. The hidden folder is removed whatever happens.
    work = tempfile.mkdtemp(prefix=".wikiextractor.", dir=out_dir)
    try:
        say(f"running WikiExtractor {version} with {processes} process(es)")
        extracted, articles = _run_wikiextractor(dump_path, work, processes, bytes_per_file)
        if articles == 0:
            raise UserInputError(f"{dump_path}: WikiExtractor extracted 0 articles from it (it has no "
                                 "main-namespace page that is not a redirect); pass a pages-articles dump")
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, "manifest.json"))
        say(f"cleaning {len(extracted)} extracted file(s) into sentences")
        width = max(2, len(str(len(extracted) - 1)))
        counter, outputs = _Counter(), []
        for path in extracted:
            name = f"wiki_{len(outputs):0{width}d}.txt"
            try:
                outputs.append({"name": name, **_write_cleaned(counter(_lines(path)), os.path.join(out_dir, name))})
            except _NoSentences:
                pass
        if counter.articles != articles:
            raise RuntimeError(f"WikiExtractor reported {articles} articles but its files hold "
                               f"{counter.articles} <doc> headers")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Outputs of an earlier, longer run into the same folder would otherwise pass for ours.
    written = {o["name"] for o in outputs}
    for stale in os.listdir(out_dir):
        if re.fullmatch(r"wiki_\d+\.txt", stale) and stale not in written:
            os.remove(os.path.join(out_dir, stale))
    counts = {"articles": articles,
              "documents": sum(o["documents"] for o in outputs),
              "sentences": sum(o["sentences"] for o in outputs),
              "files": len(outputs)}
    manifest = {**counts, "dump": os.path.basename(dump_path), "dump_bytes": os.path.getsize(dump_path),
                "dump_sha256": sha256, "wikiextractor_version": version, "outputs": outputs}
    atomic_write_text(os.path.join(out_dir, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
    return counts


class _NoSentences(Exception):
    pass


def _lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        yield from f


def _write_cleaned(lines: Iterable[str], path: str) -> dict:
    """Clean extracted lines into `path` (atomically); raise _NoSentences, leaving no file, when
    none of its articles has text."""
    documents = sentences = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as dst:
            for line in clean_extracted(lines):
                dst.write(line + "\n")
                if line:
                    documents += sentences == 0
                    sentences += 1
                else:
                    documents += 1
        if sentences == 0:
            raise _NoSentences(path)
    return {"documents": documents, "sentences": sentences}
