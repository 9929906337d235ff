"""SQuAD features as records (the MindSpore BERT zoo's squad schema) and the maps to score them.

Records: `input_ids`, `input_mask`, `segment_ids` (int64, padded to T), `start_positions`,
`end_positions` (the answer's token span; 0, 0 for a window without it and for evaluation
features), `unique_ids` (the feature's number) and `is_impossible`, in TFRecord or MindRecord
(data/records.py). Training needs only these. Evaluation also needs what turns logits back into
answer text and scores it, so an evaluation file `F` gets `F.maps.json`: the examples (id,
question, context, gold answers) and, per feature, its example, window and token -> word and
max-context maps. `read_eval` rebuilds from both exactly the examples and features that
`squad.featurize` makes from the JSON.

Shape legend: N features, T max_seq_length.
"""

from __future__ import annotations

import json
from typing import List, Sequence, Tuple

import numpy as np

from mindtransformer.data import records
from mindtransformer.data.squad import Example, Feature, SpanFeatures, split_words
from mindtransformer.errors import UserInputError
from mindtransformer.utils.files import atomic_write_text

MAPS_SUFFIX = ".maps.json"


def record_lengths(max_seq_length: int) -> dict:
    """name -> (dtype, length) of the squad records."""
    return {"input_ids": ("int64", max_seq_length), "input_mask": ("int64", max_seq_length),
            "segment_ids": ("int64", max_seq_length), "start_positions": ("int64", 1), "end_positions": ("int64", 1),
            "unique_ids": ("int64", 1), "is_impossible": ("int64", 1)}


def write_records(features: Sequence[Feature], path: str, output_format: str, max_seq_length: int, extra: dict,
                  examples: Sequence[Example] = None) -> None:
    """Features into one record file and its manifest; with `examples`, also the maps for evaluation."""
    n = len(features)
    ids, segments = np.zeros((n, max_seq_length), np.int64), np.zeros((n, max_seq_length), np.int64)
    mask = np.zeros_like(ids)
    for row, feature in enumerate(features):
        length = len(feature.input_ids)
        ids[row, :length], segments[row, :length], mask[row, :length] = feature.input_ids, feature.segment_ids, 1
    column = lambda values: np.asarray(values, dtype=np.int64).reshape(-1, 1)  # noqa: E731
    arrays = {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
              "start_positions": column([f.start_position for f in features]),
              "end_positions": column([f.end_position for f in features]),
              "unique_ids": column(range(n)),
              "is_impossible": column([f.start_position == 0 and f.end_position == 0 for f in features])}
    if examples is not None:  # the maps first: a data file without them must not look complete
        write_maps(path + MAPS_SUFFIX, examples, features)
    records.write_file(path, output_format, arrays, record_lengths(max_seq_length), extra)


def write_maps(path: str, examples: Sequence[Example], features: Sequence[Feature]) -> None:
    maps = {"examples": [{"id": e.qas_id, "question": e.question, "context": e.context, "answers": e.answers,
                          "is_impossible": e.is_impossible} for e in examples],
            "features": [_feature_map(f) for f in features]}
    atomic_write_text(path, json.dumps(maps, ensure_ascii=False) + "\n")


def _feature_map(feature: Feature) -> dict:
    # The paragraph tokens are consecutive positions from `offset`: store their words and flags as lists.
    offset = min(feature.token_to_word)
    positions = range(offset, offset + len(feature.token_to_word))
    return {"example": feature.example_index, "window": feature.window, "window_start": feature.window_start,
            "offset": offset, "words": [feature.token_to_word[p] for p in positions],
            "max_context": [int(feature.token_is_max_context[p]) for p in positions]}


def read_train(files: Sequence[str]) -> SpanFeatures:
    """Training features from squad record files (padding trimmed by input_mask)."""
    features = []
    for path in files:
        for record in records.iter_records(path, dtypes=_dtypes()):
            n = int(record["input_mask"].sum())
            features.append(Feature(-1, 0, 0, record["input_ids"][:n].tolist(), record["segment_ids"][:n].tolist(),
                                    {}, {}, int(record["start_positions"][0]), int(record["end_positions"][0])))
    if not features:
        raise UserInputError(f"{', '.join(files)}: no records; make them with "
                             "examples/generate_mindrecord/generate_squad_mindrecord.py")
    return SpanFeatures(features, is_training=True)


def read_eval(path: str) -> Tuple[List[Example], List[Feature]]:
    """(examples, features) of an evaluation record file and its maps."""
    maps_path = path + MAPS_SUFFIX
    try:
        with open(maps_path, encoding="utf-8") as f:
            maps = json.load(f)
        examples = [_example(e) for e in maps["examples"]]
        feature_maps = maps["features"]
    except FileNotFoundError:
        raise UserInputError(f"{maps_path}: missing; an evaluation record file needs the maps written beside it by "
                             "generate_squad_mindrecord.py (or evaluate from the SQuAD JSON)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserInputError(f"{maps_path}: damaged maps ({err}); make the records again") from None
    rows = list(records.iter_records(path, dtypes=_dtypes()))
    if len(rows) != len(feature_maps):
        raise UserInputError(f"{path}: {len(rows)} records but {len(feature_maps)} feature maps in {maps_path}; "
                             "the two files come from different runs: make them again")
    features = []
    for record, m in zip(rows, feature_maps):
        n = int(record["input_mask"].sum())
        positions = range(m["offset"], m["offset"] + len(m["words"]))
        features.append(Feature(m["example"], m["window"], m["window_start"], record["input_ids"][:n].tolist(),
                                record["segment_ids"][:n].tolist(), dict(zip(positions, m["words"])),
                                dict(zip(positions, map(bool, m["max_context"])))))
    return examples, features


def _example(entry: dict) -> Example:
    words, word_of_char, spans = split_words(entry["context"])
    return Example(entry["id"], entry["question"], entry["context"], words, word_of_char, spans, entry["answers"],
                   is_impossible=entry["is_impossible"])


def _dtypes() -> dict:
    return {name: dtype for name, (dtype, _) in record_lengths(1).items()}
