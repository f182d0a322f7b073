FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY ioc ioc
COPY streams streams
COPY detectors detectors
COPY sensors_sim sensors_sim
COPY dashboards dashboards
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system ioc
USER ioc
ENTRYPOINT []
CMD ["ioc", "--help"]
