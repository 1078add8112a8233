# The code location's image: it serves the definitions to the webserver and the daemon, and the
# run launchers start each run in it. sqlgym_assets_tests/test_production_install.py does what
# this file does (its COPY lines, install and CMD, read from here) in a fresh virtualenv.
FROM python:3.11-slim

# Extras of the production install: `--build-arg EXTRAS=k8s` for the image of a Helm deployment,
# whose run pods use this image and so need dagster-k8s. ECS needs none: its run launcher is in
# dagster-aws. Never demo or test: their packages have no place in production.
ARG EXTRAS=""

ENV PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

# Runs are not root: a step that reads a database and writes to a bucket needs no privilege.
RUN useradd --create-home --uid 10001 --user-group dagster

# Built from a directory of its own, not the working directory: Dagster puts the working
# directory on sys.path, where a source tree would shadow the installed package.
WORKDIR /opt/dagster/build
COPY pyproject.toml README.md ./
COPY sqlgym_assets/ sqlgym_assets/
# Not editable: the package as the wheel holds it, without sqlgym_assets.demo (pyproject.toml
# excludes it). No pip cache: it would only make the image bigger.
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"

# The production instance (runs, events and ticks in PostgreSQL, from the DAGSTER_PG_* variables).
# The directory is the user's: steps' captured logs go under it.
COPY deploy/dagster.yaml $DAGSTER_HOME/dagster.yaml
# The same instance with the EcsRunLauncher: on ECS, the webserver's and the daemon's tasks set
# DAGSTER_HOME=/opt/dagster/ecs_home; the run tasks keep the default (deploy/ecs/README.md).
COPY deploy/ecs/dagster.yaml /opt/dagster/ecs_home/dagster.yaml
RUN chown dagster:dagster $DAGSTER_HOME /opt/dagster/ecs_home
WORKDIR $DAGSTER_HOME
# By number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 10001

EXPOSE 4000

# `dagster code-server start` rather than `dagster api grpc`: it serves the definitions from a
# `dagster api grpc` subprocess, so "Reload" in the UI reloads the code without restarting the
# container, and code that fails to load is shown in the UI instead of the container restarting
# in a loop. It stops cleanly on SIGTERM, as ECS and Kubernetes stop containers. Probe:
# `dagster api grpc-health-check -p 4000`. Set DAGSTER_CURRENT_IMAGE to this image's tag on the
# code server's container, so the launchers start runs in this image.
# A CMD and no ENTRYPOINT: the EcsRunLauncher and the K8sRunLauncher replace the command with
# `dagster api execute_run ...`, which then runs as it is, in this image.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "sqlgym_assets.definitions"]
