# memstream: one image for `memstream worker`, `memstream serve` and the one-shot init.
#   docker build -t memstream:local .
#   docker build -t memstream:local --build-arg EMBEDDING_MODEL="sentence-transformers/all-mpnet-base-v2" .
# Two stages. `models` installs torch (from the lock: PyPI's wheels carry CUDA, several GB)
# only to export the embedding model to ONNX; the runtime stage installs the worker and
# serve extras from the same lock, without torch, and embeds with onnxruntime. The runtime
# venv is ~630 MB against 6.3 GB with torch (docs/operations.md, "Image size").
# The default models (all-MiniLM-L6-v2, whisper tiny.en) ship inside Python packages. Other
# models are either baked in at build time (EMBEDDING_MODEL: a sentence-transformers name,
# WHISPER_MODELS: faster-whisper names, space-separated; both need the model hub at build
# time) or mounted read-only at run time and named by path (MEMSTREAM_EMBEDDING_MODEL=
# /models/<dir>, a folder written by `memstream models export-onnx`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.9

FROM ${PYTHON_IMAGE} AS models
ARG UV_VERSION
ARG EMBEDDING_MODEL=all-MiniLM-L6-v2
ARG WHISPER_MODELS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/export-venv HF_HOME=/opt/hf
RUN pip install "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-install-project --no-cache --extra worker --extra serve --extra torch
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
RUN mkdir -p /opt/models/whisper \
 && PYTHONPATH=/src /opt/export-venv/bin/python -m streams models export-onnx \
      --model "${EMBEDDING_MODEL}" --out /opt/models/embedding \
 && for m in ${WHISPER_MODELS}; do \
      /opt/export-venv/bin/python -c "import sys; from faster_whisper import download_model; download_model(sys.argv[1], output_dir='/opt/models/whisper/' + sys.argv[1])" "$m"; \
    done

FROM ${PYTHON_IMAGE}
ARG UV_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/memstream/venv \
    PATH=/opt/memstream/venv/bin:$PATH \
    MEMSTREAM_EMBEDDING_MODEL=/opt/memstream/models/embedding \
    MEMSTREAM_STATE_DIR=/var/lib/memstream \
    MEMSTREAM_CACHE_DIR=/var/lib/memstream/cache

WORKDIR /opt/memstream/app
# Dependencies first (a layer that survives code changes); uv itself does not stay.
COPY pyproject.toml uv.lock README.md ./
RUN groupadd --system --gid 10001 memstream \
 && useradd --system --uid 10001 --gid memstream --home-dir /var/lib/memstream --no-create-home memstream \
 && mkdir -p /var/lib/memstream && chown memstream:memstream /var/lib/memstream \
 && chmod 0700 /var/lib/memstream \
 && pip install "uv==${UV_VERSION}" \
 && uv sync --locked --no-install-project --no-cache --extra worker --extra serve --extra mcp \
 && pip uninstall -y uv
# The source tree itself: schemas/ is read from beside streams/, so the app runs from here.
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
COPY --from=models /opt/models /opt/memstream/models
ENV PYTHONPATH=/opt/memstream/app
RUN printf '#!/bin/sh\nexec python -m streams "$@"\n' > /opt/memstream/venv/bin/memstream \
 && chmod 0755 /opt/memstream/venv/bin/memstream \
 && python -c "import streams.ops.cli, agents.memorize, streams.service.http" \
 && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'nvidia', 'triton')))"

USER memstream
VOLUME ["/var/lib/memstream"]
EXPOSE 8080 9464

# The read service's liveness. The worker has no HTTP API: compose overrides this with a
# probe of its /metrics (served only once topics exist and its models are loaded).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MEMSTREAM_SERVE_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["memstream"]
CMD ["serve"]
