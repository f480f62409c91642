# tweetalike: a slim CPU image. Models and the database live on the /data volume.
# BASE_IMAGE: any Debian-like image with Python 3.11 as `python` on PATH. Where no registry is
# reachable, .ci/image bootstraps one from Debian's packages (README, "Docker").
ARG BASE_IMAGE=python:3.11-slim

# -- build: the dependencies in a virtual environment, copied alone into the final image ---------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# CPU-only torch first: the default PyPI wheel would pull several GB of CUDA libraries.
# A GPU training worker builds with TORCH_INDEX=https://download.pytorch.org/whl/cu126 (compose's
# worker-gpu); SCALE=1 adds PostgreSQL and the job queue (docs/scaling.md).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/tweetalike
ENV PATH=/opt/tweetalike/bin:$PATH
COPY requirements.txt requirements-scale.txt /tmp/
# torch's C++ headers, its test suite and test binaries serve extension builds and torch's own
# tests, never the bot: about 190 MB less.
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
    && pip install -r /tmp/requirements.txt \
    && torch="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch" \
    && rm -rf "${torch}/include" "${torch}/test" "${torch}/share/cmake" \
        "${torch}"/bin/protoc* "${torch}"/bin/test_* "${torch}"/bin/*Test
# SCALE is declared after the shared layer above, so both images build on the same cached layer.
ARG SCALE=0
RUN if [ "${SCALE}" = 1 ]; then pip install -r /tmp/requirements-scale.txt; fi

# -- the image users run ----------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/tweetalike/bin:$PATH \
    DATABASE_PATH=/data/bot.db \
    MODELS_DIR=/data/models \
    HF_HOME=/data/hf-cache
COPY --from=build /opt/tweetalike /opt/tweetalike
WORKDIR /app
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
