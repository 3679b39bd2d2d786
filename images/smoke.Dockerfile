# Smoke image: the base plus the workloads package; proves Python + torch + math work.
# BASE_IMAGE is the content-hashed base tag, passed by runner/images.py.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY workloads /app/workloads
CMD ["python", "-m", "workloads.smoke"]
