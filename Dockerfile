# One image for the four services; compose picks the service with SERVICE.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY clients ./clients
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --uid 10001 mycepa
USER mycepa
ENV SERVICE=gateway GATEWAY_BIND=0.0.0.0:8000
CMD ["sh", "-c", "exec python -m shared.run --config config/nameko.yaml services.${SERVICE}.service"]
