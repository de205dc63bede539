# Stand-in for python:<version>-slim-bookworm (the base of docker/smoke.Dockerfile and
# docker/sync.Dockerfile) where no registry can be reached: Debian 12 from debootstrap with its
# own Python 3.11 and pip. Like the official image it has `python` and `pip` on PATH and installs
# packages system-wide (under /usr/local); it is not the official image's own build of CPython.
# Built by tests/docker/standin/build.sh, which passes ROOTFS_IMAGE.
ARG ROOTFS_IMAGE
FROM ${ROOTFS_IMAGE}

# `docker import` keeps no environment: the official image's PATH and locale.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8

# pip may install beside Debian's packages, as it does in the official image (PEP 668 is for
# machines shared with the distribution's own Python programs; this image has none).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python-is-python3 \
      ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /usr/lib/python3.*/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip

CMD ["python3"]
