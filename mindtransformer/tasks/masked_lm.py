"""A masked language model at inference: fill in [MASK]s, and score the options of a question.

Loaded from an HF folder (a pretraining or masked-LM checkpoint), a MindSpore .ckpt beside its
config.json, or a trainer checkpoint; a checkpoint without the MLM head's own weights
(`cls.predictions.transform.*`, `cls.predictions.bias`) is an error, never random output.

- `fill(text, top_k)`: HF's fill-mask pipeline semantics: one forward pass; for each [MASK],
  softmax over the vocabulary at its position and the top k tokens with their probabilities
  and the text with that token put in (with several masks the text keeps its special tokens).
- `option_scores(question, options)`: zero-shot multiple choice. Each option's tokens are
  masked together in [CLS] question [SEP] option [SEP] and the option is scored by the mean
  log-probability of its own tokens at those positions (length-normalised, so that a long
  option is not penalised for its length). The question keeps its last tokens when too long.

Shape legend: B windows, T tokens, V vocabulary, K top k.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from mindtransformer.errors import UserInputError

MLM_HEAD = "masked-LM head (cls.predictions.*)"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class MaskedLanguageModel:
    def __init__(self, model, tokenizer, backend: str = "torch", max_seq_length: int = 512):
        if tokenizer.mask_token_id is None:
            raise UserInputError(f"{tokenizer.vocab_file}: the vocabulary has no [MASK] token; a masked LM needs one")
        self.model, self.tokenizer, self.backend = model, tokenizer, backend
        self.max_seq_length = min(max_seq_length, model.config.max_position_embeddings)

    @classmethod
    def load(cls, path: str, backend: str = "torch", cpu: bool = False, vocab_file_path: str = "",
             config=None) -> "MaskedLanguageModel":
        from mindtransformer.tasks.checkpoint import load_fine_tuned, pick_device, tokenizer_for

        model = load_fine_tuned(path, "masked_lm", backend, config=config, what=MLM_HEAD,
                                fix="pass a pretraining or masked-LM checkpoint (a short MLM fine-tune makes one: "
                                    "--auto_model=bert on records of your text)")
        if backend == "torch":
            model.to(pick_device(cpu))
        return cls(model, tokenizer_for(model, vocab_file_path), backend)

    def logits(self, batch: dict) -> np.ndarray:
        from mindtransformer.backends import get_backend

        return get_backend(self.backend).infer(self.model, batch)["logits"]  # (B, T, V)

    def encode(self, text: str) -> np.ndarray:
        """[CLS] text [SEP] ids (T,), truncated to the model's length."""
        ids, _ = self.tokenizer.encode_unpadded([text], None, self.max_seq_length)
        return ids[0].astype(np.int64)

    def fill(self, text: str, top_k: int = 5) -> List[List[dict]]:
        """For each [MASK] in `text`, the top_k [{score, token, token_str, sequence}] (HF's layout)."""
        ids = self.encode(text)
        masked = np.flatnonzero(ids == self.tokenizer.mask_token_id)
        if not len(masked):
            raise UserInputError(f"no [MASK] in {text!r}; write [MASK] where a word should be filled in")
        batch = {"input_ids": ids[None], "attention_mask": np.ones_like(ids)[None],
                 "token_type_ids": np.zeros_like(ids)[None]}
        logits = self.logits(batch)[0, masked].astype(np.float64)  # (masks, V)
        probabilities = np.exp(log_softmax(logits))
        top_k = min(top_k, probabilities.shape[1])
        single = len(masked) == 1
        answers = []
        for row, position in zip(probabilities, masked):
            best = np.argsort(-row, kind="stable")[:top_k]
            proposals = []
            for token in best:
                filled = ids.copy()
                filled[position] = token
                proposals.append({"score": float(row[token]), "token": int(token),
                                  "token_str": self.tokenizer.decode([int(token)]),
                                  "sequence": self.tokenizer.decode(filled, skip_special_tokens=single)})
            answers.append(proposals)
        return answers

    def _windows(self, question: str, option: str) -> tuple:
        """(ids (T,), positions of the option's tokens, the option's token ids)."""
        tok = self.tokenizer
        option_ids = tok.convert_tokens_to_ids(tok.tokenize(option))[:self.max_seq_length // 2] or [tok.unk_token_id]
        room = self.max_seq_length - 3 - len(option_ids)
        question_ids = tok.convert_tokens_to_ids(tok.tokenize(question))[-room:] if room > 0 else []
        ids = [tok.cls_token_id, *question_ids, tok.sep_token_id, *option_ids, tok.sep_token_id]
        start = len(question_ids) + 2
        return np.asarray(ids, dtype=np.int64), np.arange(start, start + len(option_ids)), np.asarray(option_ids)

    def option_scores(self, questions: Sequence[str], options: Sequence[Sequence[str]], batch_size: int = 32,
                      progress: bool = False) -> List[np.ndarray]:
        """Per question, (C,) mean log-probabilities of its options (see the module docstring)."""
        windows = [(qi, self._windows(q, o)) for qi, (q, opts) in enumerate(zip(questions, options)) for o in opts]
        scores = [np.zeros(len(opts)) for opts in options]
        slot = [c for opts in options for c in range(len(opts))]
        steps = range(0, len(windows), batch_size)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="MLM scoring", unit="batch")
        for start in steps:
            chunk = windows[start:start + batch_size]
            length = max(len(w[1][0]) for w in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            types, mask = np.zeros_like(ids), np.zeros_like(ids)
            for row, (_, (tokens, positions, _)) in enumerate(chunk):
                ids[row, :len(tokens)], mask[row, :len(tokens)] = tokens, 1
                types[row, positions[0]:len(tokens)] = 1  # the option and its [SEP] are segment 1
                ids[row, positions] = self.tokenizer.mask_token_id
            logits = self.logits({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            for row, (qi, (_, positions, option_ids)) in enumerate(chunk):
                logp = log_softmax(logits[row, positions].astype(np.float64))  # (K, V)
                scores[qi][slot[start + row]] = float(logp[np.arange(len(option_ids)), option_ids].mean())
        return scores
