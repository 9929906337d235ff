"""The pretraining job end to end through its command lines, on records made from the bundled
Wikipedia excerpt: outputs, data parallel under mpirun, kill/resume and a dead rank on both
backends, bad settings. (MindSpore runs are subprocesses anyway: compiled graphs are never freed
in-process.)"""

import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mindtransformer.data import records as record_files
from mindtransformer.trainer.reporting import read_metrics
from tests.conftest import REPO_ROOT

TINY = ["--num_layers=2", "--num_heads=2", "--embedding_size=64", "--intermediate_size=128",
        "--global_batch_size=8", "--learning_rate=1e-3", "--warmup_steps=2"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT)
MPI = shutil.which("mpirun")


def trainer(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mindtransformer.models.bert.bert_trainer", *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout, cwd=REPO_ROOT)


def distributed(ranks, hostfile, data, *args, timeout=600):
    return subprocess.run(["bash", os.path.join(REPO_ROOT, "examples", "pretrain", "pretrain_bert_distributed.sh"),
                           str(ranks), str(hostfile), str(data), *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout, cwd=REPO_ROOT)


def losses(run_dir) -> list:
    return [r["loss"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "loss" in r]


@pytest.fixture(scope="module")
def hostfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("hosts") / "hostfile"
    path.write_text("localhost slots=2\n")
    return path


def test_a_run_leaves_metrics_curve_manifest_checkpoints_and_an_hf_export(pretraining_tfrecords, tmp_path):
    run = tmp_path / "run"
    done = trainer(f"--train_data_path={pretraining_tfrecords}", *TINY, "--train_steps=12", "--save_checkpoint_steps=3",
                   "--keep_checkpoint_max=2", f"--eval_data_path={pretraining_tfrecords}", "--eval_steps=6",
                   f"--save_checkpoint_path={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in train] == list(range(1, 13)) and [r["step"] for r in evals] == [6, 12]
    assert train[-1]["loss"] < train[0]["loss"] and all(r["skipped"] is False for r in train)
    written = sum(record_files.read_manifest(os.path.join(pretraining_tfrecords, name))["count"]
                  for name in os.listdir(pretraining_tfrecords) if not name.endswith(".json"))  # the tool's count
    assert written > 500 and evals[0]["eval_instances"] == written  # every record once, the last partial batch too
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["settings"]["train_steps"] == 12 and "torch" in manifest["versions"]
    if importlib.util.find_spec("tensorboard"):  # installed with mindtransformer[all]
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard")).Reload()
        assert [e.step for e in events.Scalars("loss")] == list(range(1, 13))
        assert [e.value for e in events.Scalars("eval_loss")] == pytest.approx([r["eval_loss"] for r in evals])
    # The newest two checkpoints and the best (lowest eval loss) one are kept.
    kept = sorted(os.listdir(run / "checkpoints"))
    best = min(evals, key=lambda r: r["eval_loss"])["step"]
    assert kept == sorted({f"bert-step{s:08d}" for s in (9, 12, best)})
    # transformers loads the export, and computes the loss our model computes.
    import torch
    import transformers

    from mindtransformer.data import loaders
    from mindtransformer.pretrained import from_pretrained
    from mindtransformer.trainer.pretrain import pretraining_inputs

    hf = transformers.BertForPreTraining.from_pretrained(run / "final").eval()
    ours = from_pretrained(str(run / "final"), task="pretraining")
    batch = pretraining_inputs(next(loaders.PretrainingStream(loaders.record_files(pretraining_tfrecords), 4).batches(0)))
    labels = np.full(batch["input_ids"].shape, -100)
    np.put_along_axis(labels, batch["masked_lm_positions"], batch["labels"], axis=1)
    labels[:, 0] = -100  # padding slots point at position 0 with label -100
    with torch.no_grad():
        theirs = hf(**{k: torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")},
                    labels=torch.from_numpy(labels), next_sentence_label=torch.from_numpy(batch["next_sentence_label"]))
        mine = ours(*[torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids", "labels",
                                                            "next_sentence_label", "masked_lm_positions")])
    assert abs(float(theirs.loss) - float(mine["loss"])) < 1e-5


def test_a_mindspore_run_exports_an_hf_folder_and_a_ckpt_of_the_same_weights(pretraining_tfrecords, tmp_path):
    run = tmp_path / "run"
    done = trainer(f"--train_data_path={pretraining_tfrecords}", *TINY, "--backend=mindspore", "--train_steps=3",
                   "--optimizer=lamb", f"--save_checkpoint_path={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(losses(run)) == 3 and all(np.isfinite(losses(run)))
    import transformers
    from safetensors.numpy import load_file

    from mindtransformer.backends.mindspore import read_checkpoint

    transformers.BertForPreTraining.from_pretrained(run / "final")
    hf, ckpt = load_file(run / "final" / "model.safetensors"), read_checkpoint(str(run / "final" / "bert.ckpt"))
    assert set(hf) == set(ckpt) and all(np.array_equal(hf[k], ckpt[k]) for k in hf)


@pytest.fixture(scope="module")
def one_process_run(pretraining_tfrecords, tmp_path_factory):
    """backend -> the run directory of 6 steps in one process with the two-rank tests' global batch
    (made once per backend: both MindSpore averagings compare with the same run)."""
    runs = {}

    def run(backend):
        if backend not in runs:
            runs[backend] = tmp_path_factory.mktemp(f"one-{backend}")
            done = trainer(f"--train_data_path={pretraining_tfrecords}", *TWO_RANK_RECIPE, f"--backend={backend}",
                           "--grad_accumulation_steps=2", f"--save_checkpoint_path={runs[backend]}")
            assert done.returncode == 0, done.stderr[-3000:]
        return runs[backend]

    return run


TWO_RANK_RECIPE = [*TINY, "--train_steps=6", "--save_checkpoint_steps=6", "--dropout=0"]


@pytest.mark.skipif(MPI is None, reason="OpenMPI's mpirun is not installed")
@pytest.mark.parametrize("backend, averaging, averaged_by", [
    ("torch", [], "MPI_Allreduce (mpi4py)"),  # on CPU under mpirun, the default
    ("mindspore", [], "MPI_Allreduce (mpi4py)"),
    # The backends' own collectives: what torchrun, msrun and GPU runs average with.
    ("torch", ["--allreduce=framework"], "torch.distributed (gloo)"),
    pytest.param("mindspore", ["--allreduce=framework"], "mindspore.communication's AllReduce",
                 marks=pytest.mark.slow),  # slow: a third MindSpore run
], ids=["torch-mpi", "mindspore-mpi", "torch-gloo", "mindspore-allreduce"])
def test_two_ranks_under_mpirun_match_one_process_with_the_same_global_batch(pretraining_tfrecords, hostfile, tmp_path,
                                                                             one_process_run, backend, averaging,
                                                                             averaged_by):
    two = distributed(2, hostfile, pretraining_tfrecords, *TWO_RANK_RECIPE, f"--backend={backend}", *averaging,
                      f"--save_checkpoint_path={tmp_path / 'dp'}")
    assert two.returncode == 0, two.stderr[-3000:]
    if averaged_by:
        assert f"gradients averaged over 2 ranks by {averaged_by}" in two.stdout
    one = one_process_run(backend)
    np.testing.assert_allclose(losses(tmp_path / "dp"), losses(one), rtol=0, atol=1e-5)
    # Every rank's parameters at the end: the same on both ranks (the run checks and records it).
    fingerprints = read_metrics(tmp_path / "dp" / "metrics.jsonl")[-1]["replica_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1] > 0
    # Parameters after the last step: the same in both runs (rank 0 wrote the export).
    from safetensors.numpy import load_file

    a, b = load_file(tmp_path / "dp" / "final" / "model.safetensors"), load_file(one / "final" / "model.safetensors")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5


@pytest.mark.parametrize("flags", [
    ["--backend=torch"],  # dropout on: the RNG state is part of the checkpoint
    pytest.param(["--backend=mindspore", "--mindspore_mode=pynative"],  # dropout on: reseeded from the position
                 marks=pytest.mark.slow),
    ["--backend=mindspore", "--dropout=0"],  # GRAPH mode: dropout masks are baked into the graph
], ids=["torch", "mindspore-pynative", "mindspore-graph"])
def test_sigkill_at_a_random_step_then_resume_gives_the_same_losses(pretraining_tfrecords, tmp_path, flags):
    common = [f"--train_data_path={pretraining_tfrecords}", *TINY, "--train_steps=10", "--save_checkpoint_steps=1",
              *flags]
    full = trainer(*common, f"--save_checkpoint_path={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    expected = losses(tmp_path / "full")
    kill_after = random.Random().randint(2, 8)
    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "mindtransformer.models.bert.bert_trainer", *common,
                                f"--save_checkpoint_path={run}"], env=ENV, cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(losses(run)) < kill_after and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(losses(run)) < 10, "the run finished before it could be killed"
    resumed = trainer(*common, f"--save_checkpoint_path={run}", f"--load_checkpoint_path={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    np.testing.assert_allclose(losses(run), expected, rtol=0, atol=1e-6, err_msg=f"killed after step {kill_after}")


def test_a_checkpoint_write_cut_short_leaves_the_previous_one_loadable(pretraining_tfrecords, tmp_path):
    from mindtransformer.trainer import checkpoints

    common = [f"--train_data_path={pretraining_tfrecords}", *TINY, "--save_checkpoint_steps=2"]
    run = tmp_path / "run"
    assert trainer(*common, "--train_steps=4", f"--save_checkpoint_path={run}").returncode == 0
    # What a kill in the middle of writing step 6 leaves: a temporary directory, part-written.
    partial = run / "checkpoints" / ".tmp-bert-step00000006"
    shutil.copytree(run / "checkpoints" / "bert-step00000004", partial)
    with open(partial / "model.safetensors", "r+b") as f:
        f.truncate(100)
    (partial / "trainer_state.json").unlink()
    assert checkpoints.resolve(str(run)).endswith("bert-step00000004")
    resumed = trainer(*common, "--train_steps=6", f"--save_checkpoint_path={run}", f"--load_checkpoint_path={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert not partial.exists() and (run / "checkpoints" / "bert-step00000006" / "trainer_state.json").is_file()


@pytest.mark.skipif(MPI is None, reason="OpenMPI's mpirun is not installed")
@pytest.mark.parametrize("backend, averaging", [
    ("torch", ["--allreduce=framework"]),  # gloo's own failure detection, as under torchrun
    ("mindspore", []),  # MPI averaging (the default under mpirun)
], ids=["torch-gloo", "mindspore-mpi"])
def test_when_one_rank_dies_the_others_exit_within_a_minute_naming_it(pretraining_tfrecords, hostfile, tmp_path, backend,
                                                                      averaging):
    run = tmp_path / "run"
    launch = subprocess.Popen(["bash", os.path.join(REPO_ROOT, "examples", "pretrain", "pretrain_bert_distributed.sh"),
                               "2", str(hostfile), str(pretraining_tfrecords), *TINY, "--train_steps=100000",
                               f"--backend={backend}", *averaging,
                               "--save_checkpoint_steps=100000", f"--save_checkpoint_path={run}"],
                              env=ENV, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(losses(run)) < 3 and launch.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert launch.poll() is None, launch.stdout.read()[-3000:]
    victim = _rank_pid(launch.pid, rank=1)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    output, _ = launch.communicate(timeout=90)
    assert time.time() - killed_at < 60
    assert launch.returncode != 0
    assert "rank 1" in output, output[-3000:]


@pytest.mark.skipif(MPI is None, reason="OpenMPI's mpirun is not installed")
def test_when_one_rank_stops_answering_the_others_exit_after_the_collective_timeout(pretraining_tfrecords, hostfile,
                                                                                   tmp_path):
    """A rank that hangs without exiting (here: SIGSTOP) is not seen by mpirun; MPI's blocking
    all-reduce has no timeout of its own, so the gradient sum keeps one (backends/mpi.py)."""
    run = tmp_path / "run"
    launch = subprocess.Popen(["bash", os.path.join(REPO_ROOT, "examples", "pretrain", "pretrain_bert_distributed.sh"),
                               "2", str(hostfile), str(pretraining_tfrecords), *TINY, "--train_steps=100000",
                               "--backend=torch", "--collective_timeout=8", "--save_checkpoint_steps=100000",
                               f"--save_checkpoint_path={run}"],
                              env=ENV, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(losses(run)) < 3 and launch.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert launch.poll() is None, launch.stdout.read()[-3000:]
    waiting, victim = _rank_pid(launch.pid, rank=0), _rank_pid(launch.pid, rank=1)
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        while _alive(waiting) and time.time() - stopped_at < 60:
            time.sleep(0.2)
        waited = time.time() - stopped_at
    finally:
        os.kill(victim, signal.SIGKILL)  # a stopped process ignores mpirun's SIGTERM
    output, _ = launch.communicate(timeout=90)
    assert 8 <= waited < 40, output[-3000:]
    assert launch.returncode != 0
    assert "rank 0: the all-reduce of step" in output and "got no answer within 8 s" in output, output[-3000:]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _rank_pid(root: int, rank: int) -> int:
    """The pid of the process under `root` whose environment says OMPI_COMM_WORLD_RANK=rank."""
    for _ in range(100):
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if (f"OMPI_COMM_WORLD_RANK={rank}".encode() in env and _descends_from(pid, root)
                    and b"mindtransformer" in open(f"/proc/{pid}/cmdline", "rb").read()):
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} under {root}")


def _descends_from(pid: int, root: int) -> bool:
    """Whether `root` is an ancestor of `pid`: other tests' mpirun jobs may run at the same time."""
    while pid > 1:
        if pid == root:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(") ", 1)[1].split()[1])  # field 4: the parent's pid
        except (OSError, IndexError, ValueError):
            return False
    return False


# ---- bad settings: one line, exit 2, before any training ---------------------------------------

def _rejected(done, *fragments, run_dir=None):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(("error:", "bert_trainer: error:")), done.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    if run_dir is not None:
        assert not os.path.exists(os.path.join(run_dir, "metrics.jsonl"))


@pytest.mark.parametrize("flag, fragments", [
    ("--no_such_flag=1", ("unknown flag --no_such_flag",)),
    ("--lerning_rate=1e-3", ("unknown flag --lerning_rate", "--learning_rate")),
    ("--seq_length=1024", ("--seq_length=1024", "--max_position_embeddings=512")),
    ("--max_predictions_per_seq=30", ("max_predictions_per_seq 20", "--max_predictions_per_seq 30")),
    ("--allreduce=gloo", ("--allreduce", "invalid choice: 'gloo'", "framework")),
])
def test_bad_flags_are_refused_before_training(pretraining_tfrecords, tmp_path, flag, fragments):
    _rejected(trainer(f"--train_data_path={pretraining_tfrecords}", *TINY, "--train_steps=2", flag,
                      f"--save_checkpoint_path={tmp_path}"), *fragments, run_dir=tmp_path)


def test_a_data_path_without_records_is_refused(tmp_path):
    _rejected(trainer(f"--train_data_path={tmp_path}", *TINY, f"--save_checkpoint_path={tmp_path / 'run'}"),
              "no record file", run_dir=tmp_path / "run")


@pytest.fixture(scope="module")
def one_step_run(pretraining_tfrecords, tmp_path_factory):
    """A finished one-step run of the tiny BERT, to resume from (copy it before changing it)."""
    run = tmp_path_factory.mktemp("one-step") / "run"
    done = trainer(f"--train_data_path={pretraining_tfrecords}", *TINY, "--train_steps=1", f"--save_checkpoint_path={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_a_checkpoint_of_another_model_size_is_refused(pretraining_tfrecords, one_step_run, tmp_path):
    done = trainer(f"--train_data_path={pretraining_tfrecords}", *TINY, "--embedding_size=128", "--train_steps=2",
                   f"--save_checkpoint_path={tmp_path / 'other'}", f"--load_checkpoint_path={one_step_run}")
    _rejected(done, "a checkpoint of another model", "hidden_size 64", run_dir=tmp_path / "other")


def test_a_damaged_checkpoint_is_refused_in_one_line(pretraining_tfrecords, one_step_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(one_step_run, run)
    with open(run / "checkpoints" / "bert-step00000001" / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    done = trainer(f"--train_data_path={pretraining_tfrecords}", *TINY, "--train_steps=2",
                   f"--save_checkpoint_path={tmp_path / 'other'}", f"--load_checkpoint_path={run}")
    _rejected(done, "bert-step00000001: a damaged checkpoint", "resume from an earlier one")


@pytest.mark.parametrize("line", ["localhost slots=two", "localhost slot=2", "local host slots=2"])
def test_a_bad_hostfile_line_is_refused(pretraining_tfrecords, tmp_path, line):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(f"# machines\n{line}\n")
    done = distributed(2, hostfile, pretraining_tfrecords, *TINY, f"--save_checkpoint_path={tmp_path / 'run'}")
    assert done.returncode == 2
    assert f"{hostfile}:2:" in done.stderr and "HOST slots=N" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_init_from_an_hf_folder_starts_from_its_weights(pretraining_tfrecords, minilm_path, tmp_path):
    # MiniLM has no MLM/NSP head weights: they are initialised, the backbone is MiniLM's.
    run = tmp_path / "run"
    done = trainer(f"--train_data_path={pretraining_tfrecords}", f"--init_from={minilm_path}", "--global_batch_size=4",
                   "--train_steps=2", "--learning_rate=1e-5", f"--save_checkpoint_path={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.numpy import load_file

    start, end = load_file(os.path.join(minilm_path, "model.safetensors")), load_file(run / "final" / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    assert end[f"bert.{key}"].shape == (30522, 384)
    assert 0 < np.abs(end[f"bert.{key}"] - start[key]).max() < 1e-3  # two small steps away from MiniLM
