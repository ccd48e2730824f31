# nginx in front of `api` replicas (docker/compose.scale.yml). Built from the same base image
# as the service, with Debian's nginx, so nothing but that base has to be available.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && rm -f /etc/nginx/sites-enabled/default
COPY docker/nginx.conf /etc/nginx/nginx.conf
# Request bodies and responses nginx buffers to files go here, a volume (docker/compose.scale.yml):
# on the tmpfs at /tmp they would be memory, and a few large uploads at once exceed the
# container's memory limit. A new volume takes this folder's owner.
RUN mkdir -p /var/cache/scratchnet-lb && chown www-data:www-data /var/cache/scratchnet-lb
USER www-data
EXPOSE 8080
# SIGQUIT is nginx's graceful stop: requests under way finish first. SIGTERM, Docker's default,
# makes nginx drop them at once, so `docker compose stop` or `down` would cut them off.
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5s --timeout=3s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/lb-healthz', timeout=2)"]
ENTRYPOINT ["nginx", "-e", "stderr", "-g", "daemon off;"]
