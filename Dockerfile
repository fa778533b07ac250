# memstream: one image for `memstream worker`, `memstream serve` and the one-shot init.
#   docker build -t memstream:local .
#   docker build -t memstream:local --build-arg EMBEDDING_MODELS="sentence-transformers/all-mpnet-base-v2" .
# The default models (all-MiniLM-L6-v2, whisper tiny.en) ship inside Python packages the
# project depends on, so they are always in the image. Other models are either baked in at
# build time (EMBEDDING_MODELS, WHISPER_MODELS: names, space-separated; needs the model hub
# at build time) or mounted read-only at run time and named by path
# (MEMSTREAM_EMBEDDING_MODEL=/models/<dir>).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# CPU-only torch: the default PyPI torch wheel carries CUDA (several GB more).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EMBEDDING_MODELS=""
ARG WHISPER_MODELS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/memstream/venv/bin:$PATH \
    HF_HOME=/opt/memstream/models/hf \
    MEMSTREAM_STATE_DIR=/var/lib/memstream \
    MEMSTREAM_CACHE_DIR=/var/lib/memstream/cache

RUN groupadd --system --gid 10001 memstream \
 && useradd --system --uid 10001 --gid memstream --home-dir /var/lib/memstream --no-create-home memstream \
 && mkdir -p /opt/memstream/app /opt/memstream/models /var/lib/memstream \
 && chown memstream:memstream /var/lib/memstream \
 && python -m venv /opt/memstream/venv

WORKDIR /opt/memstream/app
# Dependencies first (a layer that survives code changes): the package folders are stubs here.
COPY pyproject.toml README.md ./
RUN mkdir -p streams agents && touch streams/__init__.py agents/__init__.py \
 && pip install --extra-index-url "${TORCH_INDEX_URL}" -e . \
 && rm -rf streams agents
# The source tree itself: schemas/ is read from beside streams/, so the install is editable.
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas

RUN for m in ${EMBEDDING_MODELS}; do \
      python -c "import sys; from sentence_transformers import SentenceTransformer; SentenceTransformer(sys.argv[1])" "$m"; \
    done \
 && for m in ${WHISPER_MODELS}; do \
      python -c "import sys; from faster_whisper import download_model; download_model(sys.argv[1], output_dir='/opt/memstream/models/whisper/' + sys.argv[1])" "$m"; \
    done \
 && python -c "import streams.cli, agents.memorize" \
 && chown -R memstream:memstream /opt/memstream/models

USER memstream
VOLUME ["/var/lib/memstream"]
EXPOSE 8080 9464

# The read service's liveness. The worker has no HTTP API: compose overrides this with a
# probe of its /metrics (served only once topics exist and its models are loaded).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MEMSTREAM_SERVE_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["memstream"]
CMD ["serve"]
