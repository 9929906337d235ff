"""mindtransformer: BERT pretraining and fine-tuning, one model definition, PyTorch and MindSpore backends."""

import glob

from setuptools import Extension, find_packages, setup

EXTRAS = {
    # torch is pinned: this CPU wheel lies on the machine; an unpinned torch pulls a CUDA build.
    "torch": ["torch==2.13.0"],
    "mindspore": ["mindspore==2.10.0"],
    "tensorflow": ["tensorflow-cpu==2.21.0"],
    "mpi": ["mpi4py>=4.0"],
    "hf": ["transformers>=5.0,<6"],
    "deepspeed": ["deepspeed==0.19.8"],  # ZeRO on torch; its CPU kernels are built at first use (g++)
    "peft": ["peft==0.21.2"],  # not imported by the package: tests load our LoRA adapters with it and its with ours
    # Pretraining data: WikiExtractor for dumps, jieba for Chinese whole-word masking.
    "data": ["wikiextractor==3.1.0", "jieba==0.42.1"],
    # Training logs as TensorBoard event files (written only when this is installed).
    "tensorboard": ["tensorboard>=2.15"],
    # pytest-xdist: scripts/test.sh runs the suite on two workers (the CPU-bound tests overlap).
    "test": ["pytest>=8", "pytest-xdist>=3.5"],
    # Peers that bench/ runs side by side with us (google-research/bert as published on PyPI).
    # HF Trainer (bench/glue.py) needs accelerate.
    "bench": ["bert-tensorflow==1.0.4", "accelerate>=1.0"],
}
EXTRAS["all"] = sorted({req for name in ("torch", "mindspore", "tensorflow", "mpi", "hf", "data",
                                                                "tensorboard", "deepspeed", "peft") for req in EXTRAS[name]})

# The torch binding's C kernels for bf16 steps on a CPU (csrc/), each an optional extension:
# without a compiler the install goes on and torch's own operations run in their place.
#   dropout: dropout masks in one pass, dropout with the fp32 residual sum
#   attention: the softmax and dropout passes over attention weights (AVX-512)
#   gelu: the exact GELU's backward
#   layer_norm: LayerNorm with the bf16 copy of its output
#   adamw: torch's fused AdamW update with the weights' bf16 copies and zeroed gradients in the same
#     pass; -ffp-contract=off: no multiply-add fused where torch's kernel has two operations
#   cross_entropy: log-sum-exp and gradient rows over bf16 logits (the MLM head's)
# -funroll-loops: their loops are chains of dependent vector operations; unrolled, consecutive
# iterations overlap (the GELU backward over BERT-base's (4,096, 3,072): 9.9 -> 7.0 ms, measured).
TORCH_KERNEL_FLAGS = ["-O3", "-funroll-loops"]
TORCH_KERNELS = [("dropout", []), ("attention", []), ("gelu", []), ("layer_norm", []), ("adamw", ["-ffp-contract=off"]),
                 ("cross_entropy", [])]

setup(
    name="mindtransformer",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["mindtransformer", "mindtransformer.*"]),
    package_data={"mindtransformer": ["resources/*", "resources/glue/*/*", "resources/squad/*", "resources/tmmlu/*",
                                      "resources/tmmlu/subjects/*/*"]},
    # The record tools' per-record loops in C (TFRecord encoding). optional: without a compiler the
    # install goes on and the same code runs in numpy, more slowly, to the same bytes.
    ext_modules=[Extension("mindtransformer.data._records_c", sorted(glob.glob("mindtransformer/data/csrc/*.c")),
                           depends=glob.glob("mindtransformer/data/csrc/*.h"), extra_compile_args=["-O3"],
                           optional=True),
                 *[Extension(f"mindtransformer.backends.torch._{name}", [f"mindtransformer/backends/torch/csrc/{name}.c"],
                             depends=["mindtransformer/backends/torch/csrc/bf16.h"], optional=True,
                             extra_compile_args=TORCH_KERNEL_FLAGS + extra)
                   for name, extra in TORCH_KERNELS]],
    python_requires=">=3.9",
    install_requires=[
        "numpy>=1.23,<2",  # MindSpore's kernels are built against NumPy 1.x
        "tokenizers>=0.15",
        "google-crc32c>=1.5",  # TFRecord framing (mindtransformer/data/tfrecord.py)
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "scipy>=1.10",
    ],
    extras_require=EXTRAS,
)
