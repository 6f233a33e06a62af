# incident-lab (the harness and the reference service, one binary) for users with a registry:
# a multi-stage build from the public Rust and Debian images. On a machine without a registry,
# `scripts/build-images --service` builds the same image FROM scratch from local files.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin incident-lab

FROM debian:bookworm-slim
RUN useradd --uid 1000 --home-dir /app --create-home lab && mkdir /reports && chown lab /reports
COPY --from=build /src/target/release/incident-lab /usr/local/bin/incident-lab
COPY scenarios /app/scenarios
WORKDIR /app
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/incident-lab"]
CMD ["--help"]
