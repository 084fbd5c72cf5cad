"""Training loops: pretraining (pretrain.py), SFT (sft.py), GRPO (grpo.py), the reward model
(reward_model.py), the distillation stage's configs (distill.py) and the checkpoint writer they
share (checkpoint.py). Rollouts come from models/rollout/; nothing here is Prefect."""
