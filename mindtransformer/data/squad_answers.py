"""From start/end logits to answer text, google's run_squad post-processing.

For each question, over all its windows: the `n_best_size` highest start and end logits are
paired; a pair is kept when both ends are paragraph tokens of that window, the start is a token
with its maximum context there, end >= start and the span is at most `max_answer_length` tokens;
score = start logit + end logit. The best distinct texts (up to `n_best_size`) form the n-best
list with softmax probabilities. A span's text is mapped back to the original paragraph
(`final_text`, google's `get_final_text`: the WordPiece text is located in the basic-tokenized
original, and character positions are carried over with spaces ignored, so the answer keeps the
paragraph's case, accents and punctuation; when that fails, the whole original words are used).
SQuAD v2: the null answer's score is the smallest [CLS] start + end logit over the windows, and
"" is predicted when null score - best span score > `null_score_diff_threshold`.

Shape legend: F features, T tokens per feature.
"""

from __future__ import annotations

import collections
from typing import List, Sequence

import numpy as np


def final_text(predicted: str, original: str, tokenizer) -> str:
    """The part of `original` that the (lower-cased, basic-tokenized) `predicted` text covers."""
    tokenized = " ".join(tokenizer.basic_tokenize(original))
    start = tokenized.find(predicted)
    if start == -1:
        return original
    end = start + len(predicted) - 1

    def without_spaces(text):
        kept = [(i, ch) for i, ch in enumerate(text) if ch != " "]
        return "".join(ch for _, ch in kept), {n: i for n, (i, _) in enumerate(kept)}

    original_plain, original_index = without_spaces(original)
    tokenized_plain, tokenized_index = without_spaces(tokenized)
    if len(original_plain) != len(tokenized_plain):
        return original
    plain_of_tokenized = {i: n for n, i in tokenized_index.items()}
    if start not in plain_of_tokenized or end not in plain_of_tokenized:
        return original
    return original[original_index[plain_of_tokenized[start]]:original_index[plain_of_tokenized[end]] + 1]


def _top(logits: np.ndarray, count: int) -> List[int]:
    return [int(i) for i in np.argsort(-logits, kind="stable")[:count]]


def answers(examples: Sequence, features: Sequence, start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
            tokenizer, n_best_size: int = 20, max_answer_length: int = 30, version_2_with_negative: bool = False,
            null_score_diff_threshold: float = 0.0) -> tuple:
    """(predictions {id: text}, n-best {id: [{text, probability, start_logit, end_logit}]},
    null score differences {id: float} (v2 only)); every example gets a prediction."""
    by_example = collections.defaultdict(list)
    for index, feature in enumerate(features):
        by_example[feature.example_index].append(index)
    predictions, nbest_all, null_diff = {}, {}, {}
    for example_index, example in enumerate(examples):
        candidates, null_score = [], None
        for index in by_example.get(example_index, []):
            feature, starts, ends = features[index], start_logits[index], end_logits[index]
            length = len(feature.input_ids)
            if version_2_with_negative:
                score = float(starts[0] + ends[0])
                null_score = score if null_score is None else min(null_score, score)
            for s in _top(starts[:length], n_best_size):
                for e in _top(ends[:length], n_best_size):
                    if s not in feature.token_to_word or e not in feature.token_to_word or e < s:
                        continue
                    if not feature.token_is_max_context.get(s, False) or e - s + 1 > max_answer_length:
                        continue
                    candidates.append((float(starts[s] + ends[e]), index, s, e, float(starts[s]), float(ends[e])))
        candidates.sort(key=lambda c: -c[0])
        nbest, seen = [], set()
        for score, index, s, e, start_logit, end_logit in candidates:
            if len(nbest) >= n_best_size:
                break
            feature = features[index]
            pieces = tokenizer.convert_ids_to_tokens(feature.input_ids[s:e + 1])
            predicted = " ".join(" ".join(pieces).replace(" ##", "").replace("##", "").split())
            first, last = feature.token_to_word[s], feature.token_to_word[e]
            original = example.context[example.word_spans[first][0]:example.word_spans[last][1] + 1]
            text = final_text(predicted, original, tokenizer)
            if text in seen:
                continue
            seen.add(text)
            nbest.append({"text": text, "start_logit": start_logit, "end_logit": end_logit, "score": score})
        if version_2_with_negative and null_score is not None and "" not in seen:
            nbest.append({"text": "", "start_logit": null_score / 2, "end_logit": null_score / 2, "score": null_score})
            nbest.sort(key=lambda n: -n["score"])
        if not nbest:
            nbest = [{"text": "", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0}]
        scores = np.array([n["score"] for n in nbest], dtype=np.float64)
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        for entry, probability in zip(nbest, probabilities):
            entry["probability"] = float(probability)
        best = next((n for n in nbest if n["text"]), None)
        if version_2_with_negative:
            difference = null_score - (best["score"] if best else 0.0) if null_score is not None else 0.0
            null_diff[example.qas_id] = difference
            predictions[example.qas_id] = "" if best is None or difference > null_score_diff_threshold else best["text"]
        else:
            predictions[example.qas_id] = best["text"] if best else ""
        nbest_all[example.qas_id] = [{k: n[k] for k in ("text", "probability", "start_logit", "end_logit")}
                                     for n in nbest]
    return predictions, nbest_all, null_diff
