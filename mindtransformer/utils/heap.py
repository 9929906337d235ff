"""Keeping large freed blocks in the process's heap (glibc) instead of returning them to the
system at once.

glibc serves blocks over its mmap threshold (at most 32 MB, however it adapts) with a fresh
mmap and unmaps them on free, so a tensor of that size made at every step is page-faulted in
again, one 4 KB page at a time, every step. A BERT pretraining step makes several: the masked-LM
logits of a micro-batch of 16 x 20 positions over 30,522 words are 39 MB in fp32, with their
bf16 copy, softmax and gradients (bench/pretrain_throughput.py, tiny BERT in bf16: those passes
were ~45 % of the step; with this, one rank ran 33-70 % faster). The cost: memory a run has freed stays
with it until it exits, and the heap can hold a few copies of a recurring block before reuse
settles: torch asks for 64-byte-aligned blocks, and a freed one is reused once freed neighbours
have merged with it. A 40 MB tensor made and freed 16 times in a row faulted in afresh for the
first 2-10 rounds and never after, with a peak of 505-585 MB against 265 MB under glibc's
defaults (tests/test_heap.py's probe); the record tool's peak did not change (82 MB).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_KEEP_UP_TO = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed
_NEVER_TRIM = (1 << 31) - 1  # the largest value of mallopt's int: free memory at the heap's top is kept


def keep_freed_blocks() -> bool:
    """Ask glibc to serve blocks up to 1 GiB from the heap and not to trim it; False where the
    C library is not glibc (nothing changes there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_UP_TO)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
