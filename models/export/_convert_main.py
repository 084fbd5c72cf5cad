"""Run llama.cpp's convert_hf_to_gguf.py with one change: where its vocabulary-hash lookup of the BPE
pre-tokenizer fails, use the name r1flow read from the tokenizer's definition (gguf.py: pre_tokenizer).

    python -m r1flow.models.export._convert_main LLAMA_CPP_DIR PRE_NAME MODEL_DIR [converter options...]

A separate process: the converter puts its own gguf-py first on sys.path and configures logging.
"""

from __future__ import annotations

import sys


def main() -> None:
    conv_dir, pre, *args = sys.argv[1:]
    sys.path[:0] = [conv_dir, f"{conv_dir}/gguf-py"]
    from conversion import base

    by_hash = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return by_hash(self, tokenizer)
        except NotImplementedError:  # a vocabulary the converter has not seen: the definition decides
            return pre

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", *args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
