"""Evaluation and prediction entry points: text_classification, ..."""
