"""Security tooling: certificates for mutual TLS (:mod:`clusterfunk.security.certs`)."""
