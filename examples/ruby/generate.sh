#!/bin/sh
# Generate the Ruby message and service classes for proto/verdict into OUT_DIR (default
# examples/ruby/gen, git-ignored) with Debian's grpc_tools_ruby_protoc (package ruby-grpc-tools).
# Stubs are never committed: generated from proto/ right before use, they cannot drift from it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen}
mkdir -p "$out"
cd "$root/proto"
# google/rpc/status.proto (imported for per-item batch errors) is vendored in vendor/proto (shared with the buf gate);
# its Ruby classes come from the googleapis-common-protos-types gem that ruby-grpc depends on.
grpc_tools_ruby_protoc -I . -I "$root/vendor/proto" \
  --ruby_out="$out" --grpc_out="$out" $(find verdict -name '*.proto' | sort)
