"""The one way a TRL/transformers trainer's result becomes a checkpoint artifact's payload.

`Trainer.save_model` also pickles the TrainingArguments into `training_args.bin`; artifacts hold no
pickle (data/store.py refuses them at seal and read) and the manifest already records the stage config,
so the file is removed here, once, for every trainer (SFT, GRPO, reward model).
"""

from __future__ import annotations

from pathlib import Path


def save_trained(trainer, tokenizer, out_dir: Path) -> None:
    """Model weights (safetensors) and tokenizer of `trainer` into `out_dir`, loadable by
    `AutoModelForCausalLM.from_pretrained` and vLLM. Every process calls it (under FSDP `save_model`
    gathers the shards); the first process writes."""
    from r1flow.models.train.lora import is_peft

    main = trainer.is_world_process_zero()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if is_peft(trainer.model):  # LoRA: the merged model, an ordinary checkpoint (models/train/lora.py)
        if main:  # LoRA runs on one process or under DDP (every process holds the whole model)
            trainer.model.merge_and_unload().save_pretrained(str(out_dir), safe_serialization=True)
    elif trainer.is_fsdp_enabled:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(trainer.model_wrapped, options=StateDictOptions(full_state_dict=True,
                                                                                     cpu_offload=True))
        if main:
            trainer.model.save_pretrained(str(out_dir), state_dict=state, safe_serialization=True)
    else:
        trainer.save_model(str(out_dir))
    if main:
        tokenizer.save_pretrained(str(out_dir))
        (out_dir / "training_args.bin").unlink(missing_ok=True)


def last_checkpoint(trainer_dir: Path) -> str | None:
    """The newest checkpoint a TRL/transformers trainer can resume from in `trainer_dir`, or None.
    transformers' `get_last_checkpoint` takes the highest-numbered `checkpoint-N` folder even when a
    kill cut its writing short, and resuming from it then fails on a missing file; `Trainer._save_checkpoint`
    writes `trainer_state.json` after the weights, optimizer, scheduler and RNG states, so a folder
    without it is unfinished and skipped here."""
    import re

    if not trainer_dir.is_dir():
        return None
    done = [p for p in trainer_dir.iterdir()
            if re.fullmatch(r"checkpoint-\d+", p.name) and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[1]))) if done else None
