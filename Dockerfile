# tweetalike: a slim CPU image. Models and the database live on the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_PATH=/data/bot.db \
    MODELS_DIR=/data/models \
    HF_HOME=/data/hf-cache

WORKDIR /app

# CPU-only torch first: the default PyPI wheel would pull several GB of CUDA libraries.
# A GPU training worker builds with TORCH_INDEX=https://download.pytorch.org/whl/cu126 (compose's
# worker-gpu); SCALE=1 adds PostgreSQL and the job queue (docs/scaling.md).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG SCALE=0
COPY requirements.txt requirements-scale.txt ./
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
    && pip install -r requirements.txt \
    && if [ "${SCALE}" = 1 ]; then pip install -r requirements-scale.txt; fi

COPY bot ./bot

RUN useradd --create-home --uid 10001 tweetalike \
    && mkdir -p /data \
    && chown tweetalike:tweetalike /data
USER 10001:10001
VOLUME ["/data"]

# The bot touches a heartbeat file while its gateway connection is alive.
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "bot.health"]

CMD ["python", "-m", "bot"]
