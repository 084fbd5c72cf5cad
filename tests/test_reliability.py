"""Reliability: bad input gets a clear error and leaves no partial artifact; pickles are refused;
SIGKILL at random points inside every stage never leaves a partial artifact and re-runs reproduce
an uninterrupted run; two runs on one store at once both complete.   pytest tests/test_reliability.py

Bad-input cases covered elsewhere: recipe errors (malformed YAML, unknown field, wrong type, negative
size, unknown model path, unknown reward/family; tests/test_recipe.py, which also checks exit code 2),
changed/missing/extra artifact files, corrupt Parquet and concurrent writers (tests/test_store.py),
a raising reward and a hung call (tests/test_rewards.py, tests/test_grpo.py), a vLLM server that
cannot start (tests/test_fleet.py), non-finite FP8/pretraining loss (models/train/pretrain.py, below).
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r1flow.data.schemas import read_rows
from r1flow.data.store import ArtifactError, ArtifactStore
from r1flow.flows.pipeline import pipeline
from r1flow.tasks.common import StageNotCached

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _objects(root: Path) -> set[str]:
    return {p.name for p in (root / "objects").iterdir()} if (root / "objects").exists() else set()


def _assert_whole(root: Path) -> None:
    """Every object in the store verifies: no partial artifact, whatever happened."""
    store = ArtifactStore(root)
    for name in _objects(root):
        store.verify(name)


@pytest.fixture
def store_copy(smoke_run, tmp_path):
    recipe, store_root, paths = smoke_run
    dst = tmp_path / "store"
    shutil.copytree(store_root, dst, ignore=shutil.ignore_patterns("work", "tmp"))
    return recipe.model_copy(update={"store": str(dst)}), dst, {k: dst / "objects" / Path(v).name for k, v in paths.items()}


# ---- bad input ---------------------------------------------------------------------------------

def test_deleted_parent_artifact_is_named(store_copy):
    recipe, root, paths = store_copy
    shutil.rmtree(paths["pretrain"])
    before = _objects(root)
    with pytest.raises(StageNotCached, match="stage 'pretrain' comes before --from"):
        pipeline(recipe=recipe, from_stage="r1_zero")
    assert _objects(root) == before


def test_changed_artifact_file_is_named(store_copy):
    recipe, root, paths = store_copy
    f = paths["world"] / "rl.parquet"
    f.chmod(0o644)
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    before = _objects(root)
    with pytest.raises(ArtifactError, match=r"rl.parquet was changed after it was written"):
        pipeline(recipe=recipe)
    assert _objects(root) == before


def test_corrupt_manifest_is_named(store_copy):
    recipe, root, paths = store_copy
    (paths["tokenizer"] / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"manifest.json: corrupt manifest"):
        ArtifactStore(root).verify(paths["tokenizer"].name)


def test_truncated_parquet_and_missing_column_are_named(tmp_path):
    rows = [{"text": "a b", "doc_kind": "worked", "family": "add", "notation": "sym"}]
    good = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(rows), good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=rf"{cut}: not a readable Parquet file"):
        read_rows(cut, "corpus")
    thin = tmp_path / "thin.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "a b"}]), thin)
    with pytest.raises(ArtifactError, match=rf"{thin}: missing required corpus columns \['doc_kind', 'family'"):
        read_rows(thin, "corpus")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(rows).slice(0, 0), empty)
    with pytest.raises(ArtifactError, match=rf"{empty}: no rows"):
        read_rows(empty, "corpus")


def test_tokenizer_that_does_not_match_the_checkpoint(smoke_run, tmp_path):
    from r1flow.models.rollout.engine import check_checkpoint
    from r1flow.models.train.grpo import run_grpo

    recipe, _, paths = smoke_run
    bad = tmp_path / "ckpt"
    shutil.copytree(paths["pretrain"], bad, ignore=shutil.ignore_patterns("manifest.json"))
    cfg = json.loads((bad / "config.json").read_text())
    cfg["vocab_size"] = 100  # the tokenizer has ~400 tokens
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"tokenizer does not match the checkpoint: it has \d+ tokens, "
                                         r"config.json vocab_size is 100"):
        check_checkpoint(bad)
    rows = read_rows(f"{paths['world']}/rl.parquet", "prompts")
    with pytest.raises(ValueError, match="tokenizer does not match"):
        run_grpo(recipe.r1_zero, bad, rows, tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "out").exists()
    (bad / "config.json").unlink()
    with pytest.raises(ValueError, match=rf"{bad}: not a Hugging Face checkpoint directory"):
        check_checkpoint(bad)


def test_unknown_hub_model_id_is_named_and_nothing_is_written(smoke_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the machine has no hub; a user's typo fails the same way
    recipe, store_root, _ = smoke_run
    root = tmp_path / "store"
    shutil.copytree(store_root, root, ignore=shutil.ignore_patterns("work", "tmp"))
    bad = recipe.model_copy(update={"store": str(root),
                                    "pretrain": recipe.pretrain.model_copy(update={"import_from": "no-such-org/no-model"})})
    before = _objects(root)
    with pytest.raises(ValueError, match="pretrain.import_from: cannot load causal LM 'no-such-org/no-model'"):
        pipeline(recipe=bad, until_stage="pretrain")
    assert _objects(root) == before and not any((root / "tmp").iterdir())


def test_remote_code_is_not_run_unless_the_recipe_allows_it(tmp_path):
    from r1flow.tasks.pretrain import import_base

    src = tmp_path / "evil"
    src.mkdir()
    marker = tmp_path / "pwned"
    (src / "config.json").write_text(json.dumps({"model_type": "r1flow_evil", "architectures": ["Evil"],
                                                 "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                              "AutoModelForCausalLM": "evil.Evil"}}))
    (src / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ValueError, match="pretrain.import_from: cannot load causal LM"):
        import_base(str(src), tmp_path, tmp_path / "out", {})
    assert not marker.exists()


def test_reward_that_raises_fails_the_stage_without_an_artifact(store_copy, monkeypatch):
    from r1flow.data import rewards

    def broken(completions, **_):
        raise ZeroDivisionError("verifier bug")

    monkeypatch.setitem(rewards.REWARDS, "accuracy", broken)
    recipe, root, _ = store_copy
    before = _objects(root)
    with pytest.raises(RuntimeError, match=r"reward accuracy raised: ZeroDivisionError\('verifier bug'\)"):
        pipeline(recipe=recipe, from_stage="r1_zero", force=["r1_zero"])
    assert _objects(root) == before and not any((root / "tmp").iterdir())


def test_reward_that_always_hangs_stops_the_stage(smoke_run, tmp_path, monkeypatch):
    from r1flow.data import rewards
    from r1flow.models.train.grpo import run_grpo

    def hang(completions, **_):
        time.sleep(30)

    monkeypatch.setitem(rewards.REWARDS, "hang", hang)
    recipe, _, paths = smoke_run
    rows = read_rows(f"{paths['world']}/rl.parquet", "prompts")
    cfg = recipe.r1_zero.model_copy(update={"steps": 4, "reward_timeout_s": 0.5, "reward_timeout_patience": 2,
                                            "rewards": {"accuracy": 1.0, "hang": 1.0}})
    with pytest.raises(RuntimeError, match=r"reward 'hang' timed out \(0.5s\) on 2 steps in a row"):
        run_grpo(cfg, paths["pretrain"], rows, tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "out").exists()


def test_nan_loss_stops_pretraining_without_an_artifact(pretrain_data, tmp_path, monkeypatch):
    """A numerical blow-up (simulated: one weight of the freshly built model set to NaN) stops the
    stage at the first step with the step and lr in the message; nothing is sealed."""
    import torch

    from r1flow.models.train import pretrain as pt
    from r1flow.recipe import load_recipe

    build = pt.build_model

    def poisoned(*a, **k):
        model = build(*a, **k)
        with torch.no_grad():
            model.get_input_embeddings().weight[5:9] = float("nan")
        return model

    monkeypatch.setattr(pt, "build_model", poisoned)
    corpus, heldout, tok = pretrain_data
    cfg = load_recipe(ROOT / "configs/smoke.yaml").pretrain.model_copy(update={"steps": 4, "checkpoint_every": 2})
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(FloatingPointError, match=r"pretrain: loss is nan at step 0 \(lr "):
        with store.write(stage="pretrain", kind="checkpoint", config={}, parents=[], code_version="t",
                         cache_key="k") as (out, _):
            pt.pretrain(cfg, corpus, heldout, tok, out, tmp_path / "work")
    assert not _objects(store.root) and not any((store.root / "tmp").iterdir())


def test_empty_prompt_set_after_filtering_is_named(smoke_run):
    from r1flow.models.train.grpo import GRPOStageConfig, build_prompt_dataset

    _, _, paths = smoke_run
    rows = [r for r in read_rows(f"{paths['world']}/rl.parquet", "prompts") if r["family"] == "add"]
    with pytest.raises(ValueError, match=r"no RL prompts for families \['countdown'\]"):
        build_prompt_dataset(rows, None, GRPOStageConfig(families=["countdown"]))


def test_full_disk_during_an_artifact_write(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path / "store")
    real = Path.write_text

    def full(self, *a, **k):
        if self.name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left on device"):
        with store.write(stage="world", kind="dataset", config={}, parents=[], code_version="c", cache_key="k") as (d, _):
            (d / "a.json").write_bytes(b"{}")
    assert not _objects(store.root) and not any((store.root / "tmp").iterdir()) and store.lookup("k") is None


def test_pickles_are_refused_when_written_and_when_read(smoke_run, tmp_path):
    import torch

    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactError, match=r"pickle-capable.*\['evil.pt'\]"):
        with store.write(stage="world", kind="dataset", config={}, parents=[], code_version="c", cache_key="k") as (d, _):
            torch.save({"x": 1}, d / "evil.pt")
    assert not _objects(store.root)
    # A pickle planted next to a checkpoint's safetensors (the file transformers would prefer to load).
    _, store_root, paths = smoke_run
    root = tmp_path / "copy"
    shutil.copytree(store_root, root, ignore=shutil.ignore_patterns("work", "tmp"))
    ckpt = root / "objects" / Path(paths["pretrain"]).name
    torch.save({"x": 1}, ckpt / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match=r"refusing to read pickle-capable file.*pytorch_model.bin"):
        ArtifactStore(root).ref(ckpt.name)
    # The stages' own checkpoints hold none (TRL's training_args.bin is dropped).
    for name in _objects(Path(store_root)):
        assert not [p for p in (Path(store_root) / "objects" / name).rglob("*") if p.suffix in (".bin", ".pt", ".pkl")]


def test_cli_turns_a_failed_run_into_a_message_and_exit_1(store_copy):
    recipe, root, paths = store_copy
    f = paths["world"] / "eval.parquet"
    f.chmod(0o644)
    f.write_bytes(b"garbage")
    out = subprocess.run([sys.executable, "-m", "r1flow.cli", "run", "-r", "configs/smoke.yaml", "--store", str(root)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env=_env())
    assert out.returncode == 1, out.stderr[-2000:]
    assert "error: ArtifactError" in out.stderr and "eval.parquet was changed after it was written" in out.stderr


# ---- crashes and concurrency -------------------------------------------------------------------

# The log line of a stage's first task run: runs are named by node ("world", "distill:qwen2_s").
STAGE_MARK = {s: re.compile(rf"Task run '{s}[':]") for s in ("world", "tokenizer", "pretrain", "r1_zero", "cold_start", "sft_cold",
                                             "reasoning_rl", "rejection_sampling", "sft_mix", "reward_model",
                                             "final_rl", "student_pretrain", "distill_traces", "distill",
                                             "student_rl", "evaluate", "export", "report")}
# Pretraining and R1-Zero (resumable checkpoints, the longest writes) get two kills each, the others one:
# each trial is a CLI start and a cached re-run up to the stage (about 22 s), and make test must stay
# within CI's 30 minutes.
TRIALS = {s: 2 if s in ("pretrain", "r1_zero") else 1 for s in STAGE_MARK}


def _cli(store: Path, *extra: str) -> subprocess.Popen:
    """`r1flow run` on the smoke recipe in its own process group, talking to the session's Prefect API
    (so each process skips starting a temporary server of its own)."""
    return subprocess.Popen([sys.executable, "-m", "r1flow.cli", "run", "-r", "configs/smoke.yaml", "--store",
                             str(store), *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=_env())


def _env() -> dict:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or ""}


def _ids(root: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name in _objects(root):
        out.setdefault(ArtifactStore(root).manifest(name).stage, set()).add(name)
    return out


def _digests(root: Path, stage: str, path: str) -> set[str]:
    store = ArtifactStore(root)
    return {f.sha256 for name in _objects(root) if (m := store.manifest(name)).stage == stage
            for f in m.files if f.path == path}


def test_sigkill_inside_every_stage_never_leaves_a_partial_artifact(smoke_run, tmp_path):
    """One trial per stage (two for pretrain and r1_zero): start the CLI, SIGKILL its process group at a random moment after the
    stage's task starts; then a clean re-run finishes and the deterministic stages have the ids (or,
    for pretraining, the weights) of the uninterrupted run (the session's smoke run)."""
    _, ref_root, _ = smoke_run
    root = tmp_path / "store"
    rng = random.Random(7)
    killed_in = []
    for stage in [s for s in STAGE_MARK for _ in range(TRIALS[s])]:
        proc = _cli(root)
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            if STAGE_MARK[stage].search(line) or time.monotonic() > deadline:
                break
        if proc.poll() is None:
            time.sleep(rng.uniform(0.0, 3.0))
            os.killpg(proc.pid, signal.SIGKILL)
            killed_in.append(stage)
        proc.wait()
        proc.stdout.close()
        _assert_whole(root)
    assert len(killed_in) >= 13, killed_in  # most of the 20 kills landed while the run was still going
    final = _cli(root)
    log = final.communicate(timeout=900)[0]
    assert final.returncode == 0, log[-3000:]
    _assert_whole(root)
    got, ref = _ids(root), _ids(Path(ref_root))
    for stage in ("world", "tokenizer"):  # deterministic stages: the same ids
        assert got[stage] & ref[stage], f"{stage}: {got[stage]} vs uninterrupted {ref[stage]}"
    # Pretraining's payload also holds measured throughput (tokens/s, MFU per step), so its id differs
    # from run to run; its weights are deterministic on CPU, resumed or not: bit-identical safetensors.
    assert _digests(root, "pretrain", "model.safetensors") == _digests(Path(ref_root), "pretrain", "model.safetensors")


def test_two_runs_on_one_store_at_once(prefect_harness, tmp_path):
    root = tmp_path / "store"
    a, b = _cli(root, "--until", "pretrain"), _cli(root, "--until", "pretrain")
    logs = [p.communicate(timeout=900)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, [lg[-2000:] for lg in logs]
    _assert_whole(root)
    ids = _ids(root)
    assert {s: len(v) for s, v in ids.items()} == {"world": 1, "tokenizer": 1, "pretrain": 1}
