# The operator's image: one statically linked binary (musl) and nothing else. No shell, no libc, no
# CA bundle: in a cluster the client trusts the service account's CA, and the binary needs no file
# from a base image (CI runs it in an empty root as this user to prove it).
#
# Build the binary first (the image build only copies it, so it needs no toolchain):
#   cargo build --release --locked --target x86_64-unknown-linux-musl -p pssession-operator
FROM scratch
COPY target/x86_64-unknown-linux-musl/release/pssession-operator /pssession-operator
# A numeric non-root user, so `runAsNonRoot` can be checked without an /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/pssession-operator"]
CMD ["run"]
