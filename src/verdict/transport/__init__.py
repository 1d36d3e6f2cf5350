"""The gRPC edge: protobuf conversion, status mapping, servicers and the server."""
