# Base image for every runner workload: Python 3.11 + a venv at /opt/venv with the wheels
# from the build context's wheelhouse. Built by runner/images.py, which puts `wheels/`
# (the .whl files + requirements.txt) next to this file in a temp build context.
#
# BASE is either a real python:3.11-slim (when a registry can be reached) or runner's
# debootstrapped Debian bookworm (python3 = 3.11 at /usr/bin/python3, python3-venv).
# Plain Dockerfile syntax only: the SDK drives the classic builder, no BuildKit mounts.
ARG BASE=python:3.11-slim

# Stage 1 installs from the wheelhouse; the final stage copies only the venv, so the
# ~200 MB of .whl files (a COPY layer) never end up in the image. Offline: --no-index.
FROM ${BASE} AS venv
# The label lets images.py delete this stage's image after the build (it holds the wheels).
LABEL runner.stage=build
COPY wheels /wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels -r /wheels/requirements.txt \
 && rm -rf /wheels

FROM ${BASE}
# PATH is spelled out: a `docker import`ed rootfs may carry no PATH for $PATH to extend.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8
COPY --from=venv /opt/venv /opt/venv
# uid 1000 so files written to bind mounts belong to the usual first host user.
RUN useradd --uid 1000 --user-group --create-home --shell /bin/bash runner \
 && mkdir -p /app && chown runner:runner /app
WORKDIR /app
USER runner
