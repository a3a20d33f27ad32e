"""Where runs execute and how their events flow (in-process or Celery workers on Redis)."""
