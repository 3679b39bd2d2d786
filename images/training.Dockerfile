# Training image: the base (Python 3.11 + torch + numpy in /opt/venv) plus boto3 for s3://
# checkpoints and the workloads package. BASE_IMAGE is the content-hashed base tag, passed by
# runner/images.py, which also puts `wheels/` (boto3 and its dependencies) in the context.
ARG BASE_IMAGE

# Stage 1 installs the extra wheels into a folder of its own (the base venv is root-owned and
# the final stage must not copy the whole venv again: torch alone is ~800 MB).
FROM ${BASE_IMAGE} AS extra
# The label lets images.py delete this stage's image after the build (it holds the wheels).
LABEL runner.stage=build
USER root
COPY wheels /wheels
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links /wheels --target /opt/extra -r /wheels/requirements.txt

FROM ${BASE_IMAGE}
COPY --from=extra /opt/extra/ /opt/venv/lib/python3.11/site-packages/
COPY workloads /app/workloads
# Checkpoints default to file:///app/checkpoints; the runner sets RUNNER_CHECKPOINT_URI to a
# bind-mounted folder (writable by uid 1000) or to s3://.
CMD ["python", "-m", "workloads.training"]
