# jobbot itself: a slim, non-root image. Build: docker build -t jobbot:0.1.0 .
# The base is pinned to an exact tag; pin its digest too in your registry mirror.
FROM python:3.12.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY bot bot
COPY github_app github_app
COPY web web
COPY jobbot jobbot
RUN python -m venv /opt/jobbot && /opt/jobbot/bin/pip install .

FROM python:3.12.12-slim-bookworm
ENV PATH=/opt/jobbot/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    JOBBOT_DATA_DIR=/var/lib/jobbot JOBBOT_HOST=0.0.0.0
COPY --from=build /opt/jobbot /opt/jobbot
RUN groupadd --gid 10001 jobbot && useradd --uid 10001 --gid 10001 --no-create-home \
    --home-dir /var/lib/jobbot --shell /usr/sbin/nologin jobbot \
    && mkdir -p /var/lib/jobbot && chown jobbot:jobbot /var/lib/jobbot
USER 10001:10001
WORKDIR /var/lib/jobbot
EXPOSE 8080
ENTRYPOINT ["jobbot"]
CMD ["serve"]
