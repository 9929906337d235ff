"""The one BERT definition: module tree, forward math and every head, for all backends.

This file imports no framework. `modeling_for(backend)` executes it once per backend with that
backend's `nn` (layers, module base) and `ops` (functions) bound below, so the math is written
once and attribute paths give HF's parameter names (`encoder.layer.0.attention.self.query.weight`).

Shape legend: B batch, C choices, T tokens, H hidden, N heads, D head size (H = N * D),
I intermediate, V vocabulary, L labels.

Like HF, a head given its labels also returns "loss" (mean over labelled items; label -100 is
ignored), so the loss is part of the one definition too.
"""

from mindtransformer.backends import current_binding

nn, ops = current_binding()


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        std = config.initializer_range
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, std, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size, std)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size, std)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        length = ops.shape(input_ids)[1]
        if token_type_ids is None:
            types = self.token_type_embeddings.weight[0]  # (H,): every token is segment 0
        else:
            types = self.token_type_embeddings(token_type_ids)  # (B, T, H)
        # Positions 0..T-1 are a slice of the table, (T, H), broadcast over the batch.
        x = self.word_embeddings(input_ids) + types + self.position_embeddings.weight[:length]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        std = config.initializer_range
        self.num_attention_heads = config.num_attention_heads
        self.dropout_prob = config.attention_probs_dropout_prob
        self.query = nn.Linear(config.hidden_size, config.hidden_size, std)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, std)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, std)
        self.prefix = None  # Prefix-Tuning: a module giving this layer's (P, 2H) key and value prefixes

    def forward(self, x, bias, queries=None):
        # x (B, T, H); queries (B, Tq, H) attend over x, Tq = 1 when only [CLS] is needed; None:
        # every token of x queries (Tq = T), and x's three projections run as one (ops.project).
        n = self.num_attention_heads
        if queries is None:
            q, keys, values = ops.project(x, (self.query, self.key, self.value))  # 3 x (B, T, H)
        else:
            q = self.query(queries)  # (B, Tq, H)
            keys, values = ops.project(x, (self.key, self.value))
        if self.prefix is not None:  # P learned positions in front of every sequence's keys and values
            key_value = self.prefix()  # (P, 2H)
            hidden = ops.shape(keys)[-1]
            keys, values = ops.prepend(keys, key_value[:, :hidden]), ops.prepend(values, key_value[:, hidden:])
            bias = ops.attend_prefix(bias, ops.shape(key_value)[0])  # (B, 1, 1, P + T)
        q = ops.split_heads(q, n)  # (B, N, Tq, D)
        k = ops.split_heads(keys, n)  # (B, N, P + T, D)
        v = ops.split_heads(values, n)  # (B, N, P + T, D)
        context = ops.attention(q, k, v, bias, self.dropout_prob if self.training else 0.0)
        return ops.merge_heads(context)  # (B, Tq, H)


class BertResidualOutput(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm: HF's BertSelfOutput (in_size H) and BertOutput (in_size I)."""

    def __init__(self, config, in_size):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size, config.initializer_range)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x), residual))  # dropout(dense(x)) + residual: (B, Tq, H)


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, x, bias, queries=None):
        return self.output(self.self(x, bias, queries), x if queries is None else queries)


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size, config.initializer_range)
        self.hidden_act = config.hidden_act

    def forward(self, x):
        return ops.activation(self.dense(x), self.hidden_act)  # (B, T, I)


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, x, bias, queries=None):
        attended = self.attention(x, bias, queries)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x, bias, first_token_only=False, all_states=False):
        # first_token_only: the caller reads only [CLS] of the last layer (pooler heads), so that
        # layer computes queries, attention output and feed-forward for position 0 alone:
        # (B, T, H) -> (B, 1, H). Keys and values still come from every token.
        # Returns the last layer's output and, with all_states, the tuple of the embeddings' output
        # and every layer's (L + 1 of (B, T, H), HF's hidden_states), else ().
        last = len(self.layer) - 1
        states = (x,) if all_states else ()
        for index, layer in enumerate(self.layer):
            queries = x[:, :1] if first_token_only and index == last else None
            x = layer(x, bias, queries)
            if all_states:
                states = states + (x,)
        return x, states


class BertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, config.initializer_range)

    def forward(self, x):
        return ops.tanh(self.dense(x[:, 0]))  # (B, T, H) -> (B, H)


class BertModel(nn.Module):
    """Embeddings + encoder + pooler; returns last_hidden_state (B, T, H) and pooler_output (B, H)."""

    def __init__(self, config, add_pooling_layer=True):
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, first_token_only=False, all_states=False):
        """(the last layer's output (B, T, H), the hidden states or ()): see BertEncoder. With
        all_states every layer is computed in full, as HF's output_hidden_states gives them."""
        bias = ops.attention_bias(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        return self.encoder(x, bias, first_token_only and not all_states, all_states)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        x, states = self.encode(input_ids, attention_mask, token_type_ids, all_states=output_hidden_states)
        outputs = {"last_hidden_state": x}
        if self.pooler is not None:
            outputs["pooler_output"] = self.pooler(x)
        return with_hidden_states(outputs, states)


def with_hidden_states(outputs: dict, states: tuple) -> dict:
    """outputs with "hidden_states" when the caller asked for them (output_hidden_states=True)."""
    if states:
        outputs["hidden_states"] = states
    return outputs


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, config.initializer_range)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.hidden_act = config.hidden_act

    def forward(self, x):
        return self.LayerNorm(ops.activation(self.dense(x), self.hidden_act))


class BertLMPredictionHead(nn.Module):
    """MLM decoder whose weight is the word-embedding table (tied); only the bias is its own."""

    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.zeros_parameter(config.vocab_size)

    def forward(self, x, word_embeddings):
        return ops.linear(self.transform(x), word_embeddings, self.bias)  # (B, T, H) -> (B, T, V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, x, word_embeddings):
        return self.predictions(x, word_embeddings)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2, config.initializer_range)

    def forward(self, x, pooled, word_embeddings):
        return self.predictions(x, word_embeddings), self.seq_relationship(pooled)


class BertForPreTraining(nn.Module):
    """MLM + NSP: prediction_logits (B, T, V), seq_relationship_logits (B, 2), 1 = random next."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None,
                masked_lm_positions=None, output_hidden_states=False):
        # labels (B, T): the original token at masked positions, -100 elsewhere (HF's convention).
        # With masked_lm_positions (B, P) (google's way, what the trainer passes) the MLM head runs
        # only at those positions: prediction_logits (B, P, V) and labels (B, P), T / P times
        # less work in the largest matmul of a small model.
        x, states = self.bert.encode(input_ids, attention_mask, token_type_ids, all_states=output_hidden_states)
        pooled = self.bert.pooler(x)
        if masked_lm_positions is not None:
            x = ops.gather_positions(x, masked_lm_positions)  # (B, T, H) -> (B, P, H)
        mlm, nsp = self.cls(x, pooled, self.bert.embeddings.word_embeddings.weight)
        outputs = {"prediction_logits": mlm, "seq_relationship_logits": nsp}
        if labels is not None and next_sentence_label is not None:
            outputs["loss"] = ops.cross_entropy(mlm, labels) + ops.cross_entropy(nsp, next_sentence_label)
        return with_hidden_states(outputs, states)


class BertForMaskedLM(nn.Module):
    """logits (B, T, V). No pooler, as in HF."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False):
        x, states = self.bert.encode(input_ids, attention_mask, token_type_ids, all_states=output_hidden_states)
        outputs = {"logits": self.cls(x, self.bert.embeddings.word_embeddings.weight)}
        if labels is not None:
            outputs["loss"] = ops.cross_entropy(outputs["logits"], labels)
        return with_hidden_states(outputs, states)


def _classifier_dropout(config):
    return config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout


class BertForSequenceClassification(nn.Module):
    """logits (B, L); L = num_labels, 1 for regression (STS-B)."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels, config.initializer_range)
        self.regression = config.problem_type == "regression" or (config.problem_type is None and config.num_labels == 1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False):
        x, states = self.bert.encode(input_ids, attention_mask, token_type_ids, True, output_hidden_states)
        logits = self.classifier(self.dropout(self.bert.pooler(x)))
        outputs = {"logits": logits}
        if labels is not None and self.regression:  # labels (B,) floats, logits (B, 1)
            outputs["loss"] = ops.mse(ops.reshape(logits, (-1,)), labels)
        elif labels is not None:
            outputs["loss"] = ops.cross_entropy(logits, labels)
        return with_hidden_states(outputs, states)


class BertForMultipleChoice(nn.Module):
    """Inputs (B, C, T) -> logits (B, C): one score per [CLS] question [SEP] option [SEP]."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, 1, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False):
        # hidden states: (B * C, T, H) each, the choices flattened as HF gives them
        batch, choices, length = ops.shape(input_ids)
        flat = (batch * choices, length)
        attention_mask = None if attention_mask is None else ops.reshape(attention_mask, flat)
        token_type_ids = None if token_type_ids is None else ops.reshape(token_type_ids, flat)
        x, states = self.bert.encode(ops.reshape(input_ids, flat), attention_mask, token_type_ids, True,
                                     output_hidden_states)
        scores = self.classifier(self.dropout(self.bert.pooler(x)))  # (B*C, 1)
        outputs = {"logits": ops.reshape(scores, (batch, choices))}
        if labels is not None:
            outputs["loss"] = ops.cross_entropy(outputs["logits"], labels)
        return with_hidden_states(outputs, states)


class BertForTokenClassification(nn.Module):
    """logits (B, T, L)."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False):
        # labels (B, T), -100 where no label (padding, word continuations)
        x, states = self.bert.encode(input_ids, attention_mask, token_type_ids, all_states=output_hidden_states)
        outputs = {"logits": self.classifier(self.dropout(x))}
        if labels is not None:
            outputs["loss"] = ops.cross_entropy(outputs["logits"], labels)
        return with_hidden_states(outputs, states)


class BertForQuestionAnswering(nn.Module):
    """start_logits and end_logits, each (B, T)."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, start_positions=None, end_positions=None,
                output_hidden_states=False):
        x, states = self.bert.encode(input_ids, attention_mask, token_type_ids, all_states=output_hidden_states)
        logits = self.qa_outputs(x)  # (B, T, 2)
        start, end = logits[:, :, 0], logits[:, :, 1]
        outputs = {"start_logits": start, "end_logits": end}
        if start_positions is not None and end_positions is not None:
            # positions (B,): token indices of the answer span ([CLS] = 0 when the window has none)
            outputs["loss"] = (ops.cross_entropy(start, start_positions) + ops.cross_entropy(end, end_positions)) / 2
        return with_hidden_states(outputs, states)


class LoraLinear(nn.Module):
    """LoRA around a Linear: base_layer(x) + (alpha / r) * lora_B(lora_A(dropout(x))), with peft's
    module names (`query.base_layer`, `query.lora_A`, `query.lora_B`). lora_B starts at zero, so the
    wrapped layer starts as the plain one; lora_A ~ N(0, 1/r) (peft's "gaussian" init)."""

    def __init__(self, base_layer, in_features: int, out_features: int, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.Linear(in_features, r, 1.0 / r, bias=False)  # (r, in)
        self.lora_B = nn.Linear(r, out_features, 0.0, bias=False)     # (out, r), zeros
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class SvdLoraLinear(nn.Module):
    """SVD-LoRA (AdaLoRA) around a Linear: base_layer(x) + (alpha / r) * P diag(E * mask) Q x with
    Q = lora_A (r, I), P = lora_B (O, r), the singular values E = lora_E (r,) starting at zero and
    `rank_mask` (r,) holding which of them the rank budget keeps (models/bert/svd_lora.py)."""

    def __init__(self, base_layer, in_features: int, out_features: int, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        # P and Q start near orthonormal (rows / columns of unit norm), where the regulariser wants
        # them; AdaLoRA's N(0, 0.02) left E's gradients ~1e-3 as large and one epoch did not move E.
        self.lora_A = nn.Linear(in_features, r, in_features ** -0.5, bias=False)   # Q (r, I)
        self.lora_B = nn.Linear(r, out_features, out_features ** -0.5, bias=False)  # P (O, r)
        self.lora_E = nn.zeros_parameter(r)                         # singular values (r,)
        self.rank_mask = nn.ones_parameter(r)                       # 1 kept, 0 pruned; never trained
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / r

    def forward(self, x):
        update = self.lora_B(self.lora_A(self.lora_dropout(x)) * (self.lora_E * self.rank_mask))
        return self.base_layer(x) + update * self.scaling

    def orthogonality(self):
        """||Q Q^T - I||_F + ||P^T P - I||_F: pushes P and Q towards orthonormal, as in AdaLoRA."""
        q, p = self.lora_A.weight, self.lora_B.weight  # (r, I), (O, r)
        return ops.orthogonality_penalty(q) + ops.orthogonality_penalty(ops.transpose_2d(p))


class OrthogonalityRegularized(nn.Module):
    """The model's loss plus weight x the mean of its SVD-LoRA matrices' orthogonality penalties
    (AdaLoRA's regulariser: the mean over the P and Q matrices, so its size does not grow with
    the number of adapted layers)."""

    def __init__(self, model, layers, weight: float):
        super().__init__()
        self.model = model
        # the layers are `model`'s own: kept out of the module tree so that no weight appears twice
        object.__setattr__(self, "svd_layers", tuple(layers))
        self.weight = weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        outputs = self.model(input_ids, attention_mask, token_type_ids, labels)
        if labels is None or not self.training:
            return outputs
        penalty = 0.0
        for layer in self.svd_layers:
            penalty = penalty + layer.orthogonality()
        outputs["loss"] = outputs["loss"] + self.weight * penalty / (2 * len(self.svd_layers))
        return outputs


class PrefixReparameterized(nn.Module):
    """Prefix-Tuning while training (Li & Liang's reparameterisation): an embedding (P, H) through
    an MLP H -> R -> 2H gives this layer's key and value prefixes (P, 2H)."""

    def __init__(self, length: int, hidden: int, mlp_hidden: int, std: float):
        super().__init__()
        self.embedding = nn.Embedding(length, hidden, std)
        self.mlp_in = nn.Linear(hidden, mlp_hidden, std)
        self.mlp_out = nn.Linear(mlp_hidden, 2 * hidden, std)

    def forward(self):
        return self.mlp_out(ops.tanh(self.mlp_in(self.embedding.weight)))  # (P, 2H)


class PrefixTable(nn.Module):
    """Prefix-Tuning folded: the (P, 2H) key and value prefixes themselves (the MLP computed away)."""

    def __init__(self, length: int, hidden: int):
        super().__init__()
        self.key_value = nn.Embedding(length, 2 * hidden, 0.0)

    def forward(self):
        return self.key_value.weight  # (P, 2H)


class Distillation(nn.Module):
    """A student trained on a frozen teacher's outputs: loss = alpha * KL(teacher || student at
    temperature T) x T^2 + (1 - alpha) * the student's own task loss while training, plus, with
    hidden_weight > 0, hidden_weight x the mean squared distance between student hidden state k and
    the teacher's k x L_t / L_s (k = 0 the embeddings .. L_s; TinyBERT's uniform mapping), through a
    learned (H_s -> H_t) projection when the hidden sizes differ. Outputs (and the evaluation loss)
    are the student's. For heads whose targets are `labels` (classification, multiple choice, masked LM)."""

    def __init__(self, student, teacher, temperature: float, alpha: float, hidden_weight: float = 0.0):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.hidden_weight = hidden_weight
        student_size, teacher_size = student.config.hidden_size, teacher.config.hidden_size
        self.project = (nn.Linear(student_size, teacher_size, student.config.initializer_range)
                        if hidden_weight > 0 and student_size != teacher_size else None)
        student_layers, teacher_layers = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        self.pairs = tuple((k, k * teacher_layers // student_layers) for k in range(student_layers + 1))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        if labels is None:
            return self.student(input_ids, attention_mask, token_type_ids)
        if not self.training:  # evaluation: the student's own task loss, no teacher pass
            return self.student(input_ids, attention_mask, token_type_ids, labels)
        match = self.hidden_weight > 0
        outputs = self.student(input_ids, attention_mask, token_type_ids, labels, output_hidden_states=match)
        taught = self.teacher(input_ids, attention_mask, token_type_ids, output_hidden_states=match)
        soft = ops.soft_cross_entropy(outputs["logits"], taught["logits"], self.temperature)
        loss = self.alpha * soft + (1.0 - self.alpha) * outputs["loss"]
        if match:
            loss = loss + self.hidden_weight * self.hidden_distance(outputs["hidden_states"], taught["hidden_states"])
        return {"logits": outputs["logits"], "loss": loss}

    def hidden_distance(self, student_states, teacher_states):
        """Mean over the mapped pairs of the mean squared difference of (B, T, H_t) states."""
        total = 0.0
        for k, t in self.pairs:
            mine = student_states[k] if self.project is None else self.project(student_states[k])
            total = total + ops.mse(mine, teacher_states[t])
        return total / len(self.pairs)


# task name -> class; the class name is also HF's architecture name written to config.json.
TASKS = {
    "base": BertModel,
    "pretraining": BertForPreTraining,
    "masked_lm": BertForMaskedLM,
    "sequence_classification": BertForSequenceClassification,
    "question_answering": BertForQuestionAnswering,
    "multiple_choice": BertForMultipleChoice,
    "token_classification": BertForTokenClassification,
}
