"""Architectures and precision: the DeepSeek-V3-style MoE (deepseek_v3/), the dense Llama/Qwen2-style
students (dense.py), FP8 training numerics (fp8.py) and the tokenizer (tokenizer.py). No training
loop and no sampling here."""
