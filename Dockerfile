# The control plane image (native Triton backends live in the NGC Triton image, not here).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini constraints.txt ./
COPY control_plane ./control_plane
COPY migrations ./migrations
# The lock (constraints.txt) pins every version, as scripts/serve and scripts/test install them.
RUN pip install --no-cache-dir -c constraints.txt -e . "torch==2.13.0" \
        --extra-index-url https://download.pytorch.org/whl/cpu
# HTTP and the gRPC proxy both bind CP_HTTP_HOST (or serve --host).
ENV CP_HTTP_HOST=0.0.0.0
EXPOSE 8080 8081
CMD ["sh", "-c", "control-plane db upgrade && control-plane serve"]
