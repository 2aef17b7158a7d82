# One image, two entry points: `ocsp-stapler operator` (the default) and `ocsp-stapler ingress`.
# Built in two stages: a wheel of the package and of its dependencies, then a slim runtime
# that installs them exactly as the README does (pip install), and runs as a non-root user.

FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="ocsp-stapler" \
      org.opencontainers.image.description="Verified OCSP staples for Kubernetes TLS Secrets, and an ingress that serves them" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "ocsp-stapler==0.1.0" \
    && rm -rf /wheels \
    && groupadd --gid 10001 ocsp \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin ocsp
USER 10001:10001
EXPOSE 8443 8080 9090 10254
ENTRYPOINT ["ocsp-stapler"]
CMD ["operator"]
