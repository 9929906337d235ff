#!/usr/bin/env python
"""Wikipedia .xml.bz2 dump -> pretraining text: DIR/wiki_NN.txt, one sentence per line, a blank
line between documents, and DIR/manifest.json (counts, the dump's sha256, wikiextractor version).

    python tools/extract_wiki.py --input_file enwiki-latest-pages-articles.xml.bz2 --output_dir wiki/

The output is the input of tools/create_pretraining_data.py (see mindtransformer/data/wiki.py).
"""

import sys
import time

from mindtransformer.data.wiki import extract_dump
from mindtransformer.utils.cli import StrictParser, run_main


def build_parser() -> StrictParser:
    p = StrictParser(prog="extract_wiki.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--input_file", required=True,
                   help="a Wikipedia pages-articles dump, .xml.bz2 as published on dumps.wikimedia.org")
    p.add_argument("--output_dir", required=True,
                   help="folder for wiki_NN.txt and manifest.json (made if missing; earlier outputs there are replaced)")
    p.add_argument("--processes", type=int, default=1,
                   help="WikiExtractor worker processes")
    p.add_argument("--bytes_per_file", default="1M",
                   help="size of each output file before cleaning, with a unit K, M or G (at least 200K)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final summary line, not the stage lines on stderr")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    counts = extract_dump(args.input_file, args.output_dir, processes=args.processes,
                          bytes_per_file=args.bytes_per_file, progress=progress)
    print(f"extracted {counts['articles']} articles, {counts['sentences']} sentences -> {args.output_dir} "
          f"({counts['documents']} documents with text in {counts['files']} files, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
