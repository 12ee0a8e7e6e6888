# NATS server image for the Lapwing cluster deployment: Debian's
# nats-server (dynamically linked) on an empty base, with exactly the shared
# libraries `ldd` lists and the program interpreter. Nothing is pulled from
# a registry.
#
# Do not build this file by hand: deploy/cluster/build-nats-image stages the
# build context it expects:
#
#   rootfs/usr/sbin/nats-server       the host's binary
#   rootfs/lib/..., rootfs/lib64/...  the libraries ldd lists and the loader,
#                                     at the paths the binary asks for
#   rootfs/etc/passwd, group          the non-root user nats (10002)
#   rootfs/etc/nsswitch.conf          hosts: files dns
#   rootfs/etc/nats/nats.conf         deploy/cluster/nats.conf
#   rootfs/data/                      the JetStream store's mount point
FROM scratch

ARG NATS_VERSION=unknown
ARG INPUTS=unknown
LABEL org.opencontainers.image.title="lapwing-nats" \
      org.opencontainers.image.description="nats-server (from the build host) for Lapwing's JetStream backbone" \
      org.opencontainers.image.version="${NATS_VERSION}" \
      lapwing.nats.inputs="${INPUTS}"

COPY rootfs/ /
# The store's mount point, owned by the user: a named volume mounted on it
# starts as a copy of it, owner included, so the server writes without root.
COPY --chown=10002:10002 data/ /data/

USER 10002:10002
WORKDIR /data
VOLUME ["/data"]
# 4222 clients, 6222 routes, 8222 monitoring (HTTP).
EXPOSE 4222/tcp 6222/tcp 8222/tcp
# SIGTERM: NATS closes its clients and routes, flushes the store, exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/sbin/nats-server"]
CMD ["--config", "/etc/nats/nats.conf"]
