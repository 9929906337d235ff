"""Multiple-choice questions: CSV layouts, subjects, a seeded split, features for BertForMultipleChoice.

Layouts read (UTF-8, optional byte-order mark):
- `question,A,B,C,D,answer` (MMLU, C-Eval, TMMLU+): option columns named by consecutive letters,
  the answer a letter; a header row, or none (MMLU's own files) when a row has exactly
  question, four options and an answer.
- TMMLU's `,content.A,content.Q`: row index, answer letter, and the question with its options
  embedded in the text (`...？\n(A) ...\n(B) ...`). The options are found from the end: the last
  "(D)", the last "(C)" before it, and so on, so a "(E) coli" inside an option stays text.

A data folder holds one CSV per subject (`<subject>.csv`) or one folder per subject
(`<subject>/data.csv`, TMMLU's tree). Questions that do not have exactly --num_choices options
with an answer among them (essay questions, five-option questions) are skipped and counted by
reason. Without a given split, each subject is cut 70/25/5 (train/validation/test) after a
seeded shuffle, so every subject is in every split it is large enough for.

Shape legend: N questions, C choices, T tokens of one [CLS] question [SEP] option [SEP].
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mindtransformer.errors import UserInputError, closest_name
from mindtransformer.utils import files

LETTERS = "ABCDEFGHIJ"
SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.70, 0.25, 0.05)
_MARK = r"[(（]\s*{}\s*[)）]"  # "(A)" or the full-width "（A）"


@dataclasses.dataclass(frozen=True)
class Question:
    subject: str
    question: str
    options: Tuple[str, ...]
    answer: int        # index into options; -1 when unknown (questions to predict)
    source: str        # "file:line", for messages

    def to_json(self, qid: str) -> dict:
        return {"id": qid, "subject": self.subject, "question": self.question,
                "options": {LETTERS[i]: o for i, o in enumerate(self.options)},
                "answer": LETTERS[self.answer] if self.answer >= 0 else None}


@dataclasses.dataclass
class Dataset:
    questions: List[Question]
    skipped: Dict[str, int]   # reason -> count


# ---- parsing ---------------------------------------------------------------------------------

def split_embedded_options(text: str, num_choices: int) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """(stem, options) of a question whose options "(A) .. (B) .." are in its text, searched from
    the last letter backwards; None when the text has fewer than `num_choices` markers in order or
    a marker for one more option after the last."""
    starts, end = [], len(text)
    for letter in reversed(LETTERS[:num_choices]):
        marks = list(re.finditer(_MARK.format(letter), text[:end]))
        if not marks:
            return None
        starts.insert(0, marks[-1])
        end = marks[-1].start()
    if re.search(_MARK.format(LETTERS[num_choices]), text[starts[-1].end():]):
        return None  # one more option than asked for
    bounds = [m.end() for m in starts]
    pieces = [text[b:(starts[i + 1].start() if i + 1 < len(starts) else len(text))] for i, b in enumerate(bounds)]
    options = tuple(p.strip().rstrip("。.;；").strip() for p in pieces)
    stem = text[:starts[0].start()].strip()
    if not stem or not all(options):
        return None
    return stem, options


def _answer_index(value: str, num_choices: int) -> int:
    value = value.strip().upper()
    return LETTERS.index(value) if len(value) == 1 and value in LETTERS[:num_choices] else -2


def read_csv(path: str, subject: str, num_choices: int = 4) -> Dataset:
    """The questions of one CSV file in either layout (see the module docstring)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    if not rows:
        raise UserInputError(f"{path}: empty file; a multiple-choice CSV has a question, options and an answer per row")
    header = [h.strip() for h in rows[0]]
    letters = list(LETTERS[:num_choices])
    skipped = collections.Counter()
    questions = []
    if header[1:3] == ["content.A", "content.Q"]:  # TMMLU
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise UserInputError(f"{path}:{line}: {len(row)} columns in a TMMLU file (index, content.A, content.Q); "
                                     "quote fields that contain commas")
            parsed = split_embedded_options(row[2], num_choices)
            answer = _answer_index(row[1], num_choices)
            if parsed is None:
                more = split_embedded_options(row[2], num_choices + 1) is not None
                skipped[f"{num_choices + 1} options" if more else "no options in the text (an essay question)"] += 1
            elif answer < 0:
                skipped[f"answer {row[1].strip()!r} not one of {'/'.join(letters)}"] += 1
            else:
                questions.append(Question(subject, parsed[0], parsed[1], answer, f"{path}:{line}"))
        return Dataset(questions, dict(skipped))
    lowered = [h.lower() for h in header]
    if "question" in lowered and "answer" in lowered:
        missing = [c for c in letters if c not in header and c.lower() not in lowered]
        if missing:
            raise UserInputError(f"{path}: header {','.join(header)} has no option column {missing[0]}; the layout is "
                                 f"question,{','.join(letters)},answer (or pass --num_choices)")
        q_col, a_col = lowered.index("question"), lowered.index("answer")
        o_cols = [lowered.index(c.lower()) for c in letters]
        body, first_line = rows[1:], 2
    elif len(header) == num_choices + 2:  # MMLU's files have no header
        q_col, o_cols, a_col = 0, list(range(1, num_choices + 1)), num_choices + 1
        body, first_line = rows, 1
    else:
        raise UserInputError(f"{path}: unknown layout (first row {','.join(header)[:80]}); use a header "
                             f"question,{','.join(letters)},answer or TMMLU's ,content.A,content.Q")
    width = max(q_col, a_col, *o_cols) + 1
    for line, row in enumerate(body, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise UserInputError(f"{path}:{line}: {len(row)} columns, expected {width}; quote fields that contain commas")
        options = tuple(row[c].strip() for c in o_cols)
        answer = _answer_index(row[a_col], num_choices) if row[a_col].strip() else -1
        if answer == -2:
            raise UserInputError(f"{path}:{line}: answer {row[a_col]!r} is not one of {'/'.join(letters)}")
        if not row[q_col].strip() or not all(options):
            skipped["empty question or option"] += 1
            continue
        questions.append(Question(subject, row[q_col].strip(), options, answer, f"{path}:{line}"))
    return Dataset(questions, dict(skipped))


def subject_files(root: str) -> Dict[str, str]:
    """subject -> CSV file: `root` itself (one subject named after the file), `<subject>.csv` files,
    or `<subject>/data.csv` folders."""
    if os.path.isfile(root):
        return {os.path.splitext(os.path.basename(root))[0]: root}
    if not os.path.isdir(root):
        raise UserInputError(f"{root}: no such file or folder; pass a multiple-choice CSV or a folder of subjects")
    if os.path.isdir(os.path.join(root, "subjects")):  # TMMLU's top folder
        root = os.path.join(root, "subjects")
    found = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.endswith(".csv") and os.path.isfile(path):
            found[name[:-len(".csv")]] = path
        elif os.path.isfile(os.path.join(path, "data.csv")):
            found[name] = os.path.join(path, "data.csv")
    if not found:
        raise UserInputError(f"{root}: no <subject>.csv files or <subject>/data.csv folders")
    return found


def read_subjects(root: str, subjects: str = "", num_choices: int = 4) -> Dataset:
    """Every subject's questions under `root`, or only the comma-separated `subjects`."""
    files = subject_files(root)
    wanted = [s.strip() for s in subjects.split(",") if s.strip()] or list(files)
    for name in wanted:
        if name not in files:
            raise UserInputError(f"--subjects: no subject {name!r} in {root}{closest_name(name, files)}; "
                                 f"{len(files)} subjects there, e.g. {', '.join(list(files)[:3])}")
    questions, skipped = [], collections.Counter()
    for name in wanted:
        part = read_csv(files[name], name, num_choices)
        questions += part.questions
        skipped.update(part.skipped)
    return Dataset(questions, dict(skipped))


def split(questions: Sequence[Question], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Dict[str, list]:
    """{train, validation, test}: each subject shuffled with `seed` and cut by `fractions` (the
    validation and test shares rounded, the rest training), in file order within each part."""
    by_subject = collections.defaultdict(list)
    for q in questions:
        by_subject[q.subject].append(q)
    parts = {name: [] for name in SPLITS}
    for subject in sorted(by_subject):
        items = by_subject[subject]
        rng = np.random.default_rng([seed, len(items)])
        order = rng.permutation(len(items))
        n_val, n_test = int(round(fractions[1] * len(items))), int(round(fractions[2] * len(items)))
        cut = {"test": order[:n_test], "validation": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        for name, indices in cut.items():
            parts[name] += [items[i] for i in sorted(indices)]
    return parts


def write_json(questions: Sequence[Question], path: str) -> None:
    """The questions as structured JSON: [{id, subject, question, options: {A: ..}, answer}]."""
    items = [q.to_json(f"{q.subject}-{k}") for k, q in enumerate(questions)]
    files.atomic_write_text(path, json.dumps(items, ensure_ascii=False, indent=1) + "\n")


def read_json(path: str) -> List[Question]:
    """Questions written by write_json (e.g. the test split of a training run)."""
    items = files.read_json(path, "questions JSON written by a training run (test_questions.json)")
    questions = []
    for k, item in enumerate(items if isinstance(items, list) else []):
        try:
            options = tuple(item["options"][letter] for letter in sorted(item["options"]))
            answer = LETTERS.index(item["answer"]) if item.get("answer") else -1
            questions.append(Question(item["subject"], item["question"], options, answer, f"{path}[{k}]"))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserInputError(f"{path}[{k}]: not a question (needs subject, question, options {{A: ..}} and "
                                 "answer); write it with the trainer's test_questions.json layout") from None
    if not questions:
        raise UserInputError(f"{path}: no questions; expected a list of {{subject, question, options, answer}}")
    return questions


# ---- features --------------------------------------------------------------------------------

@dataclasses.dataclass
class ChoiceFeatures:
    """Per question C windows [CLS] question [SEP] option [SEP], unpadded; data/batches.py pads
    them to (B, C, T)."""
    input_ids: List[List[np.ndarray]]    # N lists of C arrays (T_ic,)
    segment_ids: List[List[np.ndarray]]
    labels: np.ndarray                   # (N,) the answer's index, -1 when unknown
    subjects: List[str]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) each question's longest window."""
        return np.asarray([max(len(w) for w in windows) for windows in self.input_ids], dtype=np.int64)

    def targets(self, indices: np.ndarray) -> dict:
        labels = self.labels[indices]
        return {} if np.all(labels < 0) else {"labels": labels}


def featurize(tokenizer, questions: Sequence[Question], max_seq_length: int) -> ChoiceFeatures:
    """Tokenize every (question, option) pair, longest-first truncated to max_seq_length (long
    questions lose their beginning's tail first, options are short)."""
    num_choices = {len(q.options) for q in questions}
    if len(num_choices) > 1:
        raise UserInputError(f"questions with {sorted(num_choices)} options in one set; use one --num_choices")
    c = num_choices.pop() if num_choices else 0
    stems = [q.question for q in questions for _ in q.options]
    options = [o for q in questions for o in q.options]
    ids, segments = tokenizer.encode_unpadded(stems, options, max_seq_length)
    return ChoiceFeatures([ids[i:i + c] for i in range(0, len(ids), c)],
                          [segments[i:i + c] for i in range(0, len(segments), c)],
                          np.asarray([q.answer for q in questions], dtype=np.int64), [q.subject for q in questions])


def accuracy_by_subject(subjects: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """{"overall": ..., subject: ...}: the share of questions answered right (micro average overall)."""
    right = np.asarray(predictions) == np.asarray(labels)
    out = {"overall": float(right.mean()) if len(right) else float("nan")}
    for subject in sorted(set(subjects)):
        mine = np.asarray([s == subject for s in subjects])
        out[subject] = float(right[mine].mean())
    return out

