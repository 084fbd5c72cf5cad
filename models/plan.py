"""Compute and cost planner: what a recipe will cost before anything runs.

Counts, per stage: parameters (total and activated per token), training FLOPs (6 x activated
parameters x tokens plus causal attention, `train_flops_per_token` of the model config), rollout
generation FLOPs (2 x activated parameters per generated or prefilled token), memory per GPU for
weights, gradients, optimizer state, activations and the rollout engine (its weights and KV cache),
following each stage's own processes, sharding, LoRA, micro-batches and gradient checkpointing
(`TrainingSetup`), GPU-hours at a stated MFU (or at a measured throughput), wall hours on the planned
GPUs and dollars at a stated hourly price.

`REFERENCES` reproduces two published training budgets from their own inputs (DeepSeek-V3's
2.788M H800 GPU-hours, Llama-3.1-405B's 30.84M H100 GPU-hours); tests/test_plan.py holds both
within 5%. This module does not run or time anything except, for `gpu: cpu`, one matmul probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from r1flow.models.arch.deepseek_v3.config import FLAVORS as MOE_FLAVORS
from r1flow.models.arch.deepseek_v3.config import MoEModelConfig
from r1flow.models.arch.dense import FLAVORS as DENSE_FLAVORS
from r1flow.models.arch.dense import DenseModelConfig

ModelShape = MoEModelConfig | DenseModelConfig

# Dense BF16 tensor-core peak (no sparsity) and memory, from the vendors' spec sheets. The H800 is
# the H100 SXM with reduced NVLink bandwidth: the same FLOP rate (DeepSeek-V3 report sec. 3.1).
GPUS: dict[str, tuple[float, float]] = {
    "A100": (312e12, 80), "H100": (989e12, 80), "H800": (989e12, 80), "H200": (989e12, 141),
    "B200": (2250e12, 180),
}


class PlanConfig(BaseModel):
    """Hardware and efficiency assumptions of `r1flow plan`. Nothing here changes what a stage computes."""

    model_config = ConfigDict(extra="forbid")

    gpu: Literal["A100", "H100", "H800", "H200", "B200", "cpu"] = Field(
        "H100", description="Accelerator type; `cpu` measures this machine's matmul rate instead of a spec sheet.")
    gpus: int = Field(8, ge=1, description="Accelerators the run is spread over (wall hours = GPU-hours / gpus).")
    peak_tflops: float | None = Field(None, gt=0, description="Override of the dense BF16 peak per accelerator.")
    mfu: float = Field(0.35, gt=0, le=1, description="Model FLOPs utilisation of training steps.")
    rollout_mfu: float = Field(
        0.05, gt=0, le=1, description="MFU of generation; decoding is memory-bound, so far below training's.")
    gpu_hours_per_trillion_tokens: float | None = Field(
        None, gt=0, description="Measured pretraining throughput at pretrain.seq_len; replaces `mfu` for "
                                "pretraining (other sequence lengths scale by FLOPs per token).")
    goodput: float = Field(
        1.0, gt=0, le=1, description="Share of reserved GPU time spent in useful steps (failures, restarts, "
                                     "checkpointing take the rest; Llama 3 reports >90%).")
    price_per_gpu_hour: float = Field(2.0, ge=0, description="Dollars per GPU-hour (DeepSeek-V3 report: $2, H800).")
    prompt_tokens: int = Field(128, ge=1, description="Mean prompt length in tokens of RL and evaluation prompts.")
    completion_fill: float = Field(
        0.5, gt=0, le=1, description="Expected mean completion length as a share of the stage's maximum.")
    weight_bytes: int = Field(2, ge=1, description="Bytes per parameter of the training weights (bf16: 2).")
    grad_bytes: int = Field(4, ge=1, description="Bytes per parameter of the gradients (fp32 accumulation: 4).")
    optimizer_bytes: int = Field(
        12, ge=0, description="Bytes per parameter of optimizer state: fp32 master + two AdamW moments = 12 "
                              "(DeepSeek-V3 keeps the moments in bf16: 8).")
    kv_bytes: int = Field(2, ge=1, description="Bytes per cached key/value element (bf16: 2, fp8: 1).")
    vocab_size: int | None = Field(
        None, ge=1, description="Vocabulary of an imported base (pretrain.import_from) for the plan; default: "
                                "tokenizer.vocab_size. Give the base's shape in pretrain.model likewise.")
    benchmark_problems: int = Field(
        500, ge=1, description="Problems assumed per imported benchmark without max_problems (MATH-500: 500).")

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        if self.gpu == "cpu" and self.gpus != 1:
            raise ValueError(f"gpu=cpu plans one machine; got gpus={self.gpus}")
        return self

    def peak_flops(self) -> float:
        if self.peak_tflops:
            return self.peak_tflops * 1e12
        if self.gpu == "cpu":
            import torch
            from r1flow.models.train.pretrain import matmul_peak_flops

            return matmul_peak_flops(torch.device("cpu"), torch.float32)
        return GPUS[self.gpu][0]


@dataclass
class StageEstimate:
    stage: str
    tokens: float  # tokens processed (trained, or generated + prefilled)
    flops: float
    gpu_hours: float
    gpus: int
    price_per_gpu_hour: float
    memory_gib: dict[str, float] = field(default_factory=dict)  # per GPU
    detail: str = ""

    @property
    def wall_hours(self) -> float:
        return self.gpu_hours / self.gpus

    @property
    def dollars(self) -> float:
        return self.gpu_hours * self.price_per_gpu_hour


def _hours(flops: float, plan: PlanConfig, mfu: float, peak: float) -> float:
    return flops / (peak * mfu * plan.goodput) / 3600


@dataclass
class TrainingSetup:
    """How a training stage holds its model, from its config (`training_setup`): one process per GPU."""

    processes: int = 1              # nproc * nnodes
    sharded: bool = False           # parallel: fsdp (weights, gradients, optimizer state split over processes)
    lora_rank: int | None = None    # LoRA: only adapters have gradients and optimizer state
    checkpointing: bool = False     # gradient_checkpointing
    micro_sequences: float = 1.0    # sequences one process holds in a forward
    seq_len: int = 1                # their length (the longest the stage allows)


def training_setup(cfg, sequences_per_step: float, seq_len: int) -> TrainingSetup:
    """A stage config's setup (models/train/launch.py `Processes` fields; pretraining's batch is per
    process and has no micro-batches, the TRL stages' is global)."""
    world = cfg.nproc * cfg.nnodes
    per_process = sequences_per_step / world / getattr(cfg, "gradient_accumulation_steps", 1)
    lora = getattr(cfg, "lora", None)
    return TrainingSetup(world, cfg.parallel == "fsdp" and world > 1, lora.r if lora else None,
                         cfg.gradient_checkpointing, per_process, seq_len)


# Activation bytes per token per layer in bf16 with flash attention (no score matrix): 34 x hidden,
# Korthikanti et al. 2022 (arXiv 2205.05198) sec. 4.1; with checkpointing each layer keeps its input
# (2 x hidden) and one layer at a time is recomputed in full. Logits: fp32 values and their gradient.
ACTIVATION_BYTES_PER_HIDDEN = 34


def training_memory_gib(model: ModelShape, vocab: int, plan: PlanConfig,
                        setup: TrainingSetup | None = None) -> dict[str, float]:
    """Per GPU: weights (all), gradients and optimizer state (trainable ones: LoRA's adapters, about
    2r/hidden of the parameters, an upper bound), each divided over the processes when sharded (plus the
    one layer FSDP gathers at a time), and the activations of one micro-batch."""
    setup = setup or TrainingSetup()
    gib, total = 2**30, model.param_counts(vocab)["total"]
    shards = setup.processes if setup.sharded else 1
    trainable = min(total, total * 2 * setup.lora_rank / model.hidden_size) if setup.lora_rank else total
    tokens = setup.micro_sequences * setup.seq_len
    per_layer = ACTIVATION_BYTES_PER_HIDDEN * tokens * model.hidden_size
    layers = (model.num_hidden_layers * 2 * tokens * model.hidden_size + per_layer if setup.checkpointing
              else model.num_hidden_layers * per_layer)
    mem = {"weights": total * plan.weight_bytes / shards / gib,
           "grads": trainable * plan.grad_bytes / shards / gib,
           "optimizer": trainable * plan.optimizer_bytes / shards / gib,
           "activations": (layers + 8 * tokens * vocab) / gib}
    if shards > 1:  # FSDP gathers one decoder layer's whole weights for its forward and backward
        mem["gathered_layer"] = total / model.num_hidden_layers * plan.weight_bytes / gib
    return mem


def pretrain_estimate(model: ModelShape, vocab: int, tokens: float, seq_len: int, plan: PlanConfig,
                      peak: float, stage: str = "pretrain", measured_seq_len: int | None = None,
                      setup: TrainingSetup | None = None) -> StageEstimate:
    """Training on `tokens` tokens at `seq_len`. With a measured throughput the hours scale by this
    stage's FLOPs per token over the FLOPs per token at `measured_seq_len` (default: `seq_len`)."""
    fpt = model.train_flops_per_token(vocab, seq_len)
    flops = fpt * tokens
    mem = training_memory_gib(model, vocab, plan, setup)
    if plan.gpu_hours_per_trillion_tokens:
        return StageEstimate(stage, tokens, flops, plan.gpu_hours_per_trillion_tokens * tokens / 1e12 * fpt
                             / model.train_flops_per_token(vocab, measured_seq_len or seq_len), plan.gpus,
                             plan.price_per_gpu_hour, mem,
                             f"{plan.gpu_hours_per_trillion_tokens:,.0f} GPU-h per 1T tokens (measured)")
    return StageEstimate(stage, tokens, flops, _hours(flops, plan, plan.mfu, peak), plan.gpus,
                         plan.price_per_gpu_hour, mem, f"MFU {plan.mfu:.0%}")


def rl_estimate(model: ModelShape, vocab: int, steps: int, sequences_per_step: int, max_completion: int,
                beta: float, plan: PlanConfig, peak: float, stage: str, cfg) -> StageEstimate:
    """GRPO: per step, generate `sequences_per_step` completions (prefill + decode at `rollout_mfu`), then
    one policy forward+backward over them and, when beta > 0, a reference-model forward (at `mfu`).
    Memory with the stage config `cfg`: its training setup, the reference model (beta > 0 without LoRA,
    sharded like the policy) and, unless it samples on servers, each process's colocated engine (what
    vLLM reserves: engine.memory_fraction of the GPU)."""
    completion = max_completion * plan.completion_fill
    seq = plan.prompt_tokens + completion
    tokens = steps * sequences_per_step * seq
    n_active = model.param_counts(vocab)["active"]
    gen = 2 * n_active * tokens
    fpt = model.train_flops_per_token(vocab, int(seq))
    train = fpt * tokens * (1 + (1 / 3 if beta > 0 else 0))  # reference forward = a third of fwd+bwd
    kv = sequences_per_step * (plan.prompt_tokens + max_completion) * model.kv_bytes_per_token(plan.kv_bytes)
    setup = training_setup(cfg, sequences_per_step, plan.prompt_tokens + max_completion)
    mem = training_memory_gib(model, vocab, plan, setup)
    if beta > 0 and setup.lora_rank is None:
        mem["reference"] = mem["weights"]
    if not (cfg.engine.servers or cfg.engine.launch_servers):
        # vLLM reserves engine.memory_fraction of the GPU for its weights and KV cache, whatever they
        # need (less KV room only means fewer sequences decoded at once); on CPU, what they need.
        tp, cap = cfg.engine.tensor_parallel_size, GPUS.get(plan.gpu, (0, None))[1]
        weights = model.param_counts(vocab)["total"] * plan.weight_bytes / tp / 2**30
        need = weights + kv / setup.processes / tp / 2**30
        # the weights must fit in the reservation (a larger one is what the GPU must give)
        mem["engine"] = max(cfg.engine.memory_fraction * cap, weights) if cap else need
    hours = _hours(gen, plan, plan.rollout_mfu, peak) + _hours(train, plan, plan.mfu, peak)
    return StageEstimate(stage, tokens, gen + train, hours, plan.gpus, plan.price_per_gpu_hour, mem,
                         f"generation {gen:.2e} FLOPs at MFU {plan.rollout_mfu:.0%}, "
                         f"training {train:.2e} at {plan.mfu:.0%}")


def generation_estimate(model: ModelShape, vocab: int, sequences: int, max_tokens: int, plan: PlanConfig,
                        peak: float, stage: str) -> StageEstimate:
    tokens = sequences * (plan.prompt_tokens + max_tokens * plan.completion_fill)
    flops = 2 * model.param_counts(vocab)["active"] * tokens
    # vLLM batches at most max_num_seqs (default 256) sequences at once: that bounds the live KV cache.
    kv = min(sequences, 256) * (plan.prompt_tokens + max_tokens) * model.kv_bytes_per_token(plan.kv_bytes)
    mem = {"weights": model.param_counts(vocab)["total"] * plan.weight_bytes / plan.gpus / 2**30,
           "kv_cache": kv / plan.gpus / 2**30}
    return StageEstimate(stage, tokens, flops, _hours(flops, plan, plan.rollout_mfu, peak), plan.gpus,
                         plan.price_per_gpu_hour, mem, f"MFU {plan.rollout_mfu:.0%}")


def sft_estimate(model: ModelShape, vocab: int, sequences: float, seq_len: int, plan: PlanConfig, peak: float,
                 stage: str, setup: TrainingSetup | None = None) -> StageEstimate:
    """Supervised training over `sequences` sequences of about `seq_len` tokens (epochs included);
    memory for `setup` (micro-batches of the stage's longest sequences)."""
    tokens = sequences * seq_len
    flops = model.train_flops_per_token(vocab, seq_len) * tokens
    return StageEstimate(stage, tokens, flops, _hours(flops, plan, plan.mfu, peak), plan.gpus, plan.price_per_gpu_hour,
                         training_memory_gib(model, vocab, plan, setup), f"MFU {plan.mfu:.0%}")


@dataclass
class PlanContext:
    """What every stage estimator shares: the hardware plan, its peak, the MoE line's model shape
    (also the teacher's and, as an upper bound, every evaluated checkpoint's) and the vocabulary."""

    plan: PlanConfig
    peak: float
    model: ModelShape
    vocab: int
    evaluated_checkpoints: int = 0


# A stage's estimator: its row (None: the recipe gives it nothing to compute, e.g. an imported base).
# r1flow/stages.py names one per stage; plan_recipe runs those of the stages a run needs.
Estimator = Callable[[Any, PlanContext], "StageEstimate | None"]


def estimate_pretrain(recipe, c: PlanContext) -> StageEstimate | None:
    p = recipe.pretrain
    if p.import_from is not None:
        return None
    return pretrain_estimate(c.model, c.vocab, p.steps * p.batch_size * p.nproc * p.nnodes * p.seq_len, p.seq_len,
                             c.plan, c.peak, setup=training_setup(p, p.batch_size * p.nproc * p.nnodes, p.seq_len))


def estimate_rl(section: str) -> Estimator:
    """A GRPO stage of the MoE line (r1_zero, reasoning_rl, final_rl)."""
    def est(recipe, c: PlanContext) -> StageEstimate:
        r = getattr(recipe, section)
        return rl_estimate(c.model, c.vocab, r.steps, r.prompts_per_step * r.num_generations, r.max_completion_length,
                           r.beta, c.plan, c.peak, section, r)
    return est


def estimate_sampling(section: str) -> Estimator:
    """Sampling a dataset from a policy (cold_start, rejection_sampling)."""
    def est(recipe, c: PlanContext) -> StageEstimate:
        s = getattr(recipe, section)
        prompts = len(s.families) * s.prompts_per_family
        return generation_estimate(c.model, c.vocab, prompts * s.sampling.n, s.sampling.max_tokens, c.plan, c.peak,
                                   section)
    return est


def estimate_sft(section: str, data: str) -> Estimator:
    """SFT of the base on a sampled dataset (sft_cold on cold_start, sft_mix on rejection_sampling). The
    data size is an upper bound (every prompt yields its maximum number of kept samples); the sequence
    is the prompt plus the filled completion."""
    def est(recipe, c: PlanContext) -> StageEstimate:
        d = getattr(recipe, data)
        samples = len(d.families) * d.prompts_per_family * d.max_per_prompt
        if hasattr(d, "non_reasoning_share"):
            samples /= 1 - d.non_reasoning_share
        seq = int(c.plan.prompt_tokens + recipe.cold_start.sampling.max_tokens * c.plan.completion_fill)
        s = getattr(recipe, section)
        return sft_estimate(c.model, c.vocab, samples * s.epochs, seq, c.plan, c.peak, section,
                            training_setup(s, s.batch_size, s.max_length))
    return est


def estimate_reward_model(recipe, c: PlanContext) -> StageEstimate:
    """The policy's answers to the instruction prompts plus pair training (an upper bound on pairs)."""
    from r1flow.data.world import INSTRUCTION_FAMILIES

    rm, plan = recipe.reward_model, c.plan
    prompts = len([f for f in rm.families if f in INSTRUCTION_FAMILIES]) * rm.prompts_per_family
    sampled = generation_estimate(c.model, c.vocab, prompts * rm.sampling.n, rm.sampling.max_tokens, plan, c.peak, "")
    trained = sft_estimate(c.model, c.vocab, prompts * rm.pairs_per_prompt * 2 * rm.epochs,
                           int(plan.prompt_tokens + rm.sampling.max_tokens), plan, c.peak, "",
                           training_setup(rm, 2 * rm.batch_size, rm.max_length))  # a pair is two sequences
    return StageEstimate("reward_model", sampled.tokens + trained.tokens, sampled.flops + trained.flops,
                         sampled.gpu_hours + trained.gpu_hours, plan.gpus, plan.price_per_gpu_hour,
                         trained.memory_gib, "policy answers + pair training")


def _sum(stage: str, parts: list[StageEstimate], detail: str = "") -> StageEstimate | None:
    """One row for a stage that runs once per student (None: no student the planner can size)."""
    if not parts:
        return None
    mem = max((p.memory_gib for p in parts), key=lambda m: sum(m.values()), default={})  # the largest student
    return StageEstimate(stage, sum(p.tokens for p in parts), sum(p.flops for p in parts),
                         sum(p.gpu_hours for p in parts), parts[0].gpus, parts[0].price_per_gpu_hour, mem, detail)


def _dense(recipe) -> list:
    """Stage 9's students whose shape the recipe gives (imported students are counted by their traces
    only: their size is not known before they are downloaded)."""
    return [s for s in recipe.distill.students if s.pretrain.import_from is None]


def estimate_distill_traces(recipe, c: PlanContext) -> StageEstimate:
    t = recipe.distill.traces
    prompts = len(t.families) * t.prompts_per_family
    return generation_estimate(c.model, c.vocab, prompts * t.sampling.n, t.sampling.max_tokens, c.plan, c.peak,
                               "distill_traces")


def estimate_student_pretrain(recipe, c: PlanContext) -> StageEstimate | None:
    dense = _dense(recipe)
    def est(p):
        world = p.nproc * p.nnodes
        return pretrain_estimate(p.model, c.vocab, p.steps * p.batch_size * world * p.seq_len, p.seq_len, c.plan,
                                 c.peak, setup=training_setup(p, p.batch_size * world, p.seq_len))
    return _sum("student_pretrain", [est(s.pretrain) for s in dense], ", ".join(s.name for s in dense))


def estimate_distill(recipe, c: PlanContext) -> StageEstimate | None:
    d, dense = recipe.distill, _dense(recipe)
    t = d.traces
    samples = len(t.families) * t.prompts_per_family * t.max_per_prompt / (1 - t.non_reasoning_share)
    seq = int(c.plan.prompt_tokens + t.sampling.max_tokens * c.plan.completion_fill)
    return _sum("distill", [sft_estimate(s.pretrain.model, c.vocab, samples * d.sft.epochs, seq, c.plan, c.peak,
                                         "distill", training_setup(d.sft, d.sft.batch_size, d.sft.max_length))
                            for s in dense], ", ".join(s.name for s in dense))


def estimate_student_rl(recipe, c: PlanContext) -> StageEstimate | None:
    r, dense = recipe.distill.rl, _dense(recipe)
    return _sum("student_rl", [rl_estimate(s.pretrain.model, c.vocab, r.steps, r.prompts_per_step * r.num_generations,
                                           r.max_completion_length, r.beta, c.plan, c.peak, "student_rl", r)
                               for s in dense], ", ".join(s.name for s in dense))


def estimate_evaluate(recipe, c: PlanContext) -> StageEstimate:
    """Every evaluated checkpoint, at the MoE line's size (an upper bound for the students)."""
    from r1flow.data.world import INSTRUCTION_FAMILIES, REASONING_FAMILIES

    ev = recipe.evaluate
    fams = (ev.families or REASONING_FAMILIES + INSTRUCTION_FAMILIES) if ev.world else []
    samples = len(fams) * ev.max_per_family * ev.sampling.n
    tokens = samples * ev.sampling.max_tokens
    for b in ev.benchmarks:  # an imported benchmark's size is unknown before import: max_problems or the plan's
        sampling = b.sampling or ev.sampling
        n = (b.max_problems or c.plan.benchmark_problems) * sampling.n
        samples, tokens = samples + n, tokens + n * sampling.max_tokens
    return generation_estimate(c.model, c.vocab, c.evaluated_checkpoints * samples, round(tokens / max(samples, 1)),
                               c.plan, c.peak, "evaluate")


def plan_recipe(recipe, estimators: list[Estimator], evaluated_checkpoints: int, peak: float | None = None) -> dict:
    """The rows of `estimators` (r1flow/stages.py: `plan` passes those of the stages a run needs, in DAG
    order) for `recipe` (an r1flow.recipe.Recipe), with the MoE line's parameter counts."""
    plan: PlanConfig = recipe.plan
    ctx = PlanContext(plan, peak or plan.peak_flops(), recipe.pretrain.model,
                      plan.vocab_size or recipe.tokenizer.vocab_size, evaluated_checkpoints)
    pc = ctx.model.param_counts(ctx.vocab)
    rows = [row for est in estimators if (row := est(recipe, ctx)) is not None]
    return {"params_total": pc["total"], "params_active": pc["active"], "peak_flops": ctx.peak, "stages": rows}


# ---- published budgets the planner must reproduce ----------------------------------------------
@dataclass
class Phase:
    name: str
    tokens: float
    seq_len: int
    mfu: float | None = None  # None: use the reference's measured throughput


@dataclass
class Reference:
    name: str
    model: ModelShape
    vocab: int
    plan: PlanConfig
    measured_seq_len: int
    phases: list[Phase]
    published_gpu_hours: float
    published_dollars: float | None
    source: str
    left_out: str


REFERENCES: list[Reference] = [
    Reference(
        "DeepSeek-V3 (671B MoE, 37B activated)", MOE_FLAVORS["v3_671b"], 129280,
        PlanConfig(gpu="H800", gpus=2048, gpu_hours_per_trillion_tokens=180_000, price_per_gpu_hour=2.0,
                   optimizer_bytes=8),
        4096,
        [Phase("pre-training", 14.8e12, 4096),
         # Sec. 4.3: two extension phases of 1000 steps, 32K x 1920 and 128K x 480 sequences.
         Phase("context extension 32K", 1000 * 1920 * 32768, 32768),
         Phase("context extension 128K", 1000 * 480 * 131072, 131072)],
        2.788e6, 5.576e6,
        "DeepSeek-V3 technical report (arXiv 2412.19437), Table 1 and sec. 1: 180K H800 GPU-hours per "
        "trillion tokens; 2664K pre-training + 119K context extension + 5K post-training = 2788K; $2/GPU-h",
        "post-training (5K GPU-h): its token counts are not published"),
    Reference(
        "Llama-3.1-405B (dense)", DENSE_FLAVORS["llama3_405b"], 128256,
        PlanConfig(gpu="H100", gpus=16384, goodput=0.9, price_per_gpu_hour=2.0),
        8192,
        # Sec. 3.4: 15.6T tokens in all, ~800B of them in six long-context stages from 8K to 128K
        # (taken here at their mean length, 64K). Table 4: BF16 MFU 41% at 8K and 38% at 128K on 16K GPUs.
        [Phase("initial pre-training", 15.6e12 - 0.8e12, 8192, mfu=0.41),
         Phase("long-context pre-training", 0.8e12, 65536, mfu=0.38)],
        30.84e6, None,
        "Llama 3 paper (arXiv 2407.21783) sec. 3.3-3.4 and Table 4; 30.84M H100 GPU-hours from the "
        "Llama 3.1 model card; goodput 0.9 from the paper's '>90% effective training time'",
        "annealing (40M tokens) and post-training"),
]


def reproduce(ref: Reference) -> dict:
    """Planner estimate of a published budget: per phase and in total, with the relative error."""
    peak = ref.plan.peak_flops()
    phases = []
    for ph in ref.phases:
        plan = ref.plan.model_copy(update={"mfu": ph.mfu}) if ph.mfu else ref.plan
        phases.append(pretrain_estimate(ref.model, ref.vocab, ph.tokens, ph.seq_len, plan, peak, ph.name,
                                        ref.measured_seq_len))
    hours = sum(p.gpu_hours for p in phases)
    dollars = sum(p.dollars for p in phases)
    return {"name": ref.name, "phases": phases, "gpu_hours": hours, "dollars": dollars,
            "published_gpu_hours": ref.published_gpu_hours, "published_dollars": ref.published_dollars,
            "rel_error_hours": hours / ref.published_gpu_hours - 1,
            "rel_error_dollars": dollars / ref.published_dollars - 1 if ref.published_dollars else None}


def _fmt(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_plan(name: str, result: dict, plan: PlanConfig, measured_s: dict[str, float] | None = None) -> str:
    """Markdown: one row per stage; with `measured_s`, the measured seconds next to the estimate."""
    lines = [f"# Plan: {name}",
             (f"Parameters: {_fmt(result['params_total'])} total, {_fmt(result['params_active'])} activated per "
              f"token. Hardware: {plan.gpus} x {plan.gpu} at {result['peak_flops'] / 1e12:.3g} TFLOP/s peak, "
              f"${plan.price_per_gpu_hour}/GPU-h, goodput {plan.goodput:.0%}."), "",
             "| stage | tokens | FLOPs | GPU-hours | wall | $ | memory/GPU (GiB) | basis |"
             + (" measured wall | estimate/measured |" if measured_s is not None else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if measured_s is not None else "")]
    cap = GPUS.get(plan.gpu, (0, None))[1]
    for s in result["stages"]:
        mem = ", ".join(f"{k} {v:.3g}" for k, v in s.memory_gib.items())
        if cap and sum(s.memory_gib.values()) > cap:
            mem += (f" (**{sum(s.memory_gib.values()):.0f} > {cap:.0f} GiB: does not fit; more processes with "
                    "parallel: fsdp, gradient_accumulation_steps, gradient_checkpointing or lora**)")
        row = (f"| {s.stage} | {_fmt(s.tokens)} | {s.flops:.3g} | {s.gpu_hours:.4g} | {_wall(s.wall_hours * 3600)} "
               f"| {s.dollars:,.2f} | {mem} | {s.detail} |")
        if measured_s is not None:
            m = measured_s.get(s.stage)
            row += (f" {_wall(m)} | {s.wall_hours * 3600 / m:.3g} |" if m else " not run | |")
        lines.append(row)
    tot = sum(s.gpu_hours for s in result["stages"])
    lines += ["", f"Total: {tot:.4g} GPU-hours, ${tot * plan.price_per_gpu_hour:,.2f}."]
    return "\n".join(lines)


def format_references() -> str:
    lines = ["# Published training budgets, reproduced by the planner", "",
             "| run | planner GPU-hours | published | error | planner $ | published $ | left out |",
             "|---|---|---|---|---|---|---|"]
    for ref in REFERENCES:
        r = reproduce(ref)
        pub_d = f"{r['published_dollars'] / 1e6:.3f}M" if r["published_dollars"] else "-"
        lines.append(f"| {r['name']} | {r['gpu_hours'] / 1e6:.3f}M | {r['published_gpu_hours'] / 1e6:.3f}M | "
                     f"{r['rel_error_hours']:+.1%} | {r['dollars'] / 1e6:.3f}M | {pub_d} | {ref.left_out} |")
    lines += [""] + [f"- {ref.name}: {ref.source}." for ref in REFERENCES]
    return "\n".join(lines)


def _wall(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
