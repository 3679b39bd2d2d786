# Gaming image: the base plus the session's server stack (PyAV with libx264, simplejpeg,
# Starlette, uvicorn, websockets) and the workloads package. BASE_IMAGE is the content-hashed base tag, passed
# by runner/images.py, which also puts `wheels/` (the .whl files + requirements.txt) here.
ARG BASE_IMAGE

# Stage 1 installs from the wheelhouse into the base's venv, then copies only the packages
# that install added (numpy, already in the base, is not copied twice) into /deps, so that
# neither the wheels nor a second copy of the venv end up in the image. Offline: --no-index.
FROM ${BASE_IMAGE} AS deps
LABEL runner.stage=build
USER root
COPY wheels /wheels
RUN pip freeze --all > /tmp/before \
 && pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /wheels \
        -r /wheels/requirements.txt \
 && pip freeze --all | grep -vxFf /tmp/before > /tmp/added \
 && pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /wheels \
        --no-deps --target /deps -r /tmp/added \
 && rm -rf /deps/bin

FROM ${BASE_IMAGE}
COPY --from=deps /deps /opt/venv/lib/python3.11/site-packages/
COPY workloads /app/workloads
ENV PORT=8000
EXPOSE 8000
CMD ["python", "-m", "workloads.gaming"]
