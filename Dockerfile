# One Dockerfile, two images:
#   docker build --target api     -t scratchnet-api .      # the Gunicorn service (default target)
#   docker build --target trainer -t scratchnet-trainer .  # the batch trainer (python -m trainer)
# Each gets its own virtual environment, built in a builder stage and copied into a clean
# runtime stage, so the api image carries neither the trainer's extras (matplotlib, tqdm) nor
# pip's caches. Where no image can be pulled, build on a local base:
#   docker build --build-arg PYTHON_IMAGE=local/python-base:bookworm .
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# uid 1000 is the usual first user on a Linux host, so files the containers write into the
# bind-mounted registry belong to that user; docker-compose.yml lets the uid be changed.
RUN groupadd --gid 1000 scratchnet \
 && useradd --uid 1000 --gid 1000 --home-dir /home/scratchnet --create-home \
            --shell /usr/sbin/nologin scratchnet

# Builders: dependencies first (a layer that only changes with pyproject.toml), then the code.
FROM base AS build-api
WORKDIR /src
COPY pyproject.toml docker/requirements.py ./
RUN python3 -m venv /opt/venv \
 && python requirements.py pyproject.toml service > requirements.txt \
 && pip install -r requirements.txt
COPY pyproject.toml README* ./
COPY shared ./shared
COPY service ./service
COPY trainer ./trainer
RUN pip install --no-deps . && rm -rf build *.egg-info

FROM base AS build-trainer
WORKDIR /src
COPY pyproject.toml docker/requirements.py ./
RUN python3 -m venv /opt/venv \
 && python requirements.py pyproject.toml trainer > requirements.txt \
 && pip install -r requirements.txt
COPY pyproject.toml README* ./
COPY shared ./shared
COPY service ./service
COPY trainer ./trainer
RUN pip install --no-deps . && rm -rf build *.egg-info

# The trainer: `docker run ... scratchnet-trainer train --dataset mnist --publish`.
FROM base AS trainer
COPY --from=build-trainer /opt/venv /opt/venv
# /cache becomes a named volume; Docker copies this folder's mode into a new volume, so any
# uid the container runs as can fill it.
RUN mkdir -p /models /cache && chmod 1777 /models /cache
ENV SCRATCHNET_REGISTRY=/models \
    SCRATCHNET_CACHE=/cache \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /home/scratchnet
USER scratchnet
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["--help"]

# The service (last stage, so a plain `docker build .` gives this one).
FROM base AS api
COPY --from=build-api /opt/venv /opt/venv
# The committed baseline models are baked in, so the image alone serves them; compose mounts
# the host's registry over /models so newly published versions appear without a rebuild.
COPY --chown=scratchnet:scratchnet models /models
ENV SCRATCHNET_REGISTRY=/models \
    SCRATCHNET_BIND=0.0.0.0:8000 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1
WORKDIR /home/scratchnet
USER scratchnet
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SCRATCHNET_BIND', '0.0.0.0:8000').rsplit(':', 1)[1]; urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=2)"]
ENTRYPOINT ["gunicorn", "--config", "python:service.gunicorn_conf"]
CMD ["service.app:create_app()"]
