# The one image for every ioc service in docker-compose.yml: migrate, bridge, worker, sim, report.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY ioc ioc
COPY streams streams
COPY detectors detectors
COPY sensors_sim sensors_sim
COPY dashboards dashboards
# Versions come from constraints.txt, the set the test suite proves (Faust/aiokafka internals included).
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /var/lib/ioc --create-home ioc

# A numeric user, so the orchestrator can check it is not root; /var/lib/ioc is IOC_DATA_DIR.
USER 10001
WORKDIR /var/lib/ioc
CMD ["ioc", "--help"]
