# Verdict's container image (docs/deployment.md, "Container image").
#   docker build -t verdict .
#   docker run --read-only --tmpfs /tmp -p 50051:50051 \
#     -v "$PWD/policies:/etc/verdict/policies:ro" verdict
# tests/integration/test_container_layout.py builds the same layout without Docker and serves
# from it; tests/unit/test_dockerfile.py checks the flags and ports below against the code.

# glibc, not Alpine: cedarpy ships no musl wheels. Both stages use the same image, so the venv
# built in the first one finds its interpreter at the same path in the second.
FROM python:3.11-slim-bookworm AS builder

WORKDIR /build
COPY constraints.txt pyproject.toml README.md ./
COPY src/ src/
# The venv lives where it will run: its scripts name their interpreter by absolute path.
# Dependencies come at the exact versions of constraints.txt; `pip check` fails the build if
# the wheel needs anything that list does not satisfy.
RUN python -m venv /opt/verdict \
 && /opt/verdict/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /build/wheels . \
 && /opt/verdict/bin/pip install --no-cache-dir --constraint constraints.txt /build/wheels/verdict-*.whl \
 && /opt/verdict/bin/pip check

FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="verdict" \
      org.opencontainers.image.description="Verdict: a Cedar policy decision point served over gRPC" \
      org.opencontainers.image.version="0.1.0"

# A fixed numeric uid, so that runAsNonRoot can verify it; /etc/verdict/policies stays empty
# (and root-owned): policies are mounted there, and without them `serve` refuses to start.
RUN groupadd --system --gid 10001 verdict \
 && useradd --system --no-log-init --uid 10001 --gid 10001 \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin verdict \
 && mkdir -p /etc/verdict/policies

COPY --from=builder /opt/verdict /opt/verdict

# Read-only root filesystem: bytecode was compiled at install time and is never written at run
# time; the only thing the server writes is the metrics folder of several workers, under TMPDIR
# (mount /tmp as tmpfs or emptyDir). A file audit sink needs a volume and VERDICT_AUDIT_FILE.
ENV PATH=/opt/verdict/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    VERDICT_STORES=/etc/verdict/policies \
    VERDICT_LOG_FORMAT=json

USER 10001:10001

# 50051 gRPC, 50052 plaintext grpc.health.v1 (probes; it stays plaintext when TLS is on),
# 9090 Prometheus /metrics.
EXPOSE 50051 50052 9090

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["verdict", "healthcheck", "--server", "127.0.0.1:50052"]

ENTRYPOINT ["verdict"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--health-listen", "0.0.0.0:50052", "--metrics-listen", "0.0.0.0:9090"]
