# The saga worker (worker.py): slim Python, non-root, runtime dependencies only.
FROM python:3.11.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRIP_DATA_DIR=/data/services

RUN useradd --create-home --uid 10001 saga && mkdir -p /data/services && chown saga /data/services
WORKDIR /app

# Runtime dependencies only (pyproject.toml's, the encryption extra's for
# TEMPORAL_SAGA_KEYS and the codec server, the barrier extra's for the services on
# PostgreSQL; not the dev extra), in their own layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['encryption'] + p['optional-dependencies']['barrier']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY temporal_saga/ temporal_saga/
COPY activities/ activities/
COPY workflows/ workflows/
COPY insurer/ insurer/
COPY worker.py starter.py ./
# The workflow sandbox imports the workflow modules afresh for every workflow run; with
# their bytecode compiled here it loads it, instead of compiling the source each time
# (the worker cannot write it: PYTHONDONTWRITEBYTECODE, and /app is root's).
RUN python -m compileall -q temporal_saga activities workflows insurer
ENV PYTHONPATH=/app

USER 10001
VOLUME ["/data/services"]
CMD ["python", "worker.py"]
