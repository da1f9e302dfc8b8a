"""The local stack behind `make run` and the stack tests: TLS, credentials, the Nginx config and processes."""
