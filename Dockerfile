# IDWall gateway: slim, non-root. Mount the config and certs as volumes:
#   docker run -v $PWD/idwall.yaml:/etc/idwall/idwall.yaml:ro -v $PWD/certs:/etc/idwall/certs:ro \
#              -v idwall-data:/var/lib/idwall -p 8443:8443 idwall
FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /var/lib/idwall --create-home idwall
WORKDIR /opt/idwall
COPY pyproject.toml README.md ./
COPY idwall ./idwall
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER idwall
VOLUME ["/etc/idwall", "/var/lib/idwall"]
ENV IDWALL_CONFIG=/etc/idwall/idwall.yaml
EXPOSE 8443
STOPSIGNAL SIGTERM
ENTRYPOINT ["idwall"]
CMD ["serve"]
