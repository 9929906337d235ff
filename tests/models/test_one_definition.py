import os
import re

import mindtransformer

MODELS_DIR = os.path.join(os.path.dirname(mindtransformer.__file__), "models")


def test_models_import_no_framework():
    offenders = []
    for root, _, files in os.walk(MODELS_DIR):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(root, name), encoding="utf-8").read()
                if re.search(r"^\s*(import|from)\s+(torch|mindspore)\b", text, re.M):
                    offenders.append(name)
    assert offenders == []
