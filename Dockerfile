# TBD Agents image: the API (`tbd-agents serve`), Celery workers (`tbd-agents worker`), the
# scheduler (`tbd-agents scheduler`) and the Alembic migrations (`alembic upgrade head`, run from
# /app where alembic.ini is; the migrations themselves ship inside the package).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 tbd \
    && mkdir -p /data && chown tbd:tbd /data

COPY pyproject.toml README.md alembic.ini ./
COPY src ./src
COPY scripts ./scripts
RUN pip install . \
    && python -c "import tbd_agents.migrations, importlib.resources as r; \
assert any(p.name.endswith('.py') for p in (r.files('tbd_agents') / 'migrations' / 'versions').iterdir())"

USER tbd
ENV DATA_DIR=/data HOST=0.0.0.0
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["tbd-agents", "serve", "--host", "0.0.0.0", "--port", "8000"]
