"""Look inside pretraining records: print decoded instances, or validate a whole file.

The original suite's `vis_tfrecord_or_mindrecord.py --file_name F --vis_option vis_tfrecord`,
plus `--validate`, which checks every record against google's conventions and prints counts:

    python tools/vis_tfrecord_or_mindrecord.py --file_name out/wiki.tfrecord --vis_option vis_tfrecord \\
        --vocab_file vocab.txt --validate
"""

from __future__ import annotations

import collections
import os

import numpy as np

from mindtransformer.data import records
from mindtransformer.errors import UserInputError
from mindtransformer.utils.cli import StrictParser

VIS_OPTIONS = {"vis_tfrecord": "tfrecord", "vis_mindrecord": "mindrecord"}


def build_parser() -> StrictParser:
    p = StrictParser(prog="vis_tfrecord_or_mindrecord.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--file_name", required=True, help="the record file to read")
    p.add_argument("--vis_option", choices=sorted(VIS_OPTIONS), default=None,
                   help="the container (default: MindRecord when F.db lies beside F, else TFRecord)")
    p.add_argument("--vocab_file", default=None,
                   help="vocab.txt to decode tokens with (default: the one named in the file's manifest)")
    p.add_argument("--num_records", type=int, default=3, help="records to print (0: none)")
    p.add_argument("--validate", action="store_true",
                   help="check every record (types, shapes, masks, weights, NSP labels) and print counts; "
                        "exit 1 on any violation")
    return p


def describe(record: dict, tokenizer) -> str:
    """A readable rendering of one instance: tokens (masked ones as [MASK->original]), labels."""
    length = int(record["input_mask"].sum())
    tokens = tokenizer.convert_ids_to_tokens(record["input_ids"][:length])
    weights = record["masked_lm_weights"]
    originals = dict(zip(record["masked_lm_positions"][weights > 0].tolist(),
                         tokenizer.convert_ids_to_tokens(record["masked_lm_ids"][weights > 0])))
    shown = [f"{t}->{originals[i]}" if i in originals else t for i, t in enumerate(tokens)]
    return (f"tokens ({length}): {' '.join(shown)}\n"
            f"segment_ids: {''.join(str(int(s)) for s in record['segment_ids'][:length])}\n"
            f"masked: {len(originals)} at {sorted(originals)}\n"
            f"next_sentence_labels: {int(record['next_sentence_labels'][0])} "
            f"({'random next' if record['next_sentence_labels'][0] else 'actual next'})")


class Validator:
    """Checks records one by one against google's conventions; collects counts and violations."""

    def __init__(self, tokenizer, lengths=None):
        self.cls, self.sep, self.mask = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
        self.lengths = lengths  # name -> (dtype, length) from the manifest, or None: taken from record 0
        self.counts = collections.Counter()
        self.violations = collections.Counter()
        self.first_violation = {}

    def _fail(self, index: int, what: str):
        self.violations[what] += 1
        self.first_violation.setdefault(what, index)

    def check(self, index: int, r: dict) -> None:
        if self.lengths is None:
            self.lengths = records.record_lengths(r)
        for name, (dtype, length) in self.lengths.items():
            if r[name].dtype != np.dtype(dtype) or r[name].shape != (length,):
                self._fail(index, f"{name} is not {dtype}[{length}]")
                return
        ids, mask, segments = r["input_ids"], r["input_mask"], r["segment_ids"]
        weights, positions, labels = r["masked_lm_weights"], r["masked_lm_positions"], r["masked_lm_ids"]
        k = int((weights > 0).sum())
        # The layout is checked on the original tokens: google's 10 % random replacement draws from
        # the whole vocab, so a masked position may show [SEP] or [CLS] (about 1 record in 17,000).
        original = ids.copy()
        inside = (positions[:k] >= 0) & (positions[:k] < len(ids))
        original[positions[:k][inside]] = labels[:k][inside]
        n = int(mask.sum())
        seps = np.flatnonzero(original[:n] == self.sep)
        if not (mask[:n] == 1).all() or (mask[n:] != 0).any():
            self._fail(index, "input_mask is not ones then zeros")
        if n < 5 or original[0] != self.cls or len(seps) != 2 or seps[-1] != n - 1:
            self._fail(index, "input_ids is not [CLS] A [SEP] B [SEP]")
            return
        if (ids[n:] != 0).any() or (segments[n:] != 0).any():
            self._fail(index, "padding is not zero")
        first_b = seps[0] + 1
        if (segments[:first_b] != 0).any() or (segments[first_b:n] != 1).any():
            self._fail(index, "segment_ids are not 0 for [CLS] A [SEP] and 1 for B [SEP]")
        if not ((weights[:k] == 1.0).all() and (weights[k:] == 0.0).all()):
            self._fail(index, "masked_lm_weights are not ones then zeros")
        if (positions[k:] != 0).any() or (labels[k:] != 0).any():
            self._fail(index, "masked_lm_positions/ids are not zero where the weight is zero")
        used = positions[:k]
        if k and ((np.diff(used) <= 0).any() or used[0] < 1 or used[-1] >= n):
            self._fail(index, "masked_lm_positions are not increasing positions inside the sequence")
        elif k and ((labels[:k] == self.sep) | (labels[:k] == self.cls)).any():
            # (the input at a masked position may show any vocab id, [CLS] included: google's
            # 10 % random replacement draws from the whole vocab)
            self._fail(index, "a [CLS] or [SEP] position is masked")
        if k == 0:
            self._fail(index, "no masked position")
        label = int(r["next_sentence_labels"][0])
        if label not in (0, 1):
            self._fail(index, "next_sentence_labels is not 0 (actual next) or 1 (random next)")
        shown = ids[used]
        self.counts.update({"records": 1, "tokens": n, "masked": k, "random_next": label,
                            "masked_as_mask": int((shown == self.mask).sum()),
                            "masked_kept": int((shown == labels[:k]).sum())})

    def report(self) -> str:
        c = self.counts
        if not c["records"]:
            return "0 records"
        masked = max(c["masked"], 1)
        lines = [f"{c['records']} records, {c['tokens']} tokens, {c['masked']} masked "
                 f"({c['masked'] / max(c['tokens'], 1):.2%} of tokens; {c['masked_as_mask'] / masked:.1%} [MASK], "
                 f"{c['masked_kept'] / masked:.1%} unchanged, "
                 f"{(c['masked'] - c['masked_as_mask'] - c['masked_kept']) / masked:.1%} random), "
                 f"next_sentence_labels 1 (random next): {c['random_next'] / c['records']:.1%}"]
        lines += [f"VIOLATION {what}: {count} records (first: record {self.first_violation[what]})"
                  for what, count in sorted(self.violations.items())]
        lines.append("valid" if not self.violations else f"INVALID: {sum(self.violations.values())} violations")
        return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from mindtransformer.data.tokenization import BertTokenizer

    path = args.file_name
    if not os.path.isfile(path):
        raise UserInputError(f"--file_name={path}: no such record file")
    manifest = None
    if os.path.isfile(records.manifest_path(path)):
        manifest = records.read_manifest(path)
    vocab_file = args.vocab_file or (manifest or {}).get("vocab_file")
    if not vocab_file:
        raise UserInputError(f"{path}: no manifest names its vocab; pass --vocab_file")
    tokenizer = BertTokenizer(vocab_file)
    lengths = records.file_lengths(path) if manifest else None  # else: from record 0, while validating
    output_format = VIS_OPTIONS[args.vis_option] if args.vis_option else records.detect_format(path)
    validator = Validator(tokenizer, lengths)
    stream = records.iter_records(path, output_format)
    if args.validate:
        stream = tqdm(stream, desc="validating", unit=" rec", total=(manifest or {}).get("count"))
    for index, record in enumerate(stream):
        if index < args.num_records:
            print(f"== record {index}\n{describe(record, tokenizer)}")
        if not args.validate and index + 1 >= args.num_records:
            break
        if args.validate:
            validator.check(index, record)
    if args.validate:
        print(validator.report())
        expected = (manifest or {}).get("count")
        if expected is not None and expected != validator.counts["records"]:
            print(f"INVALID: the manifest says {expected} records, the file holds {validator.counts['records']}")
            return 1
        return 1 if validator.violations else 0
    return 0
