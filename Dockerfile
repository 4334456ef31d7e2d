# vm-system server image: slim Python, the package installed, SQLite data in a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VM_SYSTEM_DB=/data/vm-system.db \
    VM_SYSTEM_CACHE_DIR=/data/libraries

# bubblewrap: the box `exec` runs in, when the operator allows it (it needs user namespaces).
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY static ./static
COPY templates ./templates
# Editable install keeps the top-level static/ and templates/ next to the package.
RUN pip install --no-cache-dir -e . \
    && useradd --create-home --uid 10001 vm \
    && mkdir -p /data && chown vm /data

USER vm
VOLUME ["/data"]
EXPOSE 3210
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3210/api/v1/health').status != 200)"
CMD ["vm-system", "serve", "--listen", "0.0.0.0:3210"]
