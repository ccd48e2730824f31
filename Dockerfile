# One Dockerfile, two images:
#   docker build --target api     -t scratchnet-api .      # the Gunicorn service (default target)
#   docker build --target trainer -t scratchnet-trainer .  # the batch trainer (python -m trainer)
# Each gets its own virtual environment, built from the pins in pyproject.toml in a builder
# stage and copied into a clean runtime stage: no compilers, no pip caches, and the api image
# carries neither the trainer's extras (matplotlib, tqdm) nor the trainer's code. The code is
# copied in last, so editing it rebuilds small layers only. Where no image can be pulled,
# build on a local base:  docker build --build-arg PYTHON_IMAGE=local/python-base:bookworm .
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

# The pinned requirement lists, read from pyproject.toml. The builders copy in only these
# files, so a change elsewhere in pyproject.toml (another extra, a tool's settings) leaves
# their cached layers valid.
FROM base AS requirements
COPY pyproject.toml docker/venv.py /build/
RUN python /build/venv.py requirements /build/pyproject.toml service > /build/api.txt \
 && python /build/venv.py requirements /build/pyproject.toml trainer > /build/trainer.txt \
 && python /build/venv.py project /build/pyproject.toml > /build/project.txt

# Builders: a virtual environment per image; pip itself is removed from it once the pinned
# packages are in.
FROM base AS build-api
COPY docker/venv.py /build/
COPY --from=requirements /build/api.txt /build/project.txt /build/
RUN python3 -m venv /opt/venv \
 && pip install -r /build/api.txt \
 && python /build/venv.py link $(cat /build/project.txt) /opt/scratchnet \
 && pip uninstall --yes --quiet pip setuptools

FROM base AS build-trainer
COPY docker/venv.py /build/
COPY --from=requirements /build/trainer.txt /build/project.txt /build/
RUN python3 -m venv /opt/venv \
 && pip install -r /build/trainer.txt \
 && python /build/venv.py link $(cat /build/project.txt) /opt/scratchnet \
 && pip uninstall --yes --quiet pip setuptools

# The trainer: `docker run ... scratchnet-trainer train --dataset mnist --publish`.
FROM base AS trainer
COPY --from=build-trainer /opt/venv /opt/venv
# /cache and /runs become named volumes; Docker copies these folders' mode into a new volume, so
# any uid the container runs as can fill them.
RUN mkdir -p /models /cache /runs && chmod 1777 /models /cache /runs
COPY shared /opt/scratchnet/shared
COPY trainer /opt/scratchnet/trainer
RUN python -m compileall -q /opt/scratchnet
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
COPY shared /opt/scratchnet/shared
COPY service /opt/scratchnet/service
RUN python -m compileall -q /opt/scratchnet
ENV SCRATCHNET_REGISTRY=/models \
    SCRATCHNET_BIND=0.0.0.0:8000
WORKDIR /home/scratchnet
USER scratchnet
EXPOSE 8000
# GET /healthz on the first address of SCRATCHNET_BIND, read as Gunicorn reads it ([::1]:8140, unix:PATH ...).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
ENTRYPOINT ["gunicorn", "--config", "python:service.gunicorn_conf"]
CMD ["service.app:create_app()"]
