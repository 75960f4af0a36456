# Portcullis: multi-stage build, non-root runtime, data on a volume.
#   docker build -t portcullis .
#   docker run -p 8883:8883 -p 8080:8080 -v portcullis-data:/var/lib/portcullis portcullis
# The admin API listens on 0.0.0.0 inside the container so the port can be published; publish it
# only where operators reach it (e.g. -p 127.0.0.1:8080:8080).

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so that source changes rebuild only the crate. The patched rumqttd
# (vendor/) is one of them; .cargo/config.toml sets jemalloc's build-time options.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY vendor ./vendor
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && printf 'fn main() {}\n' > benches/packet_path.rs \
    && cargo build --release --locked --bin portcullis || true
COPY config ./config
# The web console's files are built into the binary (include_str! in src/admin/console.rs).
COPY console ./console
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin portcullis

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/portcullis --shell /usr/sbin/nologin portcullis \
    && mkdir -p /var/lib/portcullis \
    && chown portcullis:portcullis /var/lib/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER portcullis
WORKDIR /var/lib/portcullis
ENV PORTCULLIS__STORE__DATA_DIR=/var/lib/portcullis \
    PORTCULLIS__ADMIN__LISTEN=0.0.0.0:8080 \
    PORTCULLIS__MQTTS__LISTEN=0.0.0.0:8883
VOLUME ["/var/lib/portcullis"]
EXPOSE 8883 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
