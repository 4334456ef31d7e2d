# vm-system server image: the package built as a wheel and installed the ordinary way (not
# editable), SQLite data and the library cache in a volume.

# Stage 1: build the wheel (it carries static/ and templates/ as package data, see setup.py).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY server ./server
COPY static ./static
COPY templates ./templates
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# Stage 2: install that wheel (with its dependencies) into a clean image; no source tree.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VM_SYSTEM_DB=/data/vm-system.db \
    VM_SYSTEM_CACHE_DIR=/data/libraries

# bubblewrap: the box `exec` runs in, when the operator allows it (it needs user namespaces).
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /dist /tmp/dist
RUN pip install --no-cache-dir /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && useradd --create-home --uid 10001 vm \
    && mkdir -p /data && chown vm /data

USER vm
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3210
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3210/api/v1/health').status != 200)"
# Beyond loopback the server generates a token at start and logs the URL to open (docker logs);
# set VM_SYSTEM_TOKEN to choose it.
CMD ["vm-system", "serve", "--listen", "0.0.0.0:3210"]
